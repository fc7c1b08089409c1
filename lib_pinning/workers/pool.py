"""The engine's renderer over running WebUIs: each generation's individuals spread over the workers.

Every worker takes the next individual as soon as it is free, so each renders in proportion to its speed. A
worker that cannot be reached, is too slow or answers an error leaves the run: its individual goes back to the
queue and another worker renders it (a late answer from a worker that left is never used, so nothing is counted
twice). The run stops with a `WorkersGone` fault only when no worker is left.

Before the run, `WorkerPool.connect` checks that every worker is up and has the sampler, the schedule type, the
checkpoint and the VAE, with one message naming every problem, and `agree` renders the unperturbed prompt on
every worker: workers whose images differ (another checkpoint, VAE, precision or WebUI version) are refused,
with what differs named, unless the user allows a tolerance.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any
from concurrent.futures import ThreadPoolExecutor

import torch

from ..errors import InputError
from ..forks import is_hyperbatch_sampler
from ..images import image_to_tensor
from ..options import WorkerOptions
from ..rendering import Rendered
from .api import WebUIWorker, WorkerError, WorkerFacts

log = logging.getLogger(__name__)
WAIT_SLICE = 0.2  # seconds: how often the waiting thread wakes (so that Ctrl-C is prompt)


class WorkersGone(RuntimeError):
    """No worker is left to render: the run fails, keeping its finished generations."""


class WorkerPool:
    def __init__(self, workers: Sequence[WebUIWorker], options: WorkerOptions, facts: WorkerFacts,
                 init_image: str | None = None, switches: Sequence[dict] = ()):
        self.init_image = init_image  # img2img: the init image's file as base64; None: txt2img
        self.workers = list(workers)
        self.alive = list(workers)
        self.options = options
        self.facts = facts
        self.seeds = [options.seed + index for index in range(options.batch)]
        self.fork_strength = facts.fork_strength
        self._agreed: tuple[tuple[str, str], Rendered] | None = None
        self._switches = list(switches)  # settings each worker loads before it renders (per worker, or none)
        self._notices: list[str] = []
        self._lock = threading.Condition()

    # -- before the run ------------------------------------------------------------------------------------
    @classmethod
    def connect(cls, options: WorkerOptions, init_image: str | None = None) -> WorkerPool:
        """Every worker asked what it has; an InputError names every worker that is down or lacks something.
        `init_image`: the base64 of the init image's file, for img2img."""
        if not options.webui:
            raise InputError("WebUI (webui): give at least one worker address, e.g. --webui http://127.0.0.1:7860")
        workers = [WebUIWorker(url, auth=options.api_auth, timeout=options.timeout, retries=options.retries)
                   for url in options.webui]
        with ThreadPoolExecutor(len(workers)) as executor:
            answers = list(executor.map(lambda worker: _attempt(worker.facts), workers))
        problems = [str(answer) for answer in answers if isinstance(answer, WorkerError)]
        if not problems:
            problems = [problem for worker, facts in zip(workers, answers)
                        for problem in _lacks(worker, facts, options)]
        if problems:
            _close(workers)
            raise InputError("; ".join(problems))
        switches = [_switches(facts, options) for facts in answers]
        answers = [_after(facts, switch) for facts, switch in zip(answers, switches)]
        differences = _differences(workers, answers)
        if differences:
            _close(workers)
            raise InputError("the workers differ: " + "; ".join(differences))
        return cls(workers, options, answers[0], init_image, switches)

    def agree(self, prompt: tuple[str, str]) -> Rendered:
        """Render `prompt` on every worker; refuse (InputError) when their images differ by more than the tolerance.

        The first worker's batch is kept: the engine's first render (the same prompt) gets it without rendering.
        Workers with another checkpoint or VAE loaded than the one asked for load it first (and keep it loaded).
        """
        for worker, settings in zip(self.workers, self._switches):
            if settings:
                log.info("worker %s: loading %s", worker.url, ", ".join(settings.values()))
                try:
                    worker.set_options(settings)
                except WorkerError as error:
                    self.close()
                    raise InputError(str(error)) from None
        self._switches = []
        with ThreadPoolExecutor(len(self.workers)) as executor:
            batches = list(executor.map(lambda worker: _attempt(lambda: self._images(worker, prompt)), self.workers))
        failed = [str(batch) for batch in batches if isinstance(batch, WorkerError)]
        if failed:
            self.close()
            raise InputError("; ".join(failed))
        first = batches[0]
        for worker, batch in zip(self.workers[1:], batches[1:]):
            if batch.shape != first.shape:
                self.close()
                raise InputError(f"the workers differ: {worker.url} renders {tuple(batch.shape[-2:])} pixels, "
                                 f"{self.workers[0].url} {tuple(first.shape[-2:])}")
            largest = round(float((batch - first).abs().max()) * 255)  # 8-bit pictures: whole levels
            if largest > self.options.worker_tolerance:
                self.close()
                raise InputError(
                    f"the workers differ: {worker.url} renders your prompt differently from {self.workers[0].url} "
                    f"(a pixel differs by {largest} of 255; the tolerance is {self.options.worker_tolerance:g}) "
                    "with the same checkpoint and VAE: their precision, WebUI version or settings differ; allow it "
                    "with --worker-tolerance, or pin on one of them")
        rendered = Rendered(first)
        self._agreed = (prompt, rendered)
        return rendered

    # -- the renderer --------------------------------------------------------------------------------------
    def render(self, prompts: Sequence[tuple[str, str]]) -> list[Rendered]:
        if self._agreed is not None and list(prompts) == [self._agreed[0]]:
            rendered, self._agreed = self._agreed[1], None
            return [rendered]
        self._agreed = None
        results: list[Rendered | None] = [None] * len(prompts)
        queue = deque(range(len(prompts)))
        state = {"in_flight": 0, "stopped": False}
        errors: list[str] = []
        threads = [threading.Thread(target=self._work, args=(worker, prompts, queue, results, state, errors),
                                    daemon=True, name=f"worker {worker.url}") for worker in list(self.alive)]
        for thread in threads:
            thread.start()
        try:
            with self._lock:
                while any(result is None for result in results):
                    if not self.alive:
                        raise WorkersGone("no worker is left: " + "; ".join(errors))
                    self._lock.wait(WAIT_SLICE)
        except BaseException:  # Ctrl-C, or no worker left: busy workers are asked to stop
            with self._lock:
                state["stopped"] = True
                self._lock.notify_all()
            for worker in self.alive:
                worker.interrupt()
            raise
        return results

    def _work(self, worker: WebUIWorker, prompts, queue: deque, results: list, state: dict, errors: list) -> None:
        """One worker's loop: take the next individual, render it; on a failure, hand it back and leave the run."""
        while True:
            with self._lock:
                while not queue and state["in_flight"] and not state["stopped"]:
                    self._lock.wait()
                if not queue or state["stopped"]:
                    return
                index = queue.popleft()
                state["in_flight"] += 1
            try:
                batch = self._images(worker, prompts[index])
            except Exception as failure:  # noqa: BLE001 - whatever it is, this worker's part goes to another
                error = failure if isinstance(failure, WorkerError) else \
                    WorkerError(worker.url, f"{type(failure).__name__}: {failure}")
                with self._lock:
                    queue.appendleft(index)
                    state["in_flight"] -= 1
                    if worker in self.alive:
                        self.alive.remove(worker)
                    errors.append(str(error))
                    left = len(self.alive)
                    if left:
                        self._notices.append(f"{error}: it left the run, its individual was rendered on another "
                                             f"worker ({_workers(left)} left)")
                    self._lock.notify_all()
                log.warning("%s: it leaves the run (%s left)", error, _workers(left))
                return
            with self._lock:
                state["in_flight"] -= 1
                if not state["stopped"]:
                    results[index] = Rendered(batch)
                self._lock.notify_all()

    def _images(self, worker: WebUIWorker, prompt: tuple[str, str]) -> torch.Tensor:
        images = worker.render(self.payload(prompt), self.seeds, img2img=self.init_image is not None)
        return torch.stack([image_to_tensor(image) for image in images])

    def payload(self, prompt: tuple[str, str]) -> dict:
        """The txt2img (or img2img) request of one batch: the run's settings, nothing saved on the worker."""
        options = self.options
        overrides = {}
        if is_hyperbatch_sampler(options.sampler) and self.fork_strength is not None:
            overrides["hyperbatch_fork_strength"] = self.fork_strength
        if self.init_image is not None:
            overrides["img2img_fix_steps"] = False  # the steps the run's tree weighting counts (A1111's default)
        request = {"prompt": prompt[0], "negative_prompt": prompt[1], "seed": self.seeds[0], "subseed": self.seeds[0],
                   "subseed_strength": 0, "batch_size": len(self.seeds), "n_iter": 1, "steps": options.steps,
                   "sampler_name": options.sampler, "scheduler": options.scheduler, "cfg_scale": options.cfg_scale,
                   "width": options.width, "height": options.height, "restore_faces": False, "tiling": False,
                   "do_not_save_samples": True, "do_not_save_grid": True, "save_images": False, "send_images": True,
                   "override_settings": overrides, "override_settings_restore_afterwards": True}
        if self.init_image is None:
            return {**request, "enable_hr": False}
        return {**request, "init_images": [self.init_image], "denoising_strength": options.denoising_strength,
                "resize_mode": 0, "include_init_images": False}

    def take_notices(self) -> list[str]:
        with self._lock:
            notices, self._notices = self._notices, []
        return notices

    def speeds(self) -> list[str]:
        """Each worker's share of the run, for the console."""
        lines = []
        for worker in self.workers:
            share = f"{worker.renders} batches, {worker.seconds / worker.renders:.2f} s each" if worker.renders \
                else "no batch"
            lines.append(f"{worker.url}: {share}" + ("" if worker in self.alive else " (left the run)"))
        return lines

    def close(self) -> None:
        _close(self.workers)


def _workers(count: int) -> str:
    return f"{count} worker{'' if count == 1 else 's'}"


def _attempt(call: Callable[[], Any]) -> Any:
    """The call's answer, or the WorkerError it raised (to gather every worker's answer before judging)."""
    try:
        return call()
    except WorkerError as error:
        return error


def _lacks(worker: WebUIWorker, facts: WorkerFacts, options: WorkerOptions) -> list[str]:
    problems = []
    if options.sampler not in facts.samplers:
        hint = " (the Hyperbatch samplers need this extension installed there)" if \
            is_hyperbatch_sampler(options.sampler) else ""
        problems.append(f"worker {worker.url} has no sampler {options.sampler!r}{hint}; it has: "
                        f"{', '.join(facts.samplers)}")
    if facts.schedulers is not None and options.scheduler not in facts.schedulers:
        problems.append(f"worker {worker.url} has no schedule type {options.scheduler!r}; it has: "
                        f"{', '.join(sorted(set(facts.schedulers)))}")
    if options.checkpoint and _checkpoint(facts, options.checkpoint) is None:
        problems.append(f"worker {worker.url} has no checkpoint {options.checkpoint!r}; it has: "
                        f"{', '.join(entry.get('title', '?') for entry in facts.checkpoints)}")
    return problems


def _checkpoint(facts: WorkerFacts, name: str) -> dict | None:
    """The checkpoint `name` (a title, model name, file name or hash) among the worker's."""
    for entry in facts.checkpoints:
        if name in (entry.get("title"), entry.get("model_name"), entry.get("hash"), entry.get("sha256"),
                    entry.get("filename")) or (entry.get("filename") or "").endswith("/" + name):
            return entry
    return None


def _switches(facts: WorkerFacts, options: WorkerOptions) -> dict:
    """The settings a worker must load for the run: the asked checkpoint and VAE where another is loaded."""
    settings = {}
    if options.checkpoint:
        title = _checkpoint(facts, options.checkpoint)["title"]
        if title != facts.checkpoint:
            settings["sd_model_checkpoint"] = title
    if options.vae and options.vae != facts.vae:
        settings["sd_vae"] = options.vae
    return settings


def _after(facts: WorkerFacts, settings: dict) -> WorkerFacts:
    """The worker's facts once `settings` are loaded."""
    if "sd_model_checkpoint" in settings:
        entry = _checkpoint(facts, settings["sd_model_checkpoint"])
        facts = dataclasses.replace(facts, checkpoint=entry["title"], checkpoint_hash=entry.get("sha256") or "")
    if "sd_vae" in settings:
        facts = dataclasses.replace(facts, vae=settings["sd_vae"])
    return facts


def _differences(workers: Sequence[WebUIWorker], answers: Sequence[WorkerFacts]) -> list[str]:
    first, reference = answers[0], workers[0].url
    found = []
    for worker, facts in zip(workers[1:], answers[1:]):
        same_title = facts.checkpoint == first.checkpoint
        for what, mine, theirs in (("checkpoint", facts.checkpoint, first.checkpoint),
                                   ("checkpoint hash", facts.checkpoint_hash if same_title else "",
                                    first.checkpoint_hash if same_title else ""),
                                   ("VAE", facts.vae, first.vae)):
            if mine != theirs:
                found.append(f"{what}: {theirs!r} on {reference}, {mine!r} on {worker.url}")
    return found


def _close(workers: Sequence[WebUIWorker]) -> None:
    for worker in workers:
        worker.close()
