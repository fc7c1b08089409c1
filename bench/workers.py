"""Fan-out benchmark (BENCHMARKS.md, "workers"): the speed-up of one pinning run spread over 1, 2 and 4 workers.

Each worker is `python -m lib_pinning serve` (the embedded model behind A1111's API, one torch thread) slowed so
that a batch takes `--render-seconds` (default 1 s, a GPU's pace at 512², batch 8), so what the fan-out itself
costs (HTTP, PNGs, waiting for the slowest of a generation) shows. The same job on K workers, without a run folder:
the render wall time (the engine's time inside the renderer, summed over the run) and the whole run's wall time
(checks, the baseline on every worker, scoring) from `pin` to its result; speed-ups T(1)/T(K), goal at least 0.9·K
on the renders. Every run's search must be the same (checked): the workers change the time, never the run.

    .venv/bin/python bench/workers.py [--render-seconds 1] [--generations 4] [--lambda 8] [--write]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import date

from benchlib import ROOT, append_section, machine

from lib_pinning.workers import run as workers  # noqa: E402
from lib_pinning.workers.api import wait_until_up  # noqa: E402

PROMPT, NEGATIVE = "a quiet painting of round shapes, warm colours, soft light, simple", "noise, stripes"
COUNTS = (1, 2, 4)


def start(port: int, render_seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lib_pinning", "serve", "--port", str(port), "--render-seconds",
                             str(render_seconds)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render-seconds", type=float, default=1.0)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--lambda", dest="lambda_", type=int, default=8)
    parser.add_argument("--base-port", type=int, default=7950)
    parser.add_argument("--write", action="store_true", help="append the table to docs/BENCHMARKS.md")
    args = parser.parse_args()
    ports = [args.base_port + index for index in range(max(COUNTS))]
    processes = [start(port, args.render_seconds) for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url in urls:
            wait_until_up(url, 180)
        rows, searches = [], []
        for count in COUNTS:
            started = time.perf_counter()
            result = workers.pin(PROMPT, NEGATIVE, webui=urls[:count], progress=False, seed=7, batch=8, steps=6,
                                 width=32, height=32, cfg_scale=1.5, scheduler="Karras",
                                 generations=args.generations, lambda_=args.lambda_, first_look=0, cma_seed=7,
                                 log=False)
            seconds = time.perf_counter() - started
            record = result.record
            renders = 1 + record.evaluations
            rendering = sum(individual.seconds_render for generation in record.generations
                            for individual in generation.individuals)
            searches.append([individual.loss for generation in record.generations
                             for individual in generation.individuals])
            rows.append((count, renders, rendering, seconds))
            print(f"{count} worker(s): {renders} batches, rendering {rendering:.1f} s, run {seconds:.1f} s", flush=True)
        assert all(search == searches[0] for search in searches), "the workers changed the run"
    finally:
        for process in processes:
            process.terminate()
            process.wait()
    lines = [f"### workers — {date.today().isoformat()} — {machine()}; workers: `serve --render-seconds "
             f"{args.render_seconds:g}` (one torch thread each) on this machine",
             "",
             f"One run (the demo's prompt, batch 8, 6 steps, 32², {args.generations} generations of λ "
             f"{args.lambda_}, no first look, no run folder) on K workers. Rendering: the engine's time inside the "
             "renderer over the generations; run: from `pin` to its result, the checks, the baseline on every "
             "worker and the scoring included. The search was the same in every run (checked).",
             "",
             "| workers | batches | rendering s | speed-up | goal 0.9·K | ideal s | run s | run speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    for count, renders, rendering, seconds in rows:
        speedup = rows[0][2] / rendering
        ideal = (renders - 1) * args.render_seconds / count
        lines.append(f"| {count} | {renders} | {rendering:.1f} | {speedup:.2f} | "
                     f"{'met' if speedup >= 0.9 * count else 'missed'} ({0.9 * count:.1f}) | {ideal:.1f} | "
                     f"{seconds:.1f} | {rows[0][3] / seconds:.2f} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        append_section("## workers", table)


if __name__ == "__main__":
    main()
