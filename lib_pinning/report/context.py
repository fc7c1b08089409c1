"""What every per-individual file needs to know about its run, taken once from its record."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from ..record import RunRecord


def gene_labels(record: RunRecord) -> list[str]:
    """One label per gene, in gene order: the positive prompt's words, then the negative prompt's, marked."""
    genome = record.genome
    return [*genome.words, *(f"{word} (negative)" for word in genome.negative_words)]


@dataclass(frozen=True)
class RunContext:
    run_dir: Path
    record: RunRecord                      # a copy taken when the run's first batch was scored

    @classmethod
    def from_record(cls, run_dir: Path, record: RunRecord) -> RunContext:
        return cls(Path(run_dir), copy.deepcopy(record))

    @property
    def seeds(self) -> list[int]:
        return self.record.render.seeds

    @property
    def gene_names(self) -> list[str]:
        return gene_labels(self.record)

    @property
    def pairs(self) -> list[list[int]]:
        """What each pair loss compares: indices into targets ∪ batch (targets first)."""
        return self.record.objective.pairs

    def image_label(self, index: int) -> str:
        """What index `index` of targets ∪ batch is: "target 0" or "seed 12"."""
        targets = self.record.objective.target_count
        return f"target {index}" if index < targets else f"seed {self.seeds[index - targets]}"

    def infotext(self, prompt: str, negative_prompt: str, seed: int) -> str:
        """A1111's PNG `parameters` text, so a saved image can be sent back to txt2img."""
        render = self.record.render
        lines = [prompt]
        if negative_prompt:
            lines.append(f"Negative prompt: {negative_prompt}")
        settings = {"Steps": render.steps, "Sampler": render.sampler, "Schedule type": render.schedule,
                    "CFG scale": render.cfg_scale, "Seed": seed, "Size": f"{render.width}x{render.height}",
                    "Model": render.model}
        lines.append(", ".join(f"{key}: {value}" for key, value in settings.items() if value is not None))
        return "\n".join(lines)
