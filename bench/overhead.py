"""Overhead benchmark (BENCHMARKS.md, "overhead"): the share of an individual's wall time not spent rendering.

Runs the demo's job on the embedded model (its prompt, target, batch 8, 10 steps, 64x64; fewer generations)
with the report recorder, and side by side with the no-op Recorder, alternating, several times. Per run:
wall time, render time, loss time, the time the recorder's hooks take on the search's thread, the wait for
the report at the end (on_finish: the queue's rest, the run's plots, index.html) and the process's CPU time;
for report runs also the time `rebuild_report` takes on the finished folder (the report's work done alone).
Medians per individual.

    .venv/bin/python bench/overhead.py [--generations 8] [--repeats 3] [--write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from benchlib import append_section, machine

from lib_pinning.embedded import EmbeddedModel  # noqa: E402
from lib_pinning.embedded_run import DEMO_NEGATIVE, DEMO_PROMPT, demo_target, pin  # noqa: E402
from lib_pinning.observer import Observer  # noqa: E402
from lib_pinning.report import ReportRecorder, rebuild_report  # noqa: E402

DEMO_SETTINGS = dict(steps=10, sampler="DPM++ 2M", schedule="Karras", cfg_scale=1.5)  # cli.pin's defaults
BATCH = 8


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


def measure(model: EmbeddedModel, generations: int, report: bool) -> Measurement:
    target = model.prototypes[demo_target(model, DEMO_PROMPT)][None]
    with tempfile.TemporaryDirectory() as folder:
        recorder = TimedRecorder(ReportRecorder(folder) if report else Observer())
        started, cpu = time.perf_counter(), time.process_time()
        # The report's recorder is the timed one, not pin()'s own.
        record = pin(DEMO_PROMPT, DEMO_NEGATIVE, out=folder, report=False, target_images=target.cpu(), batch=BATCH,
                     generations=generations, log=False, progress=False, observers=[recorder], **DEMO_SETTINGS).record
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
    """Milliseconds per individual (medians over repeats) and the overhead as a share of render time."""
    header = ("| recorder | wall | render | loss (ꟻLIP) | hooks on the search thread | wait at finish | rest "
              "| process CPU | not rendering / render |\n|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name, measurements in runs.items():
        wall, render, loss, hooks, finish, cpu = (median_ms(measurements, lambda m, field=field: getattr(m, field))
                                                  for field in ("wall", "render", "loss", "hooks", "finish", "cpu"))
        rest = wall - render - loss - hooks - finish
        rows.append(f"| {name} | {wall:.1f} | {render:.1f} | {loss:.1f} | {hooks:.2f} | {finish:.1f} | {rest:.1f} "
                    f"| {cpu:.1f} | {100 * (wall - render) / render:.1f} % |")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=8, help="generations per run (the demo has 32)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="append the table to docs/BENCHMARKS.md")
    args = parser.parse_args()
    model = EmbeddedModel()
    measure(model, 1, report=True)  # warm-up: imports, font cache, first allocations
    runs: dict[str, list[Measurement]] = {"report": [], "none (no-op)": []}
    for _ in range(args.repeats):
        runs["report"].append(measure(model, args.generations, report=True))
        runs["none (no-op)"].append(measure(model, args.generations, report=False))
    load = os.getloadavg()[1]  # over the last 5 minutes: other programs sharing the CPU inflate every figure
    text = f"{table(runs)}\n\n{report_cost(runs)} Load average during the runs: {load:.1f} on {os.cpu_count()} CPUs."
    print(text)
    if args.write:
        individuals = runs["report"][0].individuals
        section = (f"\n### overhead — {date.today()} — {machine()}\n\n"
                   f"Demo job on the embedded model (64x64, batch {BATCH}, {DEMO_SETTINGS['steps']} steps "
                   f"{DEMO_SETTINGS['sampler']}), {args.generations} generations = {individuals} individuals, "
                   f"medians of {args.repeats} alternating runs per recorder; ms per individual.\n\n{text}\n")
        append_section("## overhead", section)


if __name__ == "__main__":
    main()
