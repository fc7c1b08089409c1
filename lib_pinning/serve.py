"""`python -m lib_pinning serve`: the embedded model behind the part of A1111's HTTP API that pinning uses.

txt2img and img2img (seeds, batch, sampler, schedule type, steps, size, CFG, denoising strength, the Hyperbatch
fork strength setting), the
samplers, schedulers, checkpoints and options lists, progress and interrupt, answered as A1111 v1.10 answers them,
on FastAPI and uvicorn as A1111 and Forge run. One render at a time, as a WebUI's queue lock has it. Anyone can try
`pin --webui` without a GPU or weights, and the tests run several of these over real HTTP.

It also serves prompt evolution's routes under /prompt-pinning/v1/ (lib_pinning.evolution_routes) over the loaded
checkpoint's model, its runs in --evolution-dir; on shutdown every waiting run ends interrupted, its finished
generations saved.

Its checkpoints are embedded models of consecutive model seeds, titled by prototypes and seed, so workers with
another model loaded disagree by name as well as by pixels. Images are the embedded renderer's own 8-bit pictures
as PNG: a run against this server scores what an in-process run of the embedded model scores.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import threading
import time
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from .embedded import EmbeddedModel, EmbeddedRenderer
from .embedded_run import breed_prompts, evolution_job, resumed_job
from .errors import InputError
from .evolution import EvolutionService
from .evolution_routes import evolution_router
from .images import decode_image, image_to_tensor
from .job import Job
from .options import FORK_STRENGTH_DEFAULT, MAX_SEED, ServeOptions
from .report.images import png_bytes, to_pixels
from .samplers import SAMPLERS, SCHEDULES

FORK_STRENGTH_SETTING = "hyperbatch_fork_strength"  # the extension's setting, as the WebUI names it
RENDER_SECONDS_SETTING = "embedded_render_seconds"  # this server's own: the least time a batch takes
SCHEDULE_TYPES = {"Automatic": "Karras", **{name: name for name in SCHEDULES}}  # label -> the embedded schedule


class Checkpoint:
    """One embedded model offered as a checkpoint: its title as A1111 lists it ("name [short hash]")."""

    def __init__(self, prototypes: int, model_seed: int):
        self.prototypes, self.model_seed = prototypes, model_seed
        self.name = f"embedded-p{prototypes}-s{model_seed}"
        self.hash = hashlib.sha256(self.name.encode()).hexdigest()
        self.title = f"{self.name} [{self.hash[:10]}]"

    def known_as(self, name: str) -> bool:
        return name in (self.title, self.name, self.hash, self.hash[:10], self.filename)

    @property
    def filename(self) -> str:
        return f"{self.name}.safetensors"

    def listed(self) -> dict:
        return {"title": self.title, "model_name": self.name, "hash": self.hash[:10], "sha256": self.hash,
                "filename": self.filename, "config": None}


class EmbeddedWorker:
    """The embedded model as a WebUI worker: one render at a time, interruptible while it waits out the delay."""

    def __init__(self, options: ServeOptions):
        self.options = options
        self.checkpoints = [Checkpoint(options.prototypes, options.model_seed + index)
                            for index in range(options.checkpoints)]
        self.loaded = self.checkpoints[0]
        self.settings = {FORK_STRENGTH_SETTING: FORK_STRENGTH_DEFAULT, RENDER_SECONDS_SETTING: options.render_seconds}
        self.lock = threading.Lock()
        self.interrupted = threading.Event()
        self.busy = False
        self.draws = np.random.default_rng()  # seed -1 only: A1111 draws a random seed too

    @lru_cache(maxsize=8)  # noqa: B019 - one worker per process, a few models and sizes
    def model(self, checkpoint: Checkpoint, size: int) -> EmbeddedModel:
        return EmbeddedModel(count=checkpoint.prototypes, size=size, seed=checkpoint.model_seed,
                             device=self.options.device)

    def checkpoint(self, name: str) -> Checkpoint:
        for checkpoint in self.checkpoints:
            if checkpoint.known_as(name):
                return checkpoint
        raise ValueError(f"checkpoint not found: {name}")

    def change(self, settings: dict) -> None:
        """Change settings as A1111's POST /sdapi/v1/options does; a checkpoint is loaded and stays."""
        if settings.get("sd_model_checkpoint"):
            self.loaded = self.checkpoint(settings["sd_model_checkpoint"])
        for name in (FORK_STRENGTH_SETTING, RENDER_SECONDS_SETTING):
            if name in settings:
                self.settings[name] = float(settings[name])

    def img2img(self, request: dict) -> dict:
        """img2img from the first init image (resized to the size asked for, as A1111's "just resize")."""
        images = request.get("init_images") or []
        if not images:
            raise ValueError("img2img needs an init image (init_images)")
        size = (int(request.get("width", 512)), int(request.get("height", 512)))
        try:
            picture = decode_image(base64.b64decode(str(images[0]).split(",", 1)[-1], validate=True), "init image")
        except (ValueError, InputError) as error:
            raise ValueError(f"init_images[0]: {error}") from None
        init = image_to_tensor(picture.convert("RGB").resize(size, Image.Resampling.LANCZOS))
        return self.txt2img(request, init, float(request.get("denoising_strength", 0.75)))

    def txt2img(self, request: dict, init=None, denoising_strength: float = 0.75) -> dict:
        width, height = int(request.get("width", 512)), int(request.get("height", 512))
        if width != height:
            raise ValueError(f"the embedded model renders square images: width {width} and height {height} differ")
        sampler = request.get("sampler_name") or request.get("sampler_index") or "Euler"
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler not found: {sampler}")
        asked = str(request.get("scheduler") or "automatic").lower()  # a name or a label, as A1111 takes it
        schedule = next((schedule for label, schedule in SCHEDULE_TYPES.items() if label.lower() == asked), None)
        if schedule is None:
            raise ValueError(f"scheduler not found: {request.get('scheduler')}")
        overrides = request.get("override_settings") or {}
        checkpoint = self.checkpoint(overrides["sd_model_checkpoint"]) if overrides.get("sd_model_checkpoint") \
            else self.loaded
        seed = int(request.get("seed", -1))
        if seed == -1:
            seed = int(self.draws.integers(0, MAX_SEED))
        count = int(request.get("batch_size", 1)) * int(request.get("n_iter", 1))
        seeds = [seed + index for index in range(count)]
        strength = float(overrides.get(FORK_STRENGTH_SETTING, self.settings[FORK_STRENGTH_SETTING]))
        prompt = (str(request.get("prompt", "")), str(request.get("negative_prompt", "")))
        with self.lock:
            self.busy = True
            self.interrupted.clear()
            started = time.monotonic()
            try:
                renderer = EmbeddedRenderer(self.model(checkpoint, width), seeds, steps=int(request.get("steps", 50)),
                                            sampler=sampler, schedule=schedule,
                                            cfg_scale=float(request.get("cfg_scale", 7.0)), fork_strength=strength,
                                            init=init, denoising_strength=denoising_strength)
                (rendered,) = renderer.render([prompt])
                delay = self.settings[RENDER_SECONDS_SETTING] - (time.monotonic() - started)
                self.interrupted.wait(max(0.0, delay))
            finally:
                self.busy = False
        images = [base64.b64encode(png_bytes(pixels)).decode("ascii") for pixels in to_pixels(rendered.images)]
        info = {"prompt": prompt[0], "negative_prompt": prompt[1], "seed": seed, "all_seeds": seeds,
                "sampler_name": sampler, "scheduler": schedule, "steps": int(request.get("steps", 50)),
                "cfg_scale": renderer.cfg_scale, "width": width, "height": height, "sd_model_name": checkpoint.name,
                "sd_model_hash": checkpoint.hash[:10], "sd_vae_name": None, "batch_size": count}
        return {"images": images, "parameters": request, "info": json.dumps(info)}

    def options_now(self) -> dict:
        return {"sd_model_checkpoint": self.loaded.title, "sd_checkpoint_hash": self.loaded.hash,
                "sd_vae": "Automatic", **self.settings}


def evolution_service(worker: EmbeddedWorker, options: ServeOptions) -> EvolutionService:
    """Prompt evolution on the loaded checkpoint's embedded model (rendered in the run's thread, beside the
    worker's own renders), its runs in `options.evolution_dir`."""

    def make_job(prompt: str, negative_prompt: str, values: dict, chooser) -> Job:
        model = {"prototypes": worker.loaded.prototypes, "model_seed": worker.loaded.model_seed,
                 "device": options.device}
        return evolution_job(prompt, negative_prompt, chooser, **{**model, **values})

    return EvolutionService(options.evolution_dir, make_job, resumed_job)


def prompt_breeder(worker: EmbeddedWorker, options: ServeOptions):
    """Breeding two prompts (POST /prompt-pinning/v1/breed) on the loaded checkpoint's embedded model."""

    def breed(first: dict, second: dict, points, values: dict):
        parents = []
        for parent in (first, second):
            if set(parent) - {"prompt", "negative_prompt"} or not all(isinstance(text, str) for text in parent.values()):
                raise InputError("the embedded server breeds prompts: each parent is {\"prompt\": ..., "
                                 "\"negative_prompt\": ...} (text)")
            parents.append((parent.get("prompt", ""), parent.get("negative_prompt", "")))
        model = {"prototypes": worker.loaded.prototypes, "model_seed": worker.loaded.model_seed,
                 "device": options.device}
        return breed_prompts(*parents, points, **{**model, **values})

    return breed


def make_app(options: ServeOptions):
    from fastapi import Body, Depends, FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse
    from fastapi.security import HTTPBasic, HTTPBasicCredentials

    worker = EmbeddedWorker(options)
    basic = HTTPBasic(auto_error=False)
    evolution = evolution_service(worker, options)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        evolution.shutdown()  # every evolution run ends interrupted, its finished generations saved

    def authorised(credentials: HTTPBasicCredentials | None = Depends(basic)) -> None:
        if not options.api_auth:
            return
        given = f"{credentials.username}:{credentials.password}" if credentials else ""
        if not secrets.compare_digest(given.encode(), options.api_auth.encode()):
            raise HTTPException(401, "Incorrect username or password", headers={"WWW-Authenticate": "Basic"})

    app = FastAPI(title="sd-prompt-pinning embedded worker", dependencies=[Depends(authorised)], lifespan=lifespan)
    app.state.worker, app.state.evolution = worker, evolution
    app.include_router(evolution_router(evolution, prompt_breeder(worker, options)))

    @app.exception_handler(ValueError)
    @app.exception_handler(TypeError)
    def refused(request: Request, error: Exception) -> JSONResponse:
        """A request the worker cannot render (a bad value, an unknown sampler or checkpoint): 422 with why."""
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.post("/sdapi/v1/txt2img")
    def txt2img(request: dict[str, Any] = Body(...)) -> dict:
        return worker.txt2img(request)

    @app.post("/sdapi/v1/img2img")
    def img2img(request: dict[str, Any] = Body(...)) -> dict:
        return worker.img2img(request)

    @app.get("/sdapi/v1/samplers")
    def samplers() -> list:
        return [{"name": name, "aliases": [], "options": {}} for name in SAMPLERS]

    @app.get("/sdapi/v1/schedulers")
    def schedulers() -> list:
        return [{"name": label.lower(), "label": label} for label in SCHEDULE_TYPES]

    @app.get("/sdapi/v1/sd-models")
    def models() -> list:
        return [checkpoint.listed() for checkpoint in worker.checkpoints]

    @app.get("/sdapi/v1/sd-vae")
    def vaes() -> list:
        return []

    @app.get("/sdapi/v1/options")
    def get_options() -> dict:
        return worker.options_now()

    @app.post("/sdapi/v1/options")
    def set_options(settings: dict[str, Any] = Body(...)) -> None:
        worker.change(settings)

    @app.get("/sdapi/v1/progress")
    def progress() -> dict:
        return {"progress": 0.0, "eta_relative": 0.0, "current_image": None, "textinfo": None,
                "state": {"skipped": False, "interrupted": worker.interrupted.is_set(), "job": "",
                          "job_count": int(worker.busy), "job_no": 0, "sampling_step": 0, "sampling_steps": 0}}

    @app.post("/sdapi/v1/interrupt")
    def interrupt() -> None:
        worker.interrupted.set()

    return app


def serve(options: ServeOptions) -> None:
    """Answer requests until Ctrl-C or SIGTERM (uvicorn's own handling)."""
    import uvicorn

    loaded = Checkpoint(options.prototypes, options.model_seed).title
    print(f"embedded worker ({loaded}) on http://{options.host}:{options.port}", flush=True)
    uvicorn.run(make_app(options), host=options.host, port=options.port, log_level="warning")
