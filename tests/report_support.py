"""Runs and records shared by the report tests."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

from lib_pinning.cli import pin
from lib_pinning.search import SearchOptions

HOSTILE = "</script><img src=x onerror=alert(1)>"
SMALL = dict(batch=3, steps=4, prototypes=6, size=16, progress=False)


def small_search(**overrides) -> SearchOptions:
    return SearchOptions(**{"cma_seed": 1, "generations": 3, "lambda_": 4, "log": False, **overrides})


def small_run(folder, prompt=f"a red circle {HOSTILE}", **search_overrides):
    """A finished run of 3 generations of 4 individuals; its default prompt tries to break out of the HTML."""
    return pin(prompt, "dark", out=folder, search=small_search(**search_overrides), **SMALL)


@functools.cache
def shared_small_run() -> Path:
    """One small_run folder for every test module of this process; read it, never change it."""
    folder = Path(tempfile.mkdtemp(prefix="report-run-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    small_run(folder / "run")
    return folder / "run"


def synthetic_record(generations: int, per_generation: int, genes: int = 16, seed: int = 0) -> dict:
    """A run.json record of the engine's layout with made-up numbers, for sizes no quick test can render."""
    rng = np.random.default_rng(seed)
    words = [f"word{i}" for i in range(genes)]

    def prompt(weights):
        return " ".join(f"({word}:{1 + w:.4f})" for word, w in zip(words, weights))

    records = []
    for index in range(generations):
        individuals = []
        for number in range(per_generation):
            weights = rng.normal(0, 0.1, genes).tolist()
            individuals.append({"id": f"{index:04d}-{number:03d}", "weights": weights,
                                "loss": float(rng.uniform(0.2, 1.0)), "prompt": f"{HOSTILE} {prompt(weights)}",
                                "negative_prompt": "", "seconds_render": 0.5, "seconds_loss": 0.05,
                                "image_losses": rng.uniform(0, 1, 8).tolist(), "pair_losses": []})
        losses = [individual["loss"] for individual in individuals]
        cma = {"centroid": rng.normal(0, 0.1, genes).tolist(), "sigma": 0.05, "axis_ratio": 1.2,
               "scales": np.sort(rng.uniform(0.5, 2, genes)).tolist(), "stds": rng.uniform(0.01, 0.1, genes).tolist()}
        records.append({"index": index, "evaluations": per_generation, "best_loss": min(losses),
                        "mean_loss": float(np.mean(losses)), "sigma": 0.05, "cma": cma, "individuals": individuals})
    best = min((i for g in records for i in g["individuals"]), key=lambda i: i["loss"])
    return {"version": 1, "options": {"prompt": HOSTILE, "seeds": list(range(8)), "search": {"size_limit": 0.0}},
            "genome": {"words": words, "negative_words": [], "base_weights": [1.0] * genes, "frozen": []},
            "generations": records, "baseline": {"loss": 1.0, "prompt": prompt([0] * genes), "negative_prompt": ""},
            "best": {"loss": best["loss"], "prompt": best["prompt"], "negative_prompt": "", "weights": best["weights"],
                     "generation": int(best["id"][:4])},
            "status": "done"}
