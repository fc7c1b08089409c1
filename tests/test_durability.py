"""A run never loses work: what the run folder holds before, during and after a run, whatever goes wrong.

Each case failed on main before these changes (measured there: folders emptied before exit 2, two runs sharing a
folder, images lost to a second Ctrl-C, a run.json left "running" by SIGTERM or a NaN).
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lib_pinning.cli import main
from lib_pinning.embedded_run import pin
from lib_pinning.errors import InputError
from lib_pinning.observer import Observer
from lib_pinning.record import read_record
from lib_pinning.report import files
from lib_pinning.runfile import prepare_run_dir
from report_support import SEARCH, SMALL

ROOT = Path(__file__).resolve().parents[1]
ARGV = ["pin", "--prompt", "a red circle", "--size", "16", "--prototypes", "6", "--batch", "2", "--steps", "3",
        "--generations", "2", "--lambda", "3", "--quiet"]


def snapshot(folder: Path) -> dict:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "/"
            for path in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("earlier") / "run"
    assert main(ARGV + ["--out", str(folder)]) == 0
    return folder


# --- --out holds an earlier run and nothing else, or it is left alone ----------------------------------


def test_an_earlier_run_alone_is_replaced(earlier_run, tmp_path, capsys):
    import shutil
    folder = shutil.copytree(earlier_run, tmp_path / "run")
    assert main(ARGV + ["--out", str(folder), "--prompt", "a blue square"]) == 0
    assert read_record(folder).prompt == "a blue square"


@pytest.mark.parametrize("make, says", [
    (lambda folder: (folder / "run.json").mkdir(), "holds no earlier run"),
    (lambda folder: (folder / "run.json").write_text("{}"), "holds no earlier run"),
    (lambda folder: (folder / "notes.txt").write_text("mine"), "not empty" if False else "holds no earlier run"),
])
def test_a_folder_that_is_not_an_earlier_run_is_left_alone(tmp_path, capsys, make, says):
    folder = tmp_path / "out"
    folder.mkdir()
    make(folder)
    (folder / "mine.txt").write_text("the user's")
    before = snapshot(folder)
    assert main(ARGV + ["--out", str(folder)]) == 2
    assert says in capsys.readouterr().err
    assert snapshot(folder) == before


def test_an_earlier_run_with_other_files_beside_it_is_left_alone(earlier_run, tmp_path, capsys):
    import shutil
    folder = shutil.copytree(earlier_run, tmp_path / "run")
    (folder / "notes.txt").write_text("the user's")
    before = snapshot(folder)
    assert main(ARGV + ["--out", str(folder)]) == 2
    assert "holds an earlier run and other files too (notes.txt)" in capsys.readouterr().err
    assert snapshot(folder) == before


@pytest.mark.parametrize("args", [
    ["--seed", "-1"], ["--cma-seed", "-2"], ["--seed", str(2**64)], ["--prompt", "price \udcff tag"],
    ["--sigma", "1e300"], ["--init-radius", "1e300"], ["--cfg-scale", "1e300"], ["--cmatrix", "[[1e300]]"],
    ["--prompt", "(" * 1000 + "cat" + ")" * 1000], ["--ccovmu", "5"], ["--ccov1", "5"], ["--cmatrix", "[[Infinity]]"],
    ["--hyperbatch-weight-scale", "1e300"], ["--batch", "100000"], ["--size", "100000"],
    ["--prompt", " ".join(f"w{i}" for i in range(5000))],
])
def test_every_check_runs_before_an_earlier_run_is_touched(earlier_run, tmp_path, capsys, args):
    import shutil
    folder = shutil.copytree(earlier_run, tmp_path / "run")
    before = snapshot(folder)
    assert main(ARGV + ["--out", str(folder)] + args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert snapshot(folder) == before


def test_the_limits_say_what_they_are_and_how_to_stay_within_them(tmp_path, capsys):
    assert main(ARGV + ["--out", str(tmp_path / "run"), "--prompt", " ".join(f"w{i}" for i in range(5000))]) == 2
    err = capsys.readouterr().err
    assert "words to pin: at most 1000 can be" in err and "--granularity tag" in err and "--keep" in err
    assert main(ARGV + ["--out", str(tmp_path / "run"), "--prompt", "(" * 1000 + "cat" + ")" * 1000]) == 2
    assert "at most 1000.0 either way" in capsys.readouterr().err


# --- one run at a time in a folder --------------------------------------------------------------------------


def test_a_second_run_into_a_folder_being_written_is_refused(tmp_path):
    folder = tmp_path / "run"
    started, release = threading.Event(), threading.Event()

    class Holding(Observer):
        def on_baseline(self, record, rendered, targets):
            started.set()
            release.wait(30)

    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", pin(
        "a red circle", out=folder, observers=[Holding()], **{**SMALL, **SEARCH})))
    first.start()
    assert started.wait(60)
    before = snapshot(folder)
    with pytest.raises(InputError, match="is being written by another run"):
        pin("a blue square", out=folder, **{**SMALL, **SEARCH})
    assert snapshot(folder) == before
    release.set()
    first.join(120)
    assert results["first"].status == "done" and read_record(folder).prompt == "a red circle"
    with prepare_run_dir(folder):  # free again once the run has ended
        pass


# --- faults and signals end the run with its record saved -------------------------------------------------


class NaNImages(Observer):
    pass


def test_a_nan_mid_run_leaves_a_valid_record_that_says_failed_and_why(tmp_path, capsys, monkeypatch):
    import torch

    import lib_pinning.embedded_run as embedded_run
    from lib_pinning.embedded import EmbeddedRenderer
    from lib_pinning.rendering import Rendered

    class NaNAfterTwo(EmbeddedRenderer):
        calls = 0

        def render(self, prompts):
            NaNAfterTwo.calls += 1
            rendered = super().render(prompts)
            if NaNAfterTwo.calls > 2:
                rendered[-1] = Rendered(torch.full_like(rendered[-1].images, float("nan")))
            return rendered

    monkeypatch.setattr(embedded_run, "EmbeddedRenderer", NaNAfterTwo)
    assert main(ARGV + ["--out", str(tmp_path / "run"), "--generations", "4"]) == 1
    record = read_record(tmp_path / "run")  # readable: nothing non-finite was recorded
    assert record.status == "failed" and record.ending.cause == "fault" and "NaN" in record.ending.message
    assert len(record.generations) == 1
    assert "error: the run failed: ValueError: flip: images contains NaN values" in capsys.readouterr().err


def test_a_cma_state_that_turns_non_finite_fails_the_run_with_its_record(tmp_path, monkeypatch):
    from lib_pinning.search import Search
    state = Search.state

    def broken(self):
        values = state(self)
        return {**values, "sigma": float("inf")} if self.generation > 1 else values

    monkeypatch.setattr(Search, "state", broken)
    result = pin("a red circle", out=tmp_path / "run", **{**SMALL, **SEARCH})
    record = read_record(tmp_path / "run")
    assert result.status == record.status == "failed" and "no longer finite after generation 1" in record.ending.message
    assert len(record.generations) == 1


SLOW_REPORT = """
import sys, time
import lib_pinning.report.writers as writers
write_individual = writers.write_individual
def slow(*args, **kwargs):
    time.sleep(0.4)
    write_individual(*args, **kwargs)
writers.write_individual = slow
import lib_pinning.report.recorder as recorder
recorder.write_individual = slow
from lib_pinning.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_cli(tmp_path, args, code=SLOW_REPORT):
    script = tmp_path / "cli.py"
    script.write_text(code)
    return subprocess.Popen([sys.executable, str(script), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def wait_for(predicate, seconds=120):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.slow
def test_ctrl_c_twice_while_the_report_is_written_loses_no_image(tmp_path):
    """Two Ctrl-C: the first ends the run, the second (while the slow report is still being written) skips
    the derived files; every individual's images are on disk, and the report shows what exists."""
    folder = tmp_path / "run"
    process = run_cli(tmp_path, ARGV + ["--out", str(folder), "--generations", "50", "--lambda", "4", "--first-look",
                                        "0"])
    wait_for(lambda: (folder / "run.json").exists() and len(json.loads((folder / "run.json").read_text())[
        "generations"]) >= 3)
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    record = read_record(folder)
    assert record.status == "interrupted" and record.ending.cause == "interrupt" and len(record.generations) >= 3
    for generation in record.generations:
        for individual in generation.individuals:
            for seed in record.render.seeds:
                assert (folder / individual.folder / files.image_name(seed)).is_file(), individual.folder
    assert (folder / files.INDEX).is_file() and (folder / "best" / "seed-0.png").is_file()
    assert main(["report", str(folder)]) == 0  # the skipped files can be made again


@pytest.mark.slow
def test_sigterm_ends_a_run_like_ctrl_c(tmp_path):
    folder = tmp_path / "run"
    process = run_cli(tmp_path, ARGV + ["--out", str(folder), "--generations", "50", "--first-look", "0"])
    wait_for(lambda: (folder / "run.json").exists() and json.loads((folder / "run.json").read_text())["generations"])
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 143, err
    record = read_record(folder)
    assert record.status == "interrupted" and record.ending.cause == "signal"
    assert "status: interrupted (signal: stopped after" in out


def test_error_lines_go_to_stderr(tmp_path, capsys, monkeypatch):
    import lib_pinning.engine as engine

    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine, "write_bytes_atomic", full_disk)
    assert main(ARGV + ["--out", str(tmp_path / "run")]) == 1
    captured = capsys.readouterr()
    assert "could not write run.json" in captured.err and "could not write run.json" not in captured.out.replace(
        "status: failed (record: could not write run.json", "")


def test_ctrl_c_while_a_generation_is_being_recorded_waits_for_its_images(tmp_path):
    """A Ctrl-C that lands after a generation was scored, while it enters the record (here: as it improves the
    best), takes effect once the generation is saved with its images queued: the record never names an
    individual whose images were not written, nor a best outside its generations."""

    class CtrlCOnABetterIndividual(Observer):
        def on_best(self, record, rendered):
            if record.best.generation >= 1:
                os.kill(os.getpid(), signal.SIGINT)

    folder = tmp_path / "run"
    result = pin("a red circle", out=folder, observers=[CtrlCOnABetterIndividual()], **SMALL,
                 **{**SEARCH, "generations": 30, "first_look": 0})
    record = read_record(folder)  # consistent: its best is one of its individuals
    assert result.status == record.status == "interrupted" and record.best.generation >= 1
    assert len(record.generations) == record.best.generation + 1  # the generation it was in, finished
    for generation in record.generations:
        for individual in generation.individuals:
            for seed in record.render.seeds:
                assert (folder / individual.folder / files.image_name(seed)).is_file(), individual.folder
