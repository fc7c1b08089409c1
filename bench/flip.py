"""Benchmark: the 120-pair pairwise LDR-ꟻLIP loss of 16 images of 512^2, torch (lib_pinning.flip) vs flip_evaluator.

    .venv/bin/python bench/flip.py [--sizes 512 1024] [--runs 5] [--oracle-pairs 60] [--threads N] [--write]
        [--json FILE] [--markdown FILE] [--from-json FILE] [--smoke]

torch is timed as the pinning loop uses it: `FlipImages(images).pairwise()`, preprocessing included, on the CPU and,
when there is one, on the GPU (inputs already on the device). flip_evaluator is timed one pair per call, the only
way it works. Agreement is checked on `--oracle-pairs` distinct pairs (at least 50) at 512^2, and on proportionally
fewer at larger sizes (at least 8). `--write` appends the results under `## flip` in docs/BENCHMARKS.md; `--json`
keeps the raw numbers, `--markdown` the section (bench/gpu.sh).
"""

import argparse
import datetime
import json
import os
import statistics
import time
from importlib.metadata import version

import numpy as np
import torch

from benchlib import append_section, cpu_model

import flip_evaluator  # noqa: E402

from lib_pinning.flip import FlipImages  # noqa: E402

SIZE = 512
IMAGE_COUNT = 16
MIN_ORACLE_PAIRS = 50
MIN_LARGE_ORACLE_PAIRS = 8  # at sizes above 512^2, where one flip_evaluator call takes seconds
SECTION = "## flip"


def varied_images(count, size, seed=0):
    """(count, size, size, 3) float32 sRGB images: gradients, bands, checkers and noise, with or without noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    images = []
    for k in range(count):
        colours = rng.random((5, 3))
        kind = k % 4
        if kind == 0:  # smooth gradient
            image = colours[0] + x[..., None] * (colours[1] - colours[0]) * 0.8 + y[..., None] * 0.2
        elif kind == 1:  # vertical colour bands with sharp edges
            image = colours[(x * 5).astype(int).clip(0, 4)]
        elif kind == 2:  # checkerboard of two colours
            cell = 4 + k
            image = np.where((((y * size) // cell + (x * size) // cell) % 2)[..., None] == 0, colours[0], colours[1])
        else:  # uniform noise
            image = rng.random((size, size, 3))
        if k >= count // 2:  # the second half gets some Gaussian noise
            image = image + 0.05 * rng.standard_normal(image.shape)
        images.append(np.clip(image, 0, 1).astype(np.float32))
    return np.stack(images)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_torch_run(images, device):
    """Seconds of one `FlipImages(images).pairwise()` on `device` (images already there); also its pairs and errors."""
    synchronize(device)
    start = time.perf_counter()
    pairs, errors = FlipImages(images).pairwise()
    synchronize(device)
    return time.perf_counter() - start, pairs.cpu(), errors.cpu()


def time_flip_evaluator(images_hwc, pairs):
    """Per-call seconds, means and exact (float64) means of its error maps, for each (test, reference) pair."""
    seconds, means, map_means = [], [], []
    for test, reference in pairs:
        start = time.perf_counter()
        error_map, mean, _ = flip_evaluator.evaluate(images_hwc[reference], images_hwc[test], "LDR", applyMagma=False)
        seconds.append(time.perf_counter() - start)
        means.append(mean)
        map_means.append(float(error_map.mean(dtype=np.float64)))
    return seconds, means, map_means


def benchmark(images_hwc, devices, runs, oracle_pairs):
    """Interleave torch runs with slices of the flip_evaluator calls so that both see the same machine load.

    Returns {device type: (median seconds per run, errors)}, the pairs, the oracle's pair indices, per-call
    seconds, means and map means.
    """
    images = torch.from_numpy(images_hwc).permute(0, 3, 1, 2).contiguous()
    on_device = {device.type: images.to(device) for device in devices}
    for device in devices:  # warm-up
        _, pairs, _ = time_torch_run(on_device[device.type], device)
    time_flip_evaluator(images_hwc, pairs[:1].tolist())
    chosen = np.linspace(0, len(pairs) - 1, oracle_pairs).round().astype(int)  # spread over all pairs
    torch_seconds = {device.type: [] for device in devices}
    torch_errors = {}
    oracle = ([], [], [])
    for oracle_slice in np.array_split(chosen, runs):
        for device in devices:
            seconds, _, torch_errors[device.type] = time_torch_run(on_device[device.type], device)
            torch_seconds[device.type].append(seconds)
        for collected, new in zip(oracle, time_flip_evaluator(images_hwc, pairs[oracle_slice].tolist())):
            collected.extend(new)
    torch_results = {kind: (statistics.median(torch_seconds[kind]), torch_errors[kind]) for kind in torch_seconds}
    return torch_results, pairs, chosen, *(np.array(values) for values in oracle)


def core_count():
    """What `nproc` prints: the cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def markdown_section(result: dict) -> str:
    """The dated section of one size's measurement (`measure_size`), from measured or saved numbers."""
    gpu = f", GPU {result['gpu']}" if result["gpu"] else ", no GPU"
    size, oracle_ms = result["size"], result["oracle_ms"]
    rows = [f"| flip_evaluator {result['flip_evaluator']} | cpu | {oracle_ms:.2f} | 1.0 |"]
    for label, ms in result["torch_ms"].items():
        rows.append(f"| lib_pinning.flip (FlipImages) | {label} | {ms:.3f} | {oracle_ms / ms:.0f} |")
    lines = [
        f"### {result['date']}: {result['cores']} cores ({result['cpu']}){gpu}, torch {result['torch']}",
        "",
        f"`bench/flip.py`: {IMAGE_COUNT} seeded {size}x{size} images, the {result['pairs']}-pair pairwise loss. torch: "
        f"median of {result['runs']} runs of `FlipImages(images).pairwise()` after a warm-up, preprocessing "
        f"included, {result['threads']} CPU threads. flip_evaluator: one pair per call, median over "
        f"{result['oracle_pairs']} calls, interleaved with the torch runs. 1-minute load average before the run: "
        f"{result['load_before']:.2f}.",
        "",
        "| implementation | device | ms per pair | speed-up vs flip_evaluator |",
        "|---|---|---:|---:|",
        *rows,
        "",
        result["agreement"],
        "",
    ]
    return "\n".join(lines)


def device_label(device_type):
    return torch.cuda.get_device_name() if device_type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[SIZE], help="image sizes (%(default)s)")
    parser.add_argument("--runs", type=int, default=5, help="timed torch runs (after one warm-up)")
    parser.add_argument("--oracle-pairs", type=int, default=60,
                        help="pairs run through flip_evaluator at 512^2, 50 to 120 (fewer at larger sizes)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--smoke", action="store_true", help="64^2 images, one run, 8 oracle pairs: proves it runs")
    parser.add_argument("--json", help="write the raw numbers there")
    parser.add_argument("--markdown", help="write the sections there")
    parser.add_argument("--from-json", help="measure nothing: the sections from numbers saved by --json")
    parser.add_argument("--write", action="store_true", help="append the results to docs/BENCHMARKS.md")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.runs, args.oracle_pairs = [64], 1, MIN_LARGE_ORACLE_PAIRS
    elif args.runs < 1 or not MIN_ORACLE_PAIRS <= args.oracle_pairs <= 120:
        parser.error(f"--runs must be >= 1 and --oracle-pairs in [{MIN_ORACLE_PAIRS}, 120]")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return args


def oracle_pair_count(requested: int, size: int) -> int:
    """As many flip_evaluator calls as `requested` at 512^2 cost, at least MIN_LARGE_ORACLE_PAIRS."""
    return min(requested, max(MIN_LARGE_ORACLE_PAIRS, round(requested * (SIZE / size) ** 2)))


def measure_size(size: int, runs: int, oracle_pairs: int) -> dict:
    load_before = os.getloadavg()[0]  # the machine may be shared; a high load slows torch's threads most
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    torch_results, pairs, chosen, oracle_seconds, oracle_means, oracle_map_means = benchmark(
        varied_images(IMAGE_COUNT, size), devices, runs, oracle_pairs
    )
    return {
        "date": datetime.date.today().isoformat(), "size": size, "pairs": len(pairs), "runs": runs,
        "oracle_pairs": len(chosen), "oracle_ms": 1000 * statistics.median(oracle_seconds),
        "torch_ms": {device_label(kind): 1000 * seconds / len(pairs) for kind, (seconds, _) in torch_results.items()},
        "agreement": agreement_line(torch_results, chosen, oracle_means, oracle_map_means),
        "flip_evaluator": version("flip-evaluator"), "cores": core_count(), "cpu": cpu_model(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "", "torch": torch.__version__,
        "threads": torch.get_num_threads(), "load_before": load_before,
    }


def agreement_line(torch_results, chosen, oracle_means, oracle_map_means):
    cpu_errors = torch_results["cpu"][1]
    ours = cpu_errors[chosen].numpy().astype(np.float64)
    line = (
        f"Agreement over {len(chosen)} distinct pairs: max |torch - flip_evaluator mean| = "
        f"{np.abs(ours - oracle_means).max():.2e}; max |torch - float64 mean of flip_evaluator's map| = "
        f"{np.abs(ours - oracle_map_means).max():.2e} (flip_evaluator sums its map in a float32 running sum)."
    )
    for device_type, (_, errors) in torch_results.items():
        if device_type != "cpu":
            line += f" Max |{device_type} - cpu| = {(errors - cpu_errors).abs().max():.2e}."
    return line


def main():
    args = parse_args()
    results = []
    if args.from_json:
        with open(args.from_json) as file:
            results = json.load(file)
    for size in [] if args.from_json else args.sizes:
        results.append(measure_size(size, args.runs, oracle_pair_count(args.oracle_pairs, size)))
        if args.json:
            with open(args.json, "w") as file:
                json.dump(results, file, indent=1)
    sections = "\n".join(markdown_section(result) for result in results)
    print(sections)
    if args.markdown:
        with open(args.markdown, "w") as file:
            file.write(sections)
    if args.write:
        append_section(SECTION, sections)
        print("appended to docs/BENCHMARKS.md")


if __name__ == "__main__":
    main()
