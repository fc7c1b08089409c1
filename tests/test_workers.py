"""Pinning on running WebUIs over HTTP: embedded-model workers (`python -m lib_pinning serve`) as real processes.

The fan-out must not change a run: the same job on 4 workers, on 1, and in-process gives the same record. Workers
that die are left behind without losing or doubling an individual; workers that render differently are refused.
"""

from __future__ import annotations

import base64
import hashlib
import threading

import pytest

from lib_pinning import cli
from lib_pinning.embedded_run import pin as pin_in_process
from lib_pinning.errors import InputError
from lib_pinning.observer import Observer
from lib_pinning.record import read_record
from lib_pinning.workers import run as workers
from lib_pinning.workers.api import WebUIWorker
from worker_support import (EMBEDDED, NEGATIVE, OVER_HTTP, PROMPT, SEARCH, Zygote, servers, threaded_server,
                            timing_free_search)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def zygote():
    forks = Zygote()
    yield forks
    forks.close()


@pytest.fixture(scope="module")
def four(zygote):
    with servers(zygote, 4, "--checkpoints", "2") as started:
        yield started


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("in-process") / "run"
    return pin_in_process(PROMPT, NEGATIVE, out=out, progress=False, report=False, **EMBEDDED, **SEARCH).record


def pin_on(urls, out=None, report=False, **values):
    return workers.pin(PROMPT, NEGATIVE, webui=[server.url for server in urls], out=out, progress=False,
                       report=report, **{**OVER_HTTP, **SEARCH, **values})


def test_four_workers_one_worker_and_the_model_in_process_give_the_same_run(four, in_process, tmp_path, caplog):
    caplog.set_level("INFO", logger="lib_pinning")
    spread = pin_on(four, tmp_path / "four")
    alone = pin_on(four[:1], tmp_path / "one")
    assert spread.status == alone.status == "done"
    assert timing_free_search(spread.record) == timing_free_search(alone.record) == timing_free_search(in_process)
    assert read_record(tmp_path / "four").render.extra["api"] == "A1111 HTTP API"
    shares = [line for line in caplog.messages if " batches, " in line]
    assert len(shares) == 5 and all(not line.endswith("no batch") for line in shares[:4])  # every worker took some


def test_a_slow_worker_takes_fewer_individuals(four, tmp_path, caplog):
    caplog.set_level("INFO", logger="lib_pinning")
    slow = WebUIWorker(four[0].url)
    slow.set_options({"embedded_render_seconds": 1.5})
    try:
        pin_on(four[:2], tmp_path / "run")
    finally:
        slow.set_options({"embedded_render_seconds": 0.0})
        slow.close()
    counts = {line.split(": ")[0]: int(line.split(": ")[1].split()[0]) for line in caplog.messages
              if " batches, " in line}
    assert counts[four[0].url] * 3 <= counts[four[1].url], counts


def test_workers_with_another_checkpoint_loaded_are_refused_naming_it(four, tmp_path):
    other = WebUIWorker(four[1].url)
    other.set_options({"sd_model_checkpoint": "embedded-p16-s1"})
    try:
        with pytest.raises(InputError, match=r"the workers differ: checkpoint: 'embedded-p16-s0 \[.*\]' on "
                                             rf"{four[0].url}, 'embedded-p16-s1 \[.*\]' on {four[1].url}"):
            pin_on(four[:2], tmp_path / "refused")
        assert not (tmp_path / "refused").exists()
        # --checkpoint loads the asked one where another is loaded, and it stays loaded; not before every check passed
        with pytest.raises(InputError, match="Initial covariance matrix"):
            pin_on(four[:2], tmp_path / "bad", checkpoint="embedded-p16-s1", cmatrix="[[1]]")
        assert WebUIWorker(four[0].url).facts().checkpoint.startswith("embedded-p16-s0 [")
        result = pin_on(four[:2], tmp_path / "asked", checkpoint="embedded-p16-s1", generations=1)
        assert result.record.render.model.startswith("embedded-p16-s1 [")
        assert WebUIWorker(four[0].url).facts().checkpoint.startswith("embedded-p16-s1 [")
    finally:
        for server in four[:2]:
            WebUIWorker(server.url).set_options({"sd_model_checkpoint": "embedded-p16-s0"})
        other.close()


def test_workers_whose_images_differ_are_refused_unless_a_tolerance_allows(four, tmp_path, monkeypatch):
    real = WebUIWorker.render

    def brighter_on_the_second(self, payload, seeds, img2img=False):
        images = real(self, payload, seeds, img2img)
        if self.url == four[1].url:
            images = [image.point(lambda value: min(255, value + 3)) for image in images]
        return images

    monkeypatch.setattr(WebUIWorker, "render", brighter_on_the_second)
    with pytest.raises(InputError, match=rf"{four[1].url} renders your prompt differently from {four[0].url} \(a "
                                         "pixel differs by 3 of 255; the tolerance is 0\\) with the same checkpoint"):
        pin_on(four[:2], tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    assert pin_on(four[:2], tmp_path / "allowed", worker_tolerance=3, generations=1).status == "done"


@pytest.mark.parametrize("change, message", [
    ({"sampler": "Nonesuch"}, r"has no sampler 'Nonesuch'; it has: Euler, Euler a"),
    ({"sampler": "DPM++ 2M Hyperbatch", "scheduler": "Simple"},
     r"has no schedule type 'Simple'; it has: Automatic, Exponential"),
    ({"checkpoint": "sd_xl_base"}, r"has no checkpoint 'sd_xl_base'; it has: embedded-p16-s0 \["),
    ({"width": 16, "height": 24}, r"answered 422 to POST /sdapi/v1/txt2img: the embedded model renders square"),
])
def test_what_a_worker_lacks_is_named_before_anything_is_written(four, tmp_path, change, message):
    with pytest.raises(InputError, match=message):
        pin_on(four[:1], tmp_path / "run", **change)
    assert not (tmp_path / "run").exists()


def test_a_worker_that_is_down_or_not_a_webui_is_named_and_the_command_line_exits_2(four, tmp_path, capsys):
    from worker_support import free_port

    down = f"http://127.0.0.1:{free_port()}"
    code = cli.main(["pin", "--webui", four[0].url, "--webui", down, "--prompt", PROMPT, "--width", "16",
                     "--height", "16", "--retries", "0", "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert code == cli.BAD_INPUT and f"worker {down}: cannot be reached" in error and "--api" in error
    assert not (tmp_path / "run").exists()
    code = cli.main(["pin", "--webui", "ftp://x", "--prompt", PROMPT, "--out", str(tmp_path / "run")])
    assert code == cli.BAD_INPUT and "WebUI (webui): must be an address like http://" in capsys.readouterr().err


def test_credentials_are_given_and_a_refusal_is_named():
    from lib_pinning.options import ServeOptions
    from lib_pinning.workers.api import WorkerError

    with threaded_server(ServeOptions(api_auth="pin:secret")) as url:
        for auth, refused in (("pin:secret", False), ("pin:wrong", True), ("", True)):
            worker = WebUIWorker(url, auth=auth)
            if refused:
                with pytest.raises(WorkerError, match=f"worker {url}: refused the credentials: give its --api-auth"):
                    worker.facts()
            else:
                assert worker.facts().checkpoint.startswith("embedded-p16-s0")
            worker.close()


def test_img2img_starts_from_the_init_image_and_a_resume_with_another_is_refused(four, tmp_path):
    from PIL import Image

    from lib_pinning.embedded import make_prototypes
    from lib_pinning.engine import ResumeRefused
    from lib_pinning.images import image_to_tensor
    from lib_pinning.options import WorkerOptions, parse
    from lib_pinning.report.images import to_pixels
    from lib_pinning.workers.pool import WorkerPool

    init = tmp_path / "init.png"
    Image.fromarray(to_pixels(make_prototypes(16, 16)[5:6])[0]).save(init)
    wanted = image_to_tensor(Image.open(init))
    distance = {}
    for strength in (0.1, 1.0):
        options = parse(WorkerOptions, {**OVER_HTTP, "webui": [four[0].url], "init_image": str(init),
                                        "denoising_strength": strength})
        pool = WorkerPool.connect(options, base64.b64encode(init.read_bytes()).decode())
        images = pool.agree((PROMPT, NEGATIVE)).images
        pool.close()
        distance[strength] = float((images - wanted).abs().mean())
    assert distance[0.1] < 0.02 < 0.1 < distance[1.0]  # a little noise kept it, a full renewal did not

    result = pin_on(four[:1], tmp_path / "run", init_image=str(init), denoising_strength=0.5, generations=1)
    assert result.record.render.extra["init_image_sha256"] == hashlib.sha256(init.read_bytes()).hexdigest()
    Image.fromarray(to_pixels(make_prototypes(16, 16)[6:7])[0]).save(init)  # another picture, the same file name
    with pytest.raises(ResumeRefused, match="init_image_sha256: '"):
        workers.resume(tmp_path / "run", webui=[four[0].url], generations=2, progress=False)


class Kill(Observer):
    """Kills workers a moment after generation `after` is recorded: while the next generation renders."""

    def __init__(self, servers, after=0, delay=0.05):
        self.servers, self.after, self.delay = servers, after, delay

    def on_generation(self, record, generation, rendered):
        if generation.index == self.after:
            threading.Timer(self.delay, lambda: [server.kill() for server in self.servers]).start()


def test_workers_killed_mid_generation_lose_nothing_and_a_run_without_workers_resumes(zygote, in_process, tmp_path):
    with servers(zygote, 3, "--render-seconds", "0.1") as three:
        one_dies = pin_on(three, tmp_path / "one dies", observers=[Kill(three[2:])])
        assert one_dies.status == "done"
        assert timing_free_search(one_dies.record) == timing_free_search(in_process)  # each individual once
        assert any(f"worker {three[2].url}" in notice and "left the run" in notice
                   for notice in one_dies.record.notices)

        all_die = pin_on(three[:2], tmp_path / "all die", observers=[Kill(three[:2], after=1)])
    record = read_record(tmp_path / "all die")
    assert all_die.status == "failed" and record.ending.cause == "fault"
    assert "no worker is left" in record.ending.message and three[0].url in record.ending.message
    assert len(record.generations) == 2  # the finished ones are kept

    with servers(zygote, 1) as back:
        resumed = workers.resume(tmp_path / "all die", webui=[back[0].url], progress=False)
    assert resumed.status == "done"
    assert timing_free_search(resumed.record) == timing_free_search(in_process)


def test_ctrl_c_ends_a_run_on_workers_and_asks_the_busy_worker_to_stop(four, tmp_path):
    import os
    import signal

    slow = WebUIWorker(four[3].url)

    class CtrlC(Observer):
        """After generation 0 the worker takes 60 s a batch; Ctrl-C comes while it renders generation 1."""

        def on_generation(self, record, generation, rendered):
            slow.set_options({"embedded_render_seconds": 60})
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()

    try:
        result = pin_on(four[3:], tmp_path / "run", observers=[CtrlC()], timeout=120)
        assert slow.call("GET", "/sdapi/v1/progress")["state"]["interrupted"]  # told to stop its batch
    finally:
        slow.set_options({"embedded_render_seconds": 0})
        slow.close()
    record = read_record(tmp_path / "run")
    assert result.status == record.status == "interrupted" and record.ending.cause == "interrupt"
    assert len(record.generations) == 1


def test_a_run_on_workers_resumes_only_on_workers(four, tmp_path, capsys):
    pin_on(four[:1], tmp_path / "run", generations=1)
    assert cli.main(["pin", "--resume", str(tmp_path / "run")]) == cli.BAD_INPUT
    assert "rendered by WebUI workers: resume it on workers again (--webui URL)" in capsys.readouterr().err
    assert cli.main(["pin", "--resume", str(tmp_path / "run"), "--webui", four[1].url, "--generations", "2"]) == 0
    assert len(read_record(tmp_path / "run").generations) == 2
    assert (tmp_path / "run" / "index.html").is_file() and (tmp_path / "run" / "best" / "seed-3.png").is_file()
