"""Prompt pinning engine: WebUI-free (never imports A1111's `modules`).

Prompt text: emphasis (A1111's attention syntax), words (CLIP's word units), frozen_syntax (parts never evolved),
genome (prompt <-> evolvable words and the pinned prompt). Search: search (CMA-ES). Scoring: flip (torch
LDR-FLIP), objective (the loss). Rendering: embedded (closed-form diffusion model), noise (seeded noise),
samplers (k-diffusion by name), hyperbatch (forking samplers). The loop: engine, recorder, runfile, report/
(the run report), cli (`python -m lib_pinning`).
"""

__version__ = "0.1.0"
