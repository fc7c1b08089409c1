"""index.html: one static page with its CSS and script inlined and the run's data inlined once, as JSON.

It needs no network. User strings (prompts, options) reach the page only inside that JSON, with `<`, `>` and
`&` escaped so no text can close the script element, and the script puts them on screen with textContent.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import files

ASSETS = Path(__file__).parent / "assets"
PLOT_TITLES = {files.CMA_PLOT: "CMA-ES state per generation", files.HISTORY_PLOT: "Loss per evaluation",
               files.LOOSENESS_PLOT: "Which words are pinned", files.FRONT_PLOT: "Size limiter: loss vs distance"}
INDIVIDUAL_FIELDS = ("id", "loss", "prompt", "negative_prompt", "seconds_render", "seconds_loss")


def inline_json(data) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page_data(run_dir: Path, record: dict, plots: list[str], best_folder: str | None) -> dict:
    """What the page shows; individuals as rows of one shared column list, to keep thousands of them small."""
    return {
        "status": record.get("status"),
        "message": record.get("message"),
        "baseline": record.get("baseline") and {**_prompt_fields(record["baseline"]), "folder": files.BASELINE},
        "best": record.get("best") and {**_prompt_fields(record["best"]), "generation": record["best"]["generation"],
                                        "folder": best_folder, "images": files.BEST},
        "seeds": record["options"].get("seeds", []),
        "targets": sorted(path.name for path in (Path(run_dir) / files.TARGETS).glob("*.png")),
        "plots": [{"file": name, "title": PLOT_TITLES[name]} for name in plots],
        "generations": [{"index": generation["index"], "best_loss": generation["best_loss"],
                         "mean_loss": generation["mean_loss"], "sigma": generation["sigma"],
                         "evaluations": generation["evaluations"]} for generation in record["generations"]],
        "columns": ["generation", *INDIVIDUAL_FIELDS],
        "individuals": [[generation["index"], *(individual.get(name) for name in INDIVIDUAL_FIELDS)]
                        for generation in record["generations"] for individual in generation["individuals"]],
        "frozen": record.get("genome", {}).get("frozen", []),
        "options": record["options"],
    }


def _prompt_fields(entry: dict) -> dict:
    return {"prompt": entry["prompt"], "negative_prompt": entry["negative_prompt"], "loss": entry["loss"]}


def index_html(run_dir: Path, record: dict, plots: list[str], best_folder: str | None) -> str:
    page = (ASSETS / "index.html").read_text(encoding="utf-8")
    page = page.replace("/*CSS*/", (ASSETS / "report.css").read_text(encoding="utf-8"))
    page = page.replace("/*JS*/", (ASSETS / "report.js").read_text(encoding="utf-8"))
    before, after = page.split("/*DATA*/")  # the data goes in last, so nothing inside it is ever replaced
    return before + inline_json(page_data(run_dir, record, plots, best_folder)) + after
