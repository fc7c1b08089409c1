"""Fan-out benchmark (BENCHMARKS.md, "workers"): the speed-up of one pinning run spread over 1, 2 and 4 workers.

Each worker is `python -m lib_pinning serve` (the embedded model behind A1111's API) slowed so that a batch takes
`--render-seconds` (default 1 s, a GPU's pace at 512², batch 8), so what the fan-out itself costs (HTTP, PNGs,
waiting for the slowest of a generation) shows. The same job on K workers: wall time of the whole run (checks,
the baseline on every worker, the report) from `pin` to its result; speed-up T(1)/T(K), goal at least 0.9·K.
Every run's search must be the same (checked): the workers change the time, never the run.

    .venv/bin/python bench/workers.py [--render-seconds 1] [--generations 4] [--lambda 8] [--write]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from benchlib import ROOT, append_section, machine

from lib_pinning.workers import run as workers  # noqa: E402
from lib_pinning.workers.pool import wait_until_up  # noqa: E402

PROMPT, NEGATIVE = "a quiet painting of round shapes, warm colours, soft light, simple", "noise, stripes"
COUNTS = (1, 2, 4)


def start(port: int, render_seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lib_pinning", "serve", "--port", str(port), "--render-seconds",
                             str(render_seconds)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})


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
            with tempfile.TemporaryDirectory() as folder:
                started = time.perf_counter()
                result = workers.pin(PROMPT, NEGATIVE, webui=urls[:count], out=Path(folder) / "run", progress=False,
                                     seed=7, batch=8, steps=10, width=64, height=64, cfg_scale=1.5,
                                     scheduler="Karras", generations=args.generations, lambda_=args.lambda_,
                                     first_look=0, cma_seed=7, log=False)
                seconds = time.perf_counter() - started
            renders = 1 + result.record.evaluations
            searches.append([individual.loss for generation in result.record.generations
                             for individual in generation.individuals])
            rows.append((count, renders, seconds))
            print(f"{count} worker(s): {renders} batches in {seconds:.1f} s", flush=True)
        assert all(search == searches[0] for search in searches), "the workers changed the run"
    finally:
        for process in processes:
            process.terminate()
            process.wait()
    single = rows[0][2]
    lines = [f"### workers — {date.today().isoformat()} — {machine()}; workers: `serve --render-seconds "
             f"{args.render_seconds:g}` on this machine",
             "",
             f"One run (the demo's prompt, batch 8, 10 steps, 64², {args.generations} generations of λ "
             f"{args.lambda_}, no first look, report written) on K workers; wall time from `pin` to its result, "
             "checks and the baseline on every worker included. The search was the same in every run (checked).",
             "",
             "| workers | batches | wall s | speed-up | goal 0.9·K | ideal s (batches·render/K) |",
             "|---|---|---|---|---|---|"]
    for count, renders, seconds in rows:
        speedup = single / seconds
        ideal = renders * args.render_seconds / count
        lines.append(f"| {count} | {renders} | {seconds:.1f} | {speedup:.2f} | "
                     f"{'met' if speedup >= 0.9 * count else 'missed'} ({0.9 * count:.1f}) | {ideal:.1f} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        append_section("## workers", table)


if __name__ == "__main__":
    main()
