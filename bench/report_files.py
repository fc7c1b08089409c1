"""The report's image files per individual (BENCHMARKS.md, "overhead"): can one writer thread keep up?

Times what the report writes for each individual's batch — one PNG with infotext per image, the thumbnail
strip and the summary GIF — at SD's sizes, on photo-like pixels (matplotlib's sample photograph, shifted per
image), on one thread like the report's writer. Side by side, the library route the report used before: PNGs at
Pillow's default compression and the GIF through imageio (which hands Pillow RGB frames to quantize one by one).
Medians of several repeats after a warm-up.

    .venv/bin/python bench/report_files.py [--batch 8] [--repeats 5] [--write]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from datetime import date

import imageio.v3 as iio
import matplotlib.cbook
import numpy as np
import torch
from benchlib import append_section, machine
from PIL import Image

from lib_pinning.report.images import FRAME_MILLISECONDS, gif_bytes, png_bytes, thumbnail_strip  # noqa: E402

INFOTEXT = "a red cube on a wooden table\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, Seed: 1"
SIZES = (512, 1024)


def photo_batch(size: int, batch: int) -> np.ndarray:
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as file:
        photo = Image.open(file).convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
    pixels = np.asarray(photo)
    return np.stack([np.roll(pixels, 37 * index, axis=1) for index in range(batch)])


def library_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")  # Pillow's default level (6), as A1111 saves
    return buffer.getvalue()


def library_gif(pixels: np.ndarray) -> bytes:
    """The same shared palette, handed to imageio as RGB frames."""
    count, height, width, _ = pixels.shape
    stacked = Image.fromarray(pixels.reshape(count * height, width, 3))
    reduced = stacked.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).convert("RGB")
    frames = np.asarray(reduced).reshape(pixels.shape)
    return iio.imwrite("<bytes>", frames, extension=".gif", duration=FRAME_MILLISECONDS, loop=0)


def timed(work, repeats: int) -> tuple[float, int]:
    work()
    times, size = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        size = work()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000, size


def measure(pixels: np.ndarray, repeats: int) -> dict[str, tuple[float, int]]:
    def pngs(encode):
        return lambda: sum(len(encode(image)) for image in pixels)

    return {
        "PNGs (report)": timed(pngs(lambda image: png_bytes(image, INFOTEXT)), repeats),
        "PNGs (Pillow default level)": timed(pngs(library_png), repeats),
        "GIF (report)": timed(lambda: len(gif_bytes(pixels)), repeats),
        "GIF (imageio)": timed(lambda: len(library_gif(pixels)), repeats),
        "thumbnail strip": timed(lambda: len(thumbnail_strip(pixels)), repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="append the table to docs/BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for size in SIZES:
        results = measure(photo_batch(size, args.batch), args.repeats)
        report = sum(results[name][0] for name in ("PNGs (report)", "GIF (report)", "thumbnail strip"))
        before = sum(results[name][0] for name in ("PNGs (Pillow default level)", "GIF (imageio)", "thumbnail strip"))
        for name, (ms, size_bytes) in results.items():
            rows.append(f"| {size}² | {name} | {ms:.0f} | {size_bytes / 2**20:.2f} |")
        rows.append(f"| {size}² | **per individual: report / before** | **{report:.0f} / {before:.0f}** "
                    f"({before / report:.1f}×) | |")
    table = "\n".join(["| size | files of one batch | ms | MiB |", "|---|---|---:|---:|", *rows])
    section = (f"### report files — {date.today().isoformat()} — {machine()}\n\n"
               f"`bench/report_files.py`: a batch of {args.batch} photo-like images, one thread (the report's "
               f"writer), medians of {args.repeats} repeats after a warm-up.\n\n{table}\n")
    print(section)
    if args.write:
        append_section("## overhead", section)


if __name__ == "__main__":
    main()
