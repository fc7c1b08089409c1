"""Overhead benchmark (BENCHMARKS.md, "overhead"): the share of an individual's wall time not spent rendering.

Runs a pinning job with the report recorder, and side by side with the no-op Recorder, alternating, several times.
Per run: wall time, render time, loss time, the time the recorder's hooks take on the search's thread, the wait
for the report at the end (on_finish: the queue's rest, the run's plots, index.html) and the process's CPU time;
for report runs also the time `rebuild_report` takes on the finished folder (the report's work done alone).
Medians per individual. Two renderers:

- `--renderer embedded` (default): the demo's job on the embedded model (its prompt, target, batch 8, 10 steps,
  64x64; fewer generations);
- `--renderer unet`: an SD1.5-shaped UNet and VAE decoder with random weights (bench/unet.py, needs diffusers) on
  `--device` (fp16 512x512 on a GPU; a shrunken model at 64x64 on a CPU), batch 8, 20 steps DPM++ 2M, a
  13-word prompt, the first batch as the target: what a WebUI run costs besides its renders.

    .venv/bin/python bench/overhead.py [--renderer embedded|unet] [--device cpu|cuda] [--generations 8]
        [--repeats 3] [--write] [--json FILE] [--markdown FILE] [--from-json FILE] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date

import torch

from benchlib import append_section, machine

from lib_pinning.embedded import EmbeddedModel  # noqa: E402
from lib_pinning.embedded_run import DEMO_NEGATIVE, DEMO_PROMPT, demo_target, pin  # noqa: E402
from lib_pinning.job import RenderPlan, build_job  # noqa: E402
from lib_pinning.observer import Observer  # noqa: E402
from lib_pinning.options import PinOptions, parse  # noqa: E402
from lib_pinning.record import RenderRecord, RunRecord  # noqa: E402
from lib_pinning.report import ReportRecorder, rebuild_report  # noqa: E402
from lib_pinning.runner import execute  # noqa: E402

DEMO_SETTINGS = dict(steps=10, sampler="DPM++ 2M", schedule="Karras", cfg_scale=1.5)  # cli.pin's defaults
BATCH = 8
UNET_PROMPT = "a portrait of an old sailor, weathered face, oil painting, dramatic light, deep blue background"
UNET_NEGATIVE = "blurry, cartoon, watermark"
UNET_STEPS = 20
SMOKE_BATCH, SMOKE_STEPS = 2, 4  # --smoke, with no first look
Run = Callable[[str, list[Observer], int], RunRecord]  # (run folder, observers, generations) -> its record
WARM_UP = 1  # generations of the warm-up run


class TimedRecorder(Observer):
    """Passes every event on to the report's recorder (or none) and adds up the time its hooks take on the
    search's thread."""

    def __init__(self, inner: Observer):
        self.inner, self.hooks, self.finish = inner, 0.0, 0.0

    def _timed(self, hook, *args) -> float:
        started = time.perf_counter()
        hook(*args)
        return time.perf_counter() - started

    def on_start(self, record, planned):
        self.hooks += self._timed(self.inner.on_start, record, planned)

    def on_baseline(self, record, rendered, targets):
        self.hooks += self._timed(self.inner.on_baseline, record, rendered, targets)

    def on_best(self, record, rendered):
        self.hooks += self._timed(self.inner.on_best, record, rendered)

    def on_generation(self, record, generation, rendered):
        self.hooks += self._timed(self.inner.on_generation, record, generation, rendered)

    def on_finish(self, record, best):
        self.finish += self._timed(self.inner.on_finish, record, best)


@dataclass
class Measurement:
    individuals: int
    wall: float
    render: float
    loss: float
    hooks: float
    finish: float
    cpu: float
    rebuild: float

    def per_individual(self, seconds: float) -> float:
        return 1000 * seconds / self.individuals


def embedded_run() -> Run:
    """The demo's job on the embedded model."""
    model = EmbeddedModel()
    target = model.prototypes[demo_target(model, DEMO_PROMPT)][None].cpu()

    def run(folder: str, observers: list[Observer], generations: int) -> RunRecord:
        return pin(DEMO_PROMPT, DEMO_NEGATIVE, out=folder, report=False, target_images=target, batch=BATCH,
                   generations=generations, log=False, progress=False, observers=observers, **DEMO_SETTINGS).record

    return run


def unet_run(device: torch.device, smoke: bool) -> Run:
    """A job rendered by the SD1.5-shaped UNet and VAE (built once: loading a model is not the run's overhead)."""
    from unet import SD15, TINY, UNetRenderer  # diffusers: only this renderer needs it

    profile = TINY if smoke or device.type != "cuda" else SD15
    seeds = list(range(1000, 1000 + (SMOKE_BATCH if smoke else BATCH)))
    steps = SMOKE_STEPS if smoke else UNET_STEPS
    renderer = UNetRenderer(profile, device, seeds, steps=steps)
    size = profile.latent_size * 8
    plan = RenderPlan(RenderRecord(seeds, "DPM++ 2M", "Karras", steps, renderer.cfg_scale, size, size,
                                   f"bench {profile.name} UNet", {"device": str(device)}),
                      sampled_steps=steps, tree_size=len(seeds))
    def run(folder: str, observers: list[Observer], generations: int) -> RunRecord:
        # A fixed number of generations, no stop by patience (the pictures are noise); the default first look,
        # but none in the warm-up, which only has to reach every kernel once.
        first_look = 0 if smoke or generations == WARM_UP else PinOptions.first_look
        options = parse(PinOptions, {"generations": generations, "patience": 0, "first_look": first_look,
                                     "log": False})
        job = build_job(options, UNET_PROMPT, UNET_NEGATIVE, plan, lambda resolved: renderer)
        return execute(job, folder, observers=observers, progress=False, report=False).record

    return run


def measure(run: Run, generations: int, report: bool) -> Measurement:
    with tempfile.TemporaryDirectory() as folder:
        recorder = TimedRecorder(ReportRecorder(folder) if report else Observer())
        started, cpu = time.perf_counter(), time.process_time()
        record = run(folder, [recorder], generations)  # the report's recorder is the timed one, not the runner's own
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        started = time.perf_counter()
        if report:
            rebuild_report(folder)
        rebuild = time.perf_counter() - started
    individuals = [i for generation in record.generations for i in generation.individuals]
    return Measurement(len(individuals), wall, sum(i.seconds_render for i in individuals),
                       sum(i.seconds_loss for i in individuals), recorder.hooks, recorder.finish, cpu, rebuild)


def median_ms(measurements: list[Measurement], part) -> float:
    """Median over runs of `part(measurement)`, in milliseconds per individual."""
    return statistics.median(m.per_individual(part(m)) for m in measurements)


def table(runs: dict[str, list[Measurement]]) -> str:
    """Milliseconds per individual (medians over repeats) and the overhead as a share of render and wall time."""
    header = ("| recorder | wall | render | loss (ꟻLIP) | hooks on the search thread | wait at finish | rest "
              "| process CPU | not rendering / render | not rendering / wall |\n|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name, measurements in runs.items():
        wall, render, loss, hooks, finish, cpu = (median_ms(measurements, lambda m, field=field: getattr(m, field))
                                                  for field in ("wall", "render", "loss", "hooks", "finish", "cpu"))
        rest = wall - render - loss - hooks - finish
        rows.append(f"| {name} | {wall:.1f} | {render:.1f} | {loss:.1f} | {hooks:.2f} | {finish:.1f} | {rest:.1f} "
                    f"| {cpu:.1f} | {100 * (wall - render) / render:.1f} % | {100 * (wall - render) / wall:.1f} % |")
    return "\n".join([header, *rows])


def report_cost(runs: dict[str, list[Measurement]]) -> str:
    """What the report adds: its hooks, its final wait, its work done alone, and the wall time it adds."""
    report, plain = runs["report"], runs["none (no-op)"]
    render = median_ms(plain, lambda m: m.render)

    def share(milliseconds: float) -> str:
        return f"{milliseconds:.2f} ms per individual = {100 * milliseconds / render:.1f} % of render time"

    extra_wall = median_ms(report, lambda m: m.wall) - median_ms(plain, lambda m: m.wall)
    return (f"Hooks on the search's thread: {share(median_ms(report, lambda m: m.hooks))}. Wait at the end of the "
            f"run: {share(median_ms(report, lambda m: m.finish))}. The report's work done alone (rebuild_report "
            f"on the finished run): {share(median_ms(report, lambda m: m.rebuild))}. Wall time with the report "
            f"minus without: {share(extra_wall)}.")


def measure_all(args, save) -> dict:
    """The warm-up and the alternating runs; the raw numbers and what the section says of the job. `save(results)`
    after each run, so that a run stopped by a time limit still leaves what it measured."""
    unet = args.renderer == "unet"
    generations = args.generations or (2 if args.smoke else 3 if unet else 8)
    repeats = args.repeats or (1 if args.smoke or unet else 3)
    device = torch.device(args.device if unet else "cpu")
    run = unet_run(device, args.smoke) if unet else embedded_run()
    job = (f"Demo job on the embedded model (64x64, batch {BATCH}, {DEMO_SETTINGS['steps']} steps "
           f"{DEMO_SETTINGS['sampler']})" if not unet else
           f"`--renderer unet`: {'a shrunken' if args.smoke or device.type != 'cuda' else 'an'} SD1.5-shaped UNet "
           f"and VAE decoder (random weights, bench/unet.py) on {device}, "
           + (f"batch {SMOKE_BATCH}, {SMOKE_STEPS} steps DPM++ 2M, no first look" if args.smoke else
              f"batch {BATCH}, {UNET_STEPS} steps DPM++ 2M, the default first look")
           + ", CFG 7, the first batch as the target")
    results = {"date": date.today().isoformat(), "machine": machine(device), "job": job, "generations": generations,
               "repeats": repeats, "cpus": os.cpu_count(), "runs": {"report": [], "none (no-op)": []}}
    measure(run, WARM_UP, report=True)  # warm-up: imports, font cache, first allocations, GPU kernels
    for _ in range(repeats):
        for name, report in (("report", True), ("none (no-op)", False)):
            results["runs"][name].append(asdict(measure(run, generations, report=report)))
            results["load"] = os.getloadavg()[1]  # the last 5 minutes: other programs' load inflates every figure
            save(results)
    return results


def section(results: dict) -> str:
    runs = {name: [Measurement(**m) for m in measurements] for name, measurements in results["runs"].items()
            if measurements}
    cost = f"{report_cost(runs)} " if len(runs) == 2 else ""  # needs both recorders' runs
    text = f"{table(runs)}\n\n{cost}Load average during the runs: {results['load']:.1f} on {results['cpus']} CPUs."
    individuals = runs["report"][0].individuals
    return (f"### overhead — {results['date']} — {results['machine']}\n\n"
            f"{results['job']}, {results['generations']} generations = {individuals} individuals, medians of "
            f"{results['repeats']} alternating run(s) per recorder; ms per individual.\n\n{text}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renderer", choices=("embedded", "unet"), default="embedded")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu",
                        help="the UNet's device (--renderer unet)")
    parser.add_argument("--generations", type=int, help="generations per run (embedded 8, unet 3)")
    parser.add_argument("--repeats", type=int, help="runs per recorder (embedded 3, unet 1)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves the script runs, measures nothing")
    parser.add_argument("--json", help="write the raw numbers there")
    parser.add_argument("--markdown", help="write the section there")
    parser.add_argument("--from-json", help="measure nothing: the section from numbers saved by --json")
    parser.add_argument("--write", action="store_true", help="append the table to docs/BENCHMARKS.md")
    args = parser.parse_args()
    def save(results: dict) -> None:
        if args.json:
            with open(args.json, "w") as file:
                json.dump(results, file, indent=1)

    if args.from_json:
        with open(args.from_json) as file:
            results = json.load(file)
    else:
        results = measure_all(args, save)
    text = section(results)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as file:
            file.write(text)
    if args.write:
        append_section("## overhead", text)


if __name__ == "__main__":
    main()
