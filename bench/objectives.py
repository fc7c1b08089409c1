"""Objectives benchmark (BENCHMARKS.md, "objectives"): where ꟻLIP alone goes wrong and the semantic loss or a mask
pins what was meant.

On the embedded model (16 prototypes, 64²), two cases, each over every prototype as the wanted one:

- lighting: three targets, each the wanted prototype under its own colour cast (a Gaussian offset of standard
  deviation `--cast` per colour channel, 8-bit): three pictures of one thing under different light. ꟻLIP compares
  colours, so the casts pull it towards other prototypes; the semantic distance compares what each picture is
  of (the prototype posterior). Objectives: ꟻLIP, semantic, both (weights 1 and 1).
- half: one target whose left half is the wanted prototype A and whose right half another prototype B (the next
  one); the mask keeps the left half. Objectives: ꟻLIP without the mask, with it.

Two measurements per case and objective:
1. ranking, no search: the loss of each prototype's own (noise-free) picture against the targets, "target" mode;
   how often the wanted prototype ranks first, and how often the distractor does (lighting: any other prototype;
   half: B).
2. pinning runs from the demo's prompt (batch 4, `--generations`, the default search), for `--wanted` prototypes
   (the prompt's 2nd, 3rd, ... most likely) × `--seeds` CMA seeds: the share of the pinned prompt's images that
   come from the wanted prototype and from the distractor (the nearest prototype of each image).

    .venv/bin/python bench/objectives.py [--wanted 4] [--seeds 2] [--generations 16] [--cast 0.4] [--write]
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import torch
from benchlib import append_section, machine
from PIL import Image

from lib_pinning.embedded import EmbeddedModel, EmbeddedRenderer, PrototypeEmbedder, to_8bit  # noqa: E402
from lib_pinning.embedded_run import DEMO_NEGATIVE, DEMO_PROMPT, pin  # noqa: E402
from lib_pinning.objective import Objective, Terms  # noqa: E402

BATCH, SEED = 4, 7
LIGHTING = {"ꟻLIP": {}, "semantic": {"flip_weight": 0.0, "semantic_weight": 1.0},
            "ꟻLIP + semantic": {"semantic_weight": 1.0}}
HALF = {"ꟻLIP, no mask": False, "ꟻLIP, mask": True}


def lit(model: EmbeddedModel, k: int, cast: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(k)
    offsets = cast * torch.randn(3, 3, 1, 1, generator=generator)
    return to_8bit((model.prototypes[k][None] + offsets).clamp(0, 1))


def half_and_half(model: EmbeddedModel, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    half = model.image_shape[-1] // 2
    target = model.prototypes[b].clone()
    target[:, :, :half] = model.prototypes[a][:, :, :half]
    mask = torch.zeros(model.image_shape[1:])
    mask[:, :half] = 1
    return target, mask


def ranking(model: EmbeddedModel, objective: Objective) -> np.ndarray:
    """The loss of each prototype's own picture (as a batch of one) against the objective's targets."""
    return np.array([objective.score(model.prototypes[j][None]).loss for j in range(len(model.prototypes))])


def shares(model: EmbeddedModel, result, wanted: int, distractors: set[int]) -> tuple[float, float]:
    renderer = EmbeddedRenderer(model, [SEED + i for i in range(BATCH)], steps=10)
    best = result.record.best
    found = model.nearest_prototype(renderer.render([(best.prompt, best.negative_prompt)])[0].images).tolist()
    return found.count(wanted) / BATCH, sum(k in distractors for k in found) / BATCH


def png(path: Path, pixels: torch.Tensor) -> str:
    array = (pixels.permute(1, 2, 0) if pixels.ndim == 3 else pixels).mul(255).round().byte().numpy()
    Image.fromarray(array).save(path)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wanted", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--generations", type=int, default=16)
    parser.add_argument("--cast", type=float, default=0.4)
    parser.add_argument("--write", action="store_true", help="append the tables to docs/BENCHMARKS.md")
    args = parser.parse_args()
    model = EmbeddedModel()
    count = len(model.prototypes)
    embedder = PrototypeEmbedder(model)
    order = model.log_prior(DEMO_PROMPT).argsort(descending=True).tolist()
    wanted = order[1:1 + args.wanted]  # not the prompt's favourite: the search has to move
    others = {k: set(range(count)) - {k} for k in range(count)}
    partner = {k: order[(order.index(k) + 1) % count] for k in range(count)}  # the half case's B

    ranked = {name: [0, 0] for name in [*LIGHTING, *HALF]}
    for k in range(count):
        for name, values in LIGHTING.items():
            terms = Terms(values.get("flip_weight", 1.0), values.get("semantic_weight", 0.0), embedder=embedder)
            first = int(np.argmin(ranking(model, Objective(lit(model, k, args.cast), "target", terms=terms))))
            ranked[name][0] += first == k
            ranked[name][1] += first != k
        target, mask = half_and_half(model, k, partner[k])
        for name, masked in HALF.items():
            objective = Objective(target[None], "target", masks=mask[None] if masked else ())
            first = int(np.argmin(ranking(model, objective)))
            ranked[name][0] += first == k
            ranked[name][1] += first == partner[k]
    print("ranked first", ranked, flush=True)

    pinned = {name: [0.0, 0.0, 0] for name in [*LIGHTING, *HALF]}
    common = dict(batch=BATCH, seed=SEED, generations=args.generations, progress=False, report=False, log=False)
    with tempfile.TemporaryDirectory() as folder:
        for k in wanted:
            target, mask = half_and_half(model, k, partner[k])
            target_file, mask_file = png(Path(folder) / f"{k}.png", target), png(Path(folder) / "mask.png", mask)
            for seed in range(args.seeds):
                for name, values in LIGHTING.items():
                    result = pin(DEMO_PROMPT, DEMO_NEGATIVE, target_images=lit(model, k, args.cast), cma_seed=seed,
                                 **values, **common)
                    _add(pinned[name], shares(model, result, k, others[k]))
                for name, masked in HALF.items():
                    result = pin(DEMO_PROMPT, DEMO_NEGATIVE, targets=[target_file], cma_seed=seed,
                                 masks=[mask_file] if masked else [], **common)
                    _add(pinned[name], shares(model, result, k, {partner[k]}))
            print("pinned", k, pinned, flush=True)

    runs = args.wanted * args.seeds
    lines = [f"### objectives — {date.today().isoformat()} — {machine()}",
             "",
             f"Embedded model (16 prototypes, 64²). Ranking: the loss (target mode) of each prototype's own picture "
             f"against the targets, for each of the 16 prototypes as the wanted one. Pinning: from the demo's "
             f"prompt, batch {BATCH}, at most {args.generations} generations (stopping rules on), each of the "
             f"prompt's {args.wanted} most likely prototypes after its favourite as the wanted one × {args.seeds} CMA seeds = {runs} "
             "runs per objective; the share of the pinned prompt's images (nearest prototype) that are the wanted "
             "prototype and that are a distractor.",
             "",
             f"Lighting: three targets, each the wanted prototype under its own colour cast (σ {args.cast:g} per "
             "channel); distractor: any other prototype.",
             "",
             "| objective | ranks the wanted first | ranks another first | pinned: all wanted | wanted images | "
             "other images |", "|---|---|---|---|---|---|"]
    lines += [_row(name, ranked[name], pinned[name], runs) for name in LIGHTING]
    lines += ["", "Half: one target, left half the wanted prototype A, right half the next one B (the prompt's next "
              "most likely); the mask keeps the left half; distractor: B.", "",
              "| objective | ranks A first | ranks B first | pinned: all A | A images | B images |",
              "|---|---|---|---|---|---|"]
    lines += [_row(name, ranked[name], pinned[name], runs) for name in HALF]
    table = "\n".join(lines)
    print(table)
    if args.write:
        append_section("## objectives", table)


def _add(total: list, found: tuple[float, float]) -> None:
    total[0] += found[0]
    total[1] += found[1]
    total[2] += found[0] == 1.0


def _row(name: str, ranked: list, pinned: list, runs: int) -> str:
    return (f"| {name} | {ranked[0]}/16 | {ranked[1]}/16 | {pinned[2]}/{runs} | {pinned[0] / runs:.0%} | "
            f"{pinned[1] / runs:.0%} |")


if __name__ == "__main__":
    main()
