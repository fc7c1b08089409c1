"""index.html: one static page with its CSS and script inlined and the run's data inlined once, as JSON.

It needs no network. User strings (prompts, options) reach the page only inside that JSON, with `<`, `>` and
`&` escaped so no text can close the script element, and the script puts them on screen with textContent. The
page's data uses the record's own field names (lib_pinning.record).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..chooser import MODE as CHOICE
from ..errors import InputError
from ..record import RunRecord
from ..winners import word_statistics
from . import files, weight_map

ASSETS = Path(__file__).parent / "assets"
PLOT_TITLES = {files.CMA_PLOT: "CMA-ES state per generation", files.HISTORY_PLOT: "Loss per evaluation",
               files.LOOSENESS_PLOT: "Which words are pinned", files.FRONT_PLOT: "Size limiter: loss vs distance",
               files.WEIGHT_MAP_PLOT: "Weight map: where the good weights lie, and the words they raise and lower",
               files.TAGS_PLOT: "Tags present per generation"}
INDIVIDUAL_FIELDS = ("folder", "id", "loss", "prompt", "negative_prompt", "seconds_render", "seconds_loss")
GENERATION_FIELDS = ("index", "best_loss", "mean_loss", "sigma", "evaluations")


def inline_json(data) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page_data(run_dir: Path, record: RunRecord, plots: list[str]) -> dict:
    """What the page shows; individuals as rows of one shared column list, to keep thousands of them small."""
    best = record.best and {**dataclasses.asdict(record.best), "images": files.BEST}
    best and best.pop("weights")
    return {
        "status": record.status,
        "ending": record.ending and dataclasses.asdict(record.ending),
        "prompt": record.prompt,
        "negative_prompt": record.negative_prompt,
        "baseline": record.baseline and {name: getattr(record.baseline, name)
                                         for name in ("loss", "prompt", "negative_prompt", "folder")},
        "best": best,
        "seeds": record.render.seeds,
        "targets": sorted((path.name for path in (Path(run_dir) / files.TARGETS).glob("*.png")), key=_target_order),
        "plots": [{"file": name, "title": PLOT_TITLES[name]} for name in plots],
        "plots_missing": [] if weight_map.installed() or not weight_map.enough_individuals(record) else
        [weight_map.missing_message()],
        "generations": [{name: getattr(generation, name) for name in GENERATION_FIELDS}
                        for generation in record.generations],
        "columns": ["generation", *INDIVIDUAL_FIELDS],
        "individuals": [[generation.index, *(getattr(individual, name) for name in INDIVIDUAL_FIELDS)]
                        for generation in record.generations for individual in generation.individuals],
        "frozen": record.genome.frozen,
        "winners": _winners(record),
        "notices": record.notices,
        "options": {**record.resolved, "render": dataclasses.asdict(record.render),
                    "objective": {"mode": record.objective.mode, "targets": record.objective.target_count,
                                  "tree": record.objective.tree}},
    }


def _winners(record: RunRecord) -> list[dict]:
    """A prompt evolution run's words, most over-represented among the chosen first (lib_pinning.winners)."""
    if record.objective.mode != CHOICE:
        return []
    try:
        statistics = word_statistics([record])
    except InputError:  # nothing chosen yet
        return []
    return [{**dataclasses.asdict(statistic), "interval": list(statistic.interval)} for statistic in statistics]


def _target_order(name: str) -> tuple:
    """target-0.png, mask-0.png, target-1.png, ...: each target beside its mask."""
    kind, _, number = name.removesuffix(".png").partition("-")
    return (int(number) if number.isdigit() else -1, kind != "target", name)


def index_html(run_dir: Path, record: RunRecord, plots: list[str]) -> str:
    page = (ASSETS / "index.html").read_text(encoding="utf-8")
    page = page.replace("/*CSS*/", (ASSETS / "report.css").read_text(encoding="utf-8"))
    page = page.replace("/*JS*/", (ASSETS / "report.js").read_text(encoding="utf-8"))
    before, after = page.split("/*DATA*/")  # the data goes in last, so nothing inside it is ever replaced
    return before + inline_json(page_data(run_dir, record, plots)) + after
