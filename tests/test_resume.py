"""Resume: a run interrupted, failed or finished goes on exactly as it would have, or is refused before anything
is written when its inputs differ."""

import shutil

import pytest
from PIL import Image

from lib_pinning.cli import main
from lib_pinning.embedded_run import pin, resume
from lib_pinning.engine import run_pinning
from lib_pinning.errors import InputError
from lib_pinning.job import resume_differences
from lib_pinning.record import read_record
from lib_pinning.report import ReportRecorder, files
from report_support import SEARCH, SMALL, StopAt, small_job
from report_support import without_timings as comparable

RUN = {**SMALL, **SEARCH, "generations": 5}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("whole") / "run"
    result = pin("a red circle, blue sky", "dark", out=folder, **RUN)
    assert result.status == "done"
    return comparable(read_record(folder))


def interrupted_run(folder, at, exception=KeyboardInterrupt(), parallel=None, **values):
    """The same run as `uninterrupted` (with `values` changed), stopped at render call `at`; with `parallel`, the
    renderer takes that many prompts at a time."""
    from lib_pinning.embedded_run import _job, recorded_values  # noqa: F401 (the same job the CLI builds)
    from lib_pinning.options import EmbeddedOptions, PinOptions, parse
    from lib_pinning.runfile import prepare_run_dir

    options = parse(PinOptions, {k: v for k, v in {**RUN, **values}.items() if k in PinOptions.__dataclass_fields__})
    render = parse(EmbeddedOptions, {"prompt": "a red circle, blue sky", "negative_prompt": "dark",
                                     **{k: v for k, v in RUN.items() if k in EmbeddedOptions.__dataclass_fields__}})
    job = _job(options, render, None)
    renderer = job.renderer
    job.renderer = StopAt(at, exception, parallel)(renderer)
    with prepare_run_dir(folder):
        job.run_dir = folder
        job.observers = [ReportRecorder(folder)]
        return run_pinning(job)


@pytest.mark.parametrize("at, exception, status", [
    (3, KeyboardInterrupt(), "interrupted"),        # in generation 1, after generation 0 was saved
    (2, KeyboardInterrupt(), "interrupted"),        # in generation 0, after the baseline
    (5, RuntimeError("CUDA out of memory"), "failed"),  # a fault in generation 3
])
def test_a_resumed_run_ends_with_the_uninterrupted_runs_record(uninterrupted, tmp_path, at, exception, status):
    folder = tmp_path / "run"
    assert interrupted_run(folder, at, exception).status == status
    result = resume(folder, progress=False)
    assert result.status == "done"
    assert comparable(read_record(folder)) == uninterrupted
    individuals = [i for g in read_record(folder).generations for i in g.individuals]
    assert all((folder / i.folder / files.GIF).is_file() for i in individuals)  # the report is whole


def test_a_run_interrupted_inside_the_generation_that_pins_it_resumes_to_the_same_cut(tmp_path):
    pinned = {**RUN, "stop_share": 0.9}  # generation 1 pins the run at its third individual of 4
    whole = pin("a red circle, blue sky", "dark", out=tmp_path / "whole", **pinned)
    assert whole.record.ending.cause == "pinned" and len(whole.record.generations) == 2
    assert whole.record.generations[-1].evaluations == 3
    folder = tmp_path / "run"  # one prompt per render call: the baseline, 4 of generation 0, then 6 and 7
    assert interrupted_run(folder, 7, parallel=1, stop_share=0.9).status == "interrupted"
    assert len(read_record(folder).generations) == 1
    assert resume(folder, progress=False).status == "done"  # resumed by the whole generation: the same cut
    assert comparable(read_record(folder)) == comparable(read_record(tmp_path / "whole"))


def test_resuming_between_generations_and_with_a_larger_budget(uninterrupted, tmp_path, capsys):
    folder = tmp_path / "run"
    short = {**RUN, "generations": 2}
    assert pin("a red circle, blue sky", "dark", out=folder, report=False, **short).status == "done"
    assert main(["pin", "--resume", str(folder), "--generations", "5"]) == 0
    assert comparable(read_record(folder)) == uninterrupted
    assert "run folder: " in capsys.readouterr().out


def test_a_finished_run_resumed_with_its_own_budget_stays_as_it_was(uninterrupted, tmp_path):
    folder = tmp_path / "run"
    pin("a red circle, blue sky", "dark", out=folder, **RUN)
    (folder / files.INDEX).unlink()
    assert resume(folder, progress=False).status == "done"
    assert comparable(read_record(folder)) == uninterrupted and (folder / files.INDEX).is_file()


@pytest.mark.parametrize("changes, says", [
    ({"prompt": "a blue circle"}, "prompt: 'a red circle, blue sky' in the run, 'a blue circle' now"),
    ({"seed": 7}, "seeds: [0, 1, 2] in the run, [7, 8, 9] now"),
    ({"sigma": 0.3}, "sigma: 1.0 in the run, 0.3 now"),
    ({"steps": 5}, "steps: 4 in the run, 5 now"),
    ({"generations": 1}, "generations: the run has 2 finished, 1 asked for now"),
])
def test_a_resume_with_other_inputs_is_refused_naming_them_and_writes_nothing(tmp_path, changes, says):
    folder = tmp_path / "run"
    pin("a red circle, blue sky", "dark", out=folder, **{**RUN, "generations": 2})
    before = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    with pytest.raises(InputError) as refused:
        resume(folder, progress=False, **changes)
    assert says in str(refused.value)
    assert {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()} == before


def test_a_resume_whose_target_file_changed_is_refused(tmp_path, capsys):
    target = tmp_path / "target.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(target)
    folder = tmp_path / "run"
    assert main(["pin", "--prompt", "red circle", "--target", str(target), "--out", str(folder), "--size", "16",
                 "--prototypes", "6", "--batch", "2", "--steps", "3", "--generations", "1", "--lambda", "3",
                 "--quiet"]) == 0
    Image.new("RGB", (16, 16), (30, 200, 30)).save(target)
    assert main(["pin", "--resume", str(folder), "--generations", "2"]) == 2
    assert "its targets differ from the run's" in capsys.readouterr().err


def test_differences_compare_every_setting_the_run_was_made_with():
    stored = small_job(generations=3).record
    assert resume_differences(stored, small_job(generations=3).record) == []
    assert resume_differences(stored, small_job(generations=9, log=True).record) == []  # budget and logbook
    assert resume_differences(stored, small_job(generations=3, keep=["red"]).record)[0].startswith("keep: ")


def test_the_demo_shows_a_search_that_stops_by_itself(tmp_path):
    from lib_pinning.embedded_run import demo
    record = demo(tmp_path / "demo", progress=False, report=False).record  # the search, not its report
    assert record.status == "done" and record.ending.cause == "target"  # not its budget
    assert record.best.generation >= 3 and record.best.loss <= 0.05 < record.baseline.loss / 10


def test_the_demo_can_be_resumed(tmp_path):
    from lib_pinning.embedded_run import demo
    folder = tmp_path / "demo"
    demo(folder, generations=1, seed=0, progress=False, report=False)  # at seed 0 its budget stops it
    assert read_record(folder).options["targets"][0].startswith("embedded prototype ")
    assert read_record(folder).ending.cause == "generations"
    assert resume(folder, generations=2, progress=False, report=False).status == "done"
    assert len(read_record(folder).generations) == 2


def test_a_run_copied_elsewhere_resumes_there(uninterrupted, tmp_path):
    folder = tmp_path / "run"
    interrupted_run(folder, 3)
    moved = shutil.move(str(folder), str(tmp_path / "moved"))
    resume(moved, progress=False, report=False)  # the record is what must not depend on the folder's path
    assert comparable(read_record(moved)) == uninterrupted
