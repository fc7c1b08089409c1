"""What a run leaves on disk besides run.json: the engine reports events, a Recorder writes files.

`Recorder` does nothing (a run without a folder); `lib_pinning.report.ReportRecorder` writes the report.
"""

from __future__ import annotations

import torch


class RecordingError(RuntimeError):
    """Raised by `on_finish` when some report files could not be written; the search's results are intact."""


class Recorder:
    """Receives the run's events; every hook is optional. Hooks must not modify what they are given."""

    def on_start(self, record: dict) -> None:
        pass

    def on_baseline(self, record: dict, images: torch.Tensor, targets: torch.Tensor | None) -> None:
        pass

    def on_generation(self, record: dict, generation: dict, images: list[torch.Tensor]) -> None:
        pass

    def on_finish(self, record: dict, best_images: torch.Tensor | None) -> None:
        pass


def infotext(prompt: str, negative_prompt: str, seed: int, options: dict) -> str:
    """A1111's PNG `parameters` text, so a saved image can be sent back to txt2img."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    settings = {"Steps": options.get("steps"), "Sampler": options.get("sampler"),
                "Schedule type": options.get("schedule"), "CFG scale": options.get("cfg_scale"), "Seed": seed,
                "Size": _size(options)}
    lines.append(", ".join(f"{key}: {value}" for key, value in settings.items() if value is not None))
    return "\n".join(lines)


def _size(options: dict) -> str | None:
    if "width" in options and "height" in options:
        return f"{options['width']}x{options['height']}"
    return f"{options['size']}x{options['size']}" if "size" in options else None
