"""What every per-individual file needs to know about its run, taken once from run.json's record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..recorder import infotext

# The options that say how an individual's images were made (those a run has; the WebUI adds its own).
RENDER_SETTINGS = ("sampler", "schedule", "steps", "cfg_scale", "size", "batch_size", "model", "model_seed",
                   "device")


def gene_labels(record: dict) -> list[str]:
    """One label per gene, in gene order: the positive prompt's words, then the negative prompt's, marked."""
    genome = record["genome"]
    return [*genome["words"], *(f"{word} (negative)" for word in genome["negative_words"])]


@dataclass(frozen=True)
class RunContext:
    run_dir: Path
    options: dict
    gene_names: tuple[str, ...]            # one per gene: its word, negative ones marked
    pairs: tuple[tuple[int, int], ...]     # what each pair loss compares: indices into targets ∪ batch

    @classmethod
    def from_record(cls, run_dir: Path, record: dict) -> "RunContext":
        pairs = (record.get("baseline") or {}).get("pairs", [])
        return cls(Path(run_dir), record["options"], tuple(gene_labels(record)), tuple(map(tuple, pairs)))

    @property
    def seeds(self) -> list[int]:
        return list(self.options["seeds"])

    @property
    def target_count(self) -> int:
        """Pair indices below it are targets (the objective lists targets first)."""
        highest = max((max(pair) for pair in self.pairs), default=len(self.seeds) - 1)
        return highest + 1 - len(self.seeds)

    def image_label(self, index: int) -> str:
        """What index `index` of targets ∪ batch is: "target 0" or "seed 12"."""
        targets = self.target_count
        return f"target {index}" if index < targets else f"seed {self.seeds[index - targets]}"

    def render_settings(self) -> dict:
        return {name: self.options[name] for name in RENDER_SETTINGS if name in self.options}

    def infotext(self, prompt: str, negative_prompt: str, seed: int) -> str:
        return infotext(prompt, negative_prompt, seed, self.options)
