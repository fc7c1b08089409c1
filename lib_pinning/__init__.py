"""Prompt pinning engine: WebUI-free (never imports A1111's `modules`).

Modules: genome (prompt <-> evolvable words), search (CMA-ES), objective (FLIP loss), flip (torch LDR-FLIP),
embedded (closed-form diffusion model), engine (the pinning loop), cli (`python -m lib_pinning`).
"""

__version__ = "0.1.0"
