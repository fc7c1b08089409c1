"""One running WebUI (A1111, Forge, or `python -m lib_pinning serve`) through its HTTP API, as a render worker.

Every failure is a `WorkerError` whose message names the worker and says what went wrong in the user's terms (not
running, no --api, credentials refused, too slow, an error answered). A worker that cannot be reached is tried
again `retries` times, a second apart; one that is too slow or answers an error is not (the pool sends its work to
another worker).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import time
from dataclasses import dataclass

import httpx
from PIL import Image, UnidentifiedImageError

RETRY_PAUSE = 1.0  # seconds between tries of a worker that cannot be reached


class WorkerError(Exception):
    """A worker failed; `reachable` is False when it could not be reached at all (down, or gone mid-request)."""

    def __init__(self, url: str, message: str, reachable: bool = True):
        super().__init__(f"worker {url}: {message}")
        self.url, self.reachable = url, reachable


@dataclass
class WorkerFacts:
    """What a worker says of itself before the run."""

    checkpoint: str          # the loaded checkpoint's title
    checkpoint_hash: str     # its hash where the worker says it, else ""
    vae: str                 # the sd_vae setting
    fork_strength: float | None  # the Hyperbatch fork strength setting; None without the extension
    samplers: list[str]
    schedulers: list[str] | None  # names and labels; None where the WebUI has no schedule types (before 1.9)
    checkpoints: list[dict]


class WebUIWorker:
    def __init__(self, url: str, *, auth: str = "", timeout: float = 600.0, retries: int = 2):
        self.url = url.rstrip("/")
        user, _, password = auth.partition(":")
        self.client = httpx.Client(base_url=self.url, auth=(user, password) if auth else None,
                                   timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)), trust_env=False)
        self.timeout, self.retries = timeout, retries
        self.renders = 0         # batches rendered for the run
        self.seconds = 0.0       # their wall time

    def close(self) -> None:
        self.client.close()

    # -- HTTP ----------------------------------------------------------------------------------------------
    def call(self, method: str, path: str, body: dict | None = None, timeout: float | None = None):
        """The JSON answer of `method path`, or a WorkerError."""
        for attempt in range(self.retries + 1):
            try:
                answer = self.client.request(method, path, json=body,
                                             timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout)
                break
            except httpx.TimeoutException:
                raise WorkerError(self.url, f"no answer within {timeout or self.timeout:g} s "
                                  f"({method} {path})") from None
            except (httpx.TransportError, OSError) as error:
                if attempt == self.retries:
                    raise WorkerError(self.url, f"cannot be reached ({_reason(error)}); is it running, started with "
                                      "--api?", reachable=False) from None
                time.sleep(RETRY_PAUSE)
        if answer.status_code == 401:
            raise WorkerError(self.url, "refused the credentials: give its --api-auth user:password with --api-auth")
        if answer.status_code == 404 and path.startswith("/sdapi/"):
            raise WorkerError(self.url, f"has no {path}: start the WebUI with --api")
        if answer.status_code >= 400:
            raise WorkerError(self.url, f"answered {answer.status_code} to {method} {path}: {_detail(answer)}")
        try:
            return answer.json()
        except ValueError:
            raise WorkerError(self.url, f"answered {method} {path} with something that is not JSON: is this an "
                              "A1111 or Forge WebUI?") from None

    # -- what pinning asks of it ---------------------------------------------------------------------------
    def facts(self) -> WorkerFacts:
        settings = self.call("GET", "/sdapi/v1/options")
        samplers = [entry["name"] for entry in self.call("GET", "/sdapi/v1/samplers")]
        try:
            schedulers = [name for entry in self.call("GET", "/sdapi/v1/schedulers")
                          for name in (entry.get("name"), entry.get("label")) if name]
        except WorkerError as error:
            if "has no /sdapi/v1/schedulers" not in str(error):
                raise
            schedulers = None
        strength = settings.get("hyperbatch_fork_strength")
        text = {name: str(settings.get(name) or "") for name in ("sd_model_checkpoint", "sd_checkpoint_hash", "sd_vae")}
        return WorkerFacts(text["sd_model_checkpoint"], text["sd_checkpoint_hash"], text["sd_vae"],
                           None if strength is None else float(strength), samplers, schedulers,
                           list(self.call("GET", "/sdapi/v1/sd-models")))

    def set_options(self, settings: dict) -> None:
        """Change settings (a checkpoint to load: it may take minutes)."""
        self.call("POST", "/sdapi/v1/options", settings, timeout=max(self.timeout, 600.0))

    def render(self, payload: dict, seeds: list[int], img2img: bool = False) -> list[Image.Image]:
        """One batch (txt2img, or img2img): an image per seed, checked to be the seeds asked for."""
        started = time.perf_counter()
        kind = "img2img" if img2img else "txt2img"
        answer = self.call("POST", f"/sdapi/v1/{kind}", payload)
        try:
            info = json.loads(answer.get("info") or "{}")
            images = [_decode(data) for data in answer["images"]]
        except (KeyError, TypeError, ValueError, binascii.Error, UnidentifiedImageError) as error:
            raise WorkerError(self.url, f"answered {kind} with something that is not images ({error})") from None
        if len(images) == len(seeds) + 1:  # a grid in front (the WebUI's "return grid" with a grid saved)
            images = images[1:]
        if len(images) != len(seeds):
            raise WorkerError(self.url, f"returned {len(images)} images for a batch of {len(seeds)}")
        if info.get("all_seeds", seeds)[:len(seeds)] != seeds:
            raise WorkerError(self.url, f"rendered seeds {info.get('all_seeds')}, not {seeds}")
        self.renders += 1
        self.seconds += time.perf_counter() - started
        return images

    def interrupt(self) -> None:
        """Ask the worker to stop its current batch; best effort, never raises."""
        try:
            self.client.post("/sdapi/v1/interrupt", timeout=2.0)
        except (httpx.HTTPError, OSError):
            pass


def _decode(data: str) -> Image.Image:
    if data.startswith("data:"):
        data = data.split(",", 1)[1]
    image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
    image.load()
    return image


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:200]


def _detail(answer: httpx.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return answer.text.strip().splitlines()[0][:300] if answer.text.strip() else "(no message)"
    if isinstance(body, dict):
        for key in ("detail", "error", "errors", "message"):
            if body.get(key):
                return str(body[key])[:300]
    return str(body)[:300]


def wait_until_up(url: str, seconds: float = 60.0) -> None:
    """Wait for a worker that is starting (tests, benchmarks); a WorkerError when it does not answer in time."""
    worker = WebUIWorker(url, timeout=5.0, retries=0)
    deadline = time.monotonic() + seconds
    try:
        while True:
            try:
                worker.call("GET", "/sdapi/v1/options")
                return
            except WorkerError as error:
                if "refused the credentials" in str(error):
                    return  # up, and asking for credentials
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        worker.close()
