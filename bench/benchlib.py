"""What the bench scripts share: the machine's description and appending a dated section to BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_FILE = ROOT / "docs" / "BENCHMARKS.md"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the scripts run as `python bench/NAME.py` from a checkout


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine(device: torch.device | str = "cpu") -> str:
    device = torch.device(device)
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"nproc {os.cpu_count()}, {cpu_model()}, torch {torch.__version__}, device {device}{gpu}, "
            f"{torch.get_num_threads()} torch thread(s)")


def append_section(heading: str, text: str, path: Path = BENCHMARKS_FILE) -> None:
    """Append `text` at the end of the `heading` section (created at the end of the file when missing)."""
    lines = path.read_text().splitlines() if path.exists() else []
    if heading not in lines:
        lines += ["", heading, ""]
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    lines[end:end] = ["", *text.strip("\n").splitlines(), ""]
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
