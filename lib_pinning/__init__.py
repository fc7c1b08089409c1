"""Prompt pinning engine: WebUI-free (never imports A1111's `modules` outside lib_pinning.webui).

Options: options (every user option, typed, once), errors (bad input). Prompt text: emphasis (A1111's attention
syntax), words (CLIP's word units), frozen_syntax (parts never evolved), genome (prompt <-> evolvable words and the
pinned prompt), tags (prompt <-> tags present or absent). Search: search (CMA-ES), genetic (a genetic algorithm over
tags, for prompt evolution). Scoring: flip (torch LDR-FLIP), losses (loss modes, Hyperbatch tree
weighting), objective (the loss of a batch), images (target images), chooser (a person's choice as the fitness:
prompt evolution), breeding (children of two candidates' genes, and of two prompts' conditioning), winners (which
words the chosen individuals raised, or which tags they had). Rendering: rendering (the renderer
protocol), embedded (closed-form diffusion model), noise (seeded noise), samplers (k-diffusion by name), forks
and hyperbatch (forking samplers). The run: job (the one job builder), engine (the loop), record (run.json),
observer (progress, best, log lines), runfile (run folders), runner (a job run in its folder), report/ (the run
report), embedded_run (`pin`, `demo`, `evolve`, `breed_prompts`), evolution and evolution_routes (prompt evolution
runs driven over HTTP or from a tab), workers/ (pinning on running WebUIs over HTTP), serve (the embedded model as
such a WebUI), cli (`python -m lib_pinning`).

`from lib_pinning import pin, evolve, breed_prompts, resume, demo` runs on the embedded model (lib_pinning.embedded_run).
"""

__version__ = "0.2.0"


def __getattr__(name):  # these load torch and k-diffusion: only when asked for
    if name in ("pin", "evolve", "breed_prompts", "resume", "demo"):
        from . import embedded_run
        return getattr(embedded_run, name)
    raise AttributeError(f"module 'lib_pinning' has no attribute {name!r}")
