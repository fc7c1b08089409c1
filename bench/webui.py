"""Benchmarks inside a running AUTOMATIC1111 WebUI (its API at --url, this extension installed).

hyperbatch: wall time of txt2img calls with each Hyperbatch sampler against the same A1111 sampler, same batch,
steps and seeds, alternating, medians of --repeats; beside it the schedule's row-count limit (the speed-up
if a step's cost were proportional to its rows).

overhead (BENCHMARKS.md "overhead", on the real renderer): one pinning job through the API; from its run.json,
the share of the generations' wall time not spent rendering (loss, report hooks, run.json, bookkeeping), and
the time outside the generations (checks, the baseline render, the report's last files).

    .venv/bin/python bench/webui.py --url http://127.0.0.1:7861 [--part hyperbatch|overhead|all] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import urllib.request
from datetime import date

from benchlib import append_section, cpu_model

from lib_pinning.hyperbatch import schedule  # noqa: E402
from lib_pinning.webui.script_args import positional  # noqa: E402

SIZE = 64
PAIRS = [("DPM++ 2M", "DPM++ 2M Hyperbatch"), ("Euler a", "Euler a Hyperbatch")]


def post(url: str, path: str, payload: dict | None = None) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=3600) as response:
        return json.loads(response.read())


def timed_txt2img(url: str, sampler: str, batch: int, steps: int) -> float:
    payload = {"prompt": "a red cube on a wooden table", "negative_prompt": "blurry", "width": SIZE,
               "height": SIZE, "steps": steps, "sampler_name": sampler, "batch_size": batch, "seed": 1,
               "cfg_scale": 7, "save_images": False}
    started = time.perf_counter()
    images = post(url, "/sdapi/v1/txt2img", payload)["images"]
    assert len(images) == batch
    return time.perf_counter() - started


def hyperbatch_part(url: str, batch: int, steps: int, repeats: int) -> str:
    timed_txt2img(url, "DPM++ 2M", 2, 2)  # warm-up
    sizes = [size for _, size in schedule(batch, steps)]
    limit = batch * steps / sum(sizes)
    rows = []
    for plain, hyper in PAIRS:
        times = {plain: [], hyper: []}
        for _ in range(repeats):
            for sampler in (plain, hyper):
                times[sampler].append(timed_txt2img(url, sampler, batch, steps))
        a, b = statistics.median(times[plain]), statistics.median(times[hyper])
        rows.append(f"| {hyper} | {a:.1f} | {b:.1f} | {a / b:.2f}× | {limit:.2f}× | {100 * (a / b) / limit:.0f} % |")
    header = (f"txt2img {SIZE}x{SIZE}, batch {batch}, {steps} steps, CFG 7, seed 1; wall seconds per call (API "
              f"round trip, VAE decode and PNG encoding included), medians of {repeats} alternating calls.\n\n"
              "| sampler | plain | Hyperbatch | speed-up | row-count limit | share of limit |\n"
              "|---|---|---|---|---|---|")
    return "\n".join([header, *rows])


def overhead_part(url: str, batch: int, steps: int, generations: int, lambda_: int) -> str:
    args = positional(generations=generations, lambda_=lambda_, log=False, cma_seed=1)
    payload = {"prompt": "a red cube on a wooden table, studio light", "negative_prompt": "blurry",
               "width": SIZE, "height": SIZE, "steps": steps, "sampler_name": "DPM++ 2M", "batch_size": batch,
               "seed": 1, "cfg_scale": 7, "script_name": "Prompt pinning", "script_args": args}
    started = time.perf_counter()
    response = post(url, "/sdapi/v1/txt2img", payload)
    wall = time.perf_counter() - started
    summary = json.loads(response["info"])["extra_generation_params"]["Prompt pinning"]
    with urllib.request.urlopen(f"{url}/file={summary['run_folder']}/run.json") as stream:
        record = json.loads(stream.read())
    individuals = [i for g in record["generations"] for i in g["individuals"]]
    render = sum(i["seconds_render"] for i in individuals)
    loss = sum(i["seconds_loss"] for i in individuals)
    generations_wall = sum(g["seconds"] for g in record["generations"])
    other = generations_wall - render - loss
    per = 1000 / len(individuals)
    return (f"Pinning job through the API: txt2img {SIZE}x{SIZE}, batch {batch}, {steps} steps DPM++ 2M, "
            f"{generations} generations x λ {lambda_} = {len(individuals)} individuals, report on; ms per "
            f"individual from run.json.\n\n"
            "| render | loss (ꟻLIP) | report hooks, run.json, bookkeeping | not rendering / render |\n"
            "|---|---|---|---|\n"
            f"| {render * per:.0f} | {loss * per:.1f} | {other * per:.1f} | "
            f"{100 * (generations_wall - render) / render:.2f} % |\n\n"
            f"Whole request {wall:.1f} s; outside the generations (checks, the baseline render of one batch, the "
            f"report's last files, the response) {wall - generations_wall:.1f} s.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("WEBUI_URL", "http://127.0.0.1:7861"))
    parser.add_argument("--part", choices=("hyperbatch", "overhead", "all"), default="all")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--webui", default="AUTOMATIC1111 v1.10.1, --use-cpu all --no-half, random-weight SD1.5",
                        help="what the WebUI at --url is, for the BENCHMARKS.md heading")
    parser.add_argument("--write", action="store_true", help="append the tables to docs/BENCHMARKS.md")
    args = parser.parse_args()
    url = args.url.rstrip("/")
    machine = f"nproc {os.cpu_count()}, {cpu_model()}, {args.webui}"
    if args.part in ("hyperbatch", "all"):
        text = hyperbatch_part(url, args.batch, args.steps, args.repeats)
        print(text)
        if args.write:
            heading = f"### hyperbatch in the WebUI — {date.today()} — {machine}"
            append_section("## hyperbatch", f"\n{heading}\n\n{text}\n")
    if args.part in ("overhead", "all"):
        text = overhead_part(url, 4, 4, 3, 4)
        print(text)
        if args.write:
            append_section("## overhead", f"\n### overhead in the WebUI — {date.today()} — {machine}\n\n{text}\n")


if __name__ == "__main__":
    main()
