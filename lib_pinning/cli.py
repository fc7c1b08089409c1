"""`python -m lib_pinning demo|pin|report`: pinning jobs on the embedded model, and their reports.

`pin(...)` and `demo(...)` are the Python entry points; the argparse commands map one flag to each argument.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from .embedded import EmbeddedModel, EmbeddedRenderer
from .engine import PinningJob, RunResult, prepare_run_dir, run_pinning
from .genome import GRANULARITIES, PromptError, build_genome
from .hyperbatch import WEIGHT_KINDS, HyperbatchWeights
from .objective import LOSS_MODES, Objective, TargetError, load_targets
from .report import ReportError, rebuild_report
from .samplers import SAMPLERS, SCHEDULES
from .search import WEIGHT_SCHEMES, SearchOptions

DEMO_PROMPT = "a quiet painting of round shapes, warm colours, soft light, simple"
DEMO_NEGATIVE = "noise, stripes"


class UsageError(ValueError):
    """Bad input found before any rendering; reported as one line."""


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available")
    return torch.device(name)


def pin(prompt: str, negative_prompt: str = "", *, out: str | Path | None = None,
        targets: Sequence[str | Path] = (), batch: int = 8, steps: int = 10, sampler: str = "DPM++ 2M",
        schedule: str = "Karras", cfg_scale: float = 3.0, seed: int = 0, loss_mode: str = "pairwise",
        granularity: str = "word", search: SearchOptions | None = None, prototypes: int = 16,
        size: int = 64, model_seed: int = 0, device: str = "cpu", progress: bool = True,
        target_images: torch.Tensor | None = None, fork_strength: float = 1.0, hyperbatch_weights: bool = True,
        hyperbatch_weight_type: str = "Geometric", hyperbatch_weight_scale: float = 1.0,
        hyperbatch_force: bool = False) -> RunResult:
    """Pin `prompt` on the embedded model. Every input is checked before anything is rendered or written."""
    if batch < 2:
        raise UsageError(f"batch size must be at least 2 (the loss compares images), got {batch}")
    if steps < 1:
        raise UsageError(f"steps must be at least 1, got {steps}")
    for name, value in (("CFG scale", cfg_scale), ("fork strength", fork_strength),
                        ("Hyperbatch weight scale", hyperbatch_weight_scale)):
        if not math.isfinite(value):
            raise UsageError(f"{name} must be a finite number, got {value}")
    if fork_strength < 0:
        raise UsageError(f"fork strength must be 0 or more, got {fork_strength}")
    torch_device = _device(device)
    genome = build_genome(prompt, negative_prompt, granularity)
    search = search or SearchOptions(cma_seed=seed)
    search.resolved(len(genome))  # validates the options now, not after the first render
    model = EmbeddedModel(count=prototypes, size=size, seed=model_seed, device=torch_device)
    renderer = EmbeddedRenderer(model, [seed + i for i in range(batch)], steps=steps, sampler=sampler,
                                schedule=schedule, cfg_scale=cfg_scale, fork_strength=fork_strength)
    loaded = target_images
    if targets:
        loaded, notices = load_targets(list(targets), (size, size))
        for notice in notices:
            print(f"notice: {notice}", file=sys.stderr)
    weighting = None
    if hyperbatch_weights:
        weighting = HyperbatchWeights(hyperbatch_weight_type, hyperbatch_weight_scale, steps, hyperbatch_force)
        weighting = weighting if weighting.applies_to(sampler) else None
    objective = Objective(loaded.to(torch_device) if loaded is not None else None, loss_mode, weighting)
    if genome.frozen:
        print(f"notice: passed through unchanged: {', '.join(genome.frozen)}", file=sys.stderr)
    run_dir = Path(out) if out is not None else None
    if run_dir is not None:
        prepare_run_dir(run_dir)
    record = {"prompt": prompt, "negative_prompt": negative_prompt, "targets": [str(t) for t in targets],
              "batch_size": batch, "steps": steps, "sampler": sampler, "schedule": schedule,
              "cfg_scale": cfg_scale, "fork_strength": fork_strength, "seed": seed, "granularity": granularity,
              "hyperbatch_weights": None if weighting is None else dataclasses.asdict(weighting),
              "model": "embedded", "prototypes": prototypes, "size": size, "model_seed": model_seed,
              "device": str(torch_device)}
    job = PinningJob(genome, renderer, objective, search, run_dir, record, progress=progress)
    return run_pinning(job)


def demo_target(model: EmbeddedModel, prompt: str, rank: int = 1) -> int:
    """A prototype of moderate prior under `prompt` (the `rank`-th most likely): reachable, but not given."""
    return int(model.log_prior(prompt).argsort(descending=True)[rank])


def demo(out: str | Path, generations: int | None = None, seed: int = 0, device: str = "cpu",
         progress: bool = True) -> RunResult:
    """Pin a deliberately off prompt to one of the embedded model's own prototypes."""
    model = EmbeddedModel(device=_device(device))
    target = model.prototypes[demo_target(model, DEMO_PROMPT)][None]
    search = SearchOptions(cma_seed=seed, generations=generations)
    return pin(DEMO_PROMPT, DEMO_NEGATIVE, out=out, seed=seed, search=search, device=device,
               progress=progress, target_images=target.cpu())


def _search_options(args: argparse.Namespace) -> SearchOptions:
    fields = {f.name for f in dataclasses.fields(SearchOptions)}
    values = {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}
    values.setdefault("cma_seed", args.seed)
    values["log"] = not args.quiet
    if args.cmatrix is not None:
        values["cmatrix"] = _matrix(args.cmatrix)
    return SearchOptions(**values)


def _matrix(text: str) -> list[list[float]]:
    """--cmatrix: a JSON list of rows, given inline or as the path of a .json file."""
    try:
        source = Path(text).read_text() if text.endswith(".json") else text
        matrix = json.loads(source)
        return [[float(value) for value in row] for row in matrix]
    except (OSError, ValueError, TypeError) as error:
        raise UsageError(f"--cmatrix must be a JSON list of rows (or a .json file holding one): {error}") from None


def _add_search_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("CMA-ES (defaults: the original extension's formulas)")
    group.add_argument("--cma-seed", dest="cma_seed", type=int, help="seed of the CMA sampling (default: --seed)")
    group.add_argument("--generations", type=int, help="number of generations (default 16*floor(ln N), >= 16)")
    group.add_argument("--sigma", type=float, help="initial population standard deviation (0.5; original 0.05)")
    group.add_argument("--init-radius", dest="init_radius", type=float,
                       help="initial centroid drawn uniformly within +-radius of the prompt (0; original 0.25)")
    group.add_argument("--lambda", dest="lambda_", type=int, help="children per generation (4 + 3 ln N)")
    group.add_argument("--mu", type=int, help="parents kept per generation (lambda / 2)")
    group.add_argument("--weights", choices=WEIGHT_SCHEMES, help="recombination weights (superlinear)")
    for name in ("cs", "damps", "ccum", "ccov1", "ccovmu"):
        group.add_argument(f"--{name}", type=float, help=f"CMA-ES {name} (DEAP's formula)")
    group.add_argument("--size-limit", dest="size_limit", type=float,
                       help="> 0: multi-objective CMA-ES keeping genes within this distance of the prompt (0)")
    group.add_argument("--size-limit-error", dest="size_limit_error", type=float, help="tolerance (limit/100)")
    group.add_argument("--size-limit-weight", dest="size_limit_weight", type=float, help="penalty (limit*10)")
    group.add_argument("--cmatrix", help="initial covariance matrix, a JSON list of N rows or a .json file "
                       "(identity)")
    group.add_argument("--quiet", action="store_true", help="do not print the CMA logbook")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib_pinning", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo_parser = commands.add_parser("demo", help="pin the embedded model to one of its own prototypes")
    demo_parser.add_argument("--out", required=True, help="run folder to write")
    demo_parser.add_argument("--generations", type=int, help="number of generations")
    demo_parser.add_argument("--seed", type=int, default=0, help="image seed and CMA seed (0)")
    demo_parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")

    pin_parser = commands.add_parser("pin", help="pin a prompt on the embedded model")
    pin_parser.add_argument("--prompt", required=True)
    pin_parser.add_argument("--negative", default="", help="negative prompt")
    pin_parser.add_argument("--target", action="append", default=[], help="target image (repeatable); "
                            "none: the unperturbed prompt's first batch is the target")
    pin_parser.add_argument("--out", required=True, help="run folder to write")
    pin_parser.add_argument("--batch", type=int, default=8, help="images per individual (8)")
    pin_parser.add_argument("--steps", type=int, default=10, help="sampling steps (10)")
    pin_parser.add_argument("--sampler", choices=list(SAMPLERS), default="DPM++ 2M")
    pin_parser.add_argument("--schedule", choices=SCHEDULES, default="Karras")
    pin_parser.add_argument("--cfg-scale", dest="cfg_scale", type=float, default=3.0)
    pin_parser.add_argument("--fork-strength", dest="fork_strength", type=float, default=1.0,
                            help="Hyperbatch samplers: noise a fork gives each child, as the eta of one ancestral "
                                 "step (0: copies; 1: default)")
    pin_parser.add_argument("--no-hyperbatch-weights", dest="hyperbatch_weights", action="store_false",
                            help="Hyperbatch samplers: score with the plain loss, not level by level")
    pin_parser.add_argument("--hyperbatch-weight-type", dest="hyperbatch_weight_type", choices=WEIGHT_KINDS,
                            default="Geometric", help="how the tree levels are weighted (Geometric)")
    pin_parser.add_argument("--hyperbatch-weight-scale", dest="hyperbatch_weight_scale", type=float, default=1.0)
    pin_parser.add_argument("--hyperbatch-force", dest="hyperbatch_force", action="store_true",
                            help="weight the loss by the Hyperbatch tree even with a plain sampler")
    pin_parser.add_argument("--seed", type=int, default=0, help="first image seed; image i uses seed+i (0)")
    pin_parser.add_argument("--loss", dest="loss_mode", choices=LOSS_MODES, default="pairwise")
    pin_parser.add_argument("--granularity", choices=GRANULARITIES, default="word",
                            help="one gene per word or per comma-separated tag (word)")
    pin_parser.add_argument("--prototypes", type=int, default=16, help="embedded model: prototype count (16)")
    pin_parser.add_argument("--size", type=int, default=64, help="embedded model: image size (64)")
    pin_parser.add_argument("--model-seed", dest="model_seed", type=int, default=0)
    pin_parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    _add_search_flags(pin_parser)

    report_parser = commands.add_parser("report", help="rebuild a run folder's report from run.json and its images")
    report_parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder (holds run.json)")
    return parser


def _summary(result: RunResult) -> str:
    record = result.record
    lines = [f"status: {record['status']}" + (f" ({record['message']})" if "message" in record else "")]
    if record.get("baseline"):
        lines.append(f"baseline loss: {record['baseline']['loss']:.4f}")
    if record.get("best"):
        best = record["best"]
        lines.append(f"best loss: {best['loss']:.4f} (generation {best['generation']})")
        lines.append(f"pinned prompt: {best['prompt']}")
        if best["negative_prompt"]:
            lines.append(f"pinned negative prompt: {best['negative_prompt']}")
    if result.run_dir is not None:
        lines.append(f"run folder: {result.run_dir}")
    return "\n".join(lines)


def report(run_dir: str | Path) -> int:
    """Rebuild every derived file of a run folder, e.g. after a crash; exit status as for the CLI."""
    try:
        without_images = rebuild_report(run_dir)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: could not write the report: {error}", file=sys.stderr)
        return 1
    if without_images:
        print(f"notice: {len(without_images)} individuals have no saved images, so no GIF or thumbnails: "
              f"{', '.join(without_images)}", file=sys.stderr)
    print(f"report: {Path(run_dir) / 'index.html'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "report":
        return report(args.run_dir)
    try:
        if args.command == "demo":
            result = demo(args.out, args.generations, args.seed, args.device)
        else:
            result = pin(args.prompt, args.negative, out=args.out, targets=args.target, batch=args.batch,
                         steps=args.steps, sampler=args.sampler, schedule=args.schedule, cfg_scale=args.cfg_scale,
                         fork_strength=args.fork_strength, hyperbatch_weights=args.hyperbatch_weights,
                         hyperbatch_weight_type=args.hyperbatch_weight_type,
                         hyperbatch_weight_scale=args.hyperbatch_weight_scale, hyperbatch_force=args.hyperbatch_force,
                         seed=args.seed, loss_mode=args.loss_mode, granularity=args.granularity,
                         search=_search_options(args), prototypes=args.prototypes, size=args.size,
                         model_seed=args.model_seed, device=args.device)
    except (UsageError, PromptError, TargetError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a fault mid-run (out of memory, full disk): run.json says "failed"
        print(f"error: the run failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(_summary(result))
    return {"done": 0, "interrupted": 130}.get(result.status, 1)
