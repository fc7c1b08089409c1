import math
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from deap import creator

from lib_pinning.cli import main
from lib_pinning.embedded import EmbeddedModel, EmbeddedRenderer
from lib_pinning.embedded_run import pin
from lib_pinning.engine import LOSS_TIE, run_pinning
from lib_pinning.objective import Objective
from lib_pinning.observer import Observer
from lib_pinning.record import read_record
from report_support import SEARCH, SMALL, StopAt, small_job, without_timings

RUN = {**SMALL, **SEARCH}


def test_run_json_records_every_generation_and_the_best(tmp_path):
    result = pin("a red circle, blue sky", "dark", out=tmp_path / "run", **RUN)
    record = read_record(tmp_path / "run")
    assert record.status == result.status == "done" and record.ending.cause == "generations"
    assert record.genome.words == ["a", "red", "circle", "blue", "sky"]  # the comma is punctuation: not a gene
    assert record.genome.negative_words == ["dark"]
    assert [g.index for g in record.generations] == [0, 1, 2]
    assert record.objective.target_count == 3 and record.objective.target_source == "baseline"
    for generation in record.generations:
        assert generation.evaluations == len(generation.individuals) == 4
        losses = [i.loss for i in generation.individuals]
        assert generation.best_loss == min(losses)
        assert generation.mean_loss == pytest.approx(np.mean(losses))
        for individual in generation.individuals:
            assert len(individual.weights) == 6 and individual.folder == f"{generation.index:08d}/{individual.id}"
            assert len(individual.pair_losses) == len(record.objective.pairs)
    best = record.best
    every = [(record.baseline.loss, [0.0] * 6, "baseline")] + [
        (i.loss, i.weights, i.folder) for g in record.generations for i in g.individuals]
    lowest = min(loss for loss, _, _ in every)
    assert best.loss <= lowest + LOSS_TIE
    # Among the (near-)lowest losses, the best is the one closest to the user's prompt.
    near = [np.linalg.norm(weights) for loss, weights, _ in every if loss <= lowest + LOSS_TIE]
    assert np.linalg.norm(best.weights) == pytest.approx(min(near))
    assert best.folder == next(folder for _, weights, folder in every if weights == best.weights)
    assert (tmp_path / "run" / "best").is_dir() and len(list((tmp_path / "run" / "best").glob("*.png"))) == 3


def test_best_prompt_reproduces_its_loss_when_rendered_again():
    result = pin("a red circle, blue sky", **RUN)
    best = result.record.best
    renderer = EmbeddedRenderer(EmbeddedModel(count=6, size=16), [0, 1, 2], steps=4)
    baseline = result.record.baseline
    targets = renderer.render([(baseline.prompt, baseline.negative_prompt)])[0].images  # the first batch
    images = renderer.render([(best.prompt, best.negative_prompt)])[0].images
    assert torch.allclose(images, result.best.images, atol=1e-5)
    assert Objective(targets).score(images).loss == pytest.approx(best.loss, abs=1e-6)


def test_same_seed_and_inputs_give_the_same_run_record():
    first = pin("a red circle", **RUN).record
    np.random.seed(5), random.seed(5), torch.manual_seed(5)  # global state must not matter
    again = pin("a red circle", **RUN).record
    assert without_timings(first) == without_timings(again)
    other = pin("a red circle", **{**RUN, "cma_seed": 2}).record
    assert without_timings(first) != without_timings(other)


def test_a_run_leaves_global_rng_state_and_deap_creator_untouched(tmp_path):
    np.random.seed(3)
    torch.manual_seed(3)
    numpy_state, torch_state, names = np.random.get_state(), torch.random.get_rng_state(), set(vars(creator))
    pin("a red circle", sampler="Euler a", **RUN)
    pin("a red circle", size_limit=0.3, **RUN)
    after = np.random.get_state()
    assert np.array_equal(numpy_state[1], after[1]) and numpy_state[2:] == after[2:]
    assert torch.equal(torch_state, torch.random.get_rng_state())
    assert set(vars(creator)) == names


def test_a_run_stops_when_pinned_and_says_so(tmp_path):
    job = small_job(generations=20, stop_share=0.9, patience=0)  # any candidate below 90 % of the prompt's loss
    job.run_dir = tmp_path
    result = run_pinning(job)
    record = read_record(tmp_path)
    assert result.status == record.status == "done" and record.ending.cause == "pinned"
    assert len(record.generations) > 1
    assert all(generation.best_loss > 0.9 * record.baseline.loss for generation in record.generations[:-1])
    # it stops at the individual that pinned it: the rest of its generation is never rendered
    *before, pinning = [individual.loss for individual in record.generations[-1].individuals]
    assert pinning <= 0.9 * record.baseline.loss < min(before, default=math.inf)
    assert len(before) + 1 == record.generations[-1].evaluations < 4  # λ 4: cut short here
    assert record.ending.message.startswith("pinned: the best loss") and f"{record.baseline.loss:.4g}" in \
        record.ending.message


def test_the_stop_message_says_what_the_budget_left_and_counts_in_words_that_agree():
    # a budget of 4: a first look of 2, then a generation of 4 does not fit
    record = run_pinning(small_job(generations=1, lambda_=4, first_look=2, patience=0)).record
    assert record.ending.message == ("the budget of 4 evaluations has no room for another generation of 4 (after "
                                     "1 generation, 2 evaluations)")
    record = run_pinning(small_job(generations=2, lambda_=4, patience=0)).record
    assert record.ending.message == "the budget of 8 evaluations is spent (after 2 generations, 8 evaluations)"


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_pinned_run_renders_nothing_after_it_pinned_and_its_record_does_not_depend_on_the_slices(parallel):
    whole = run_pinning(small_job(generations=20, stop_share=0.9, patience=0)).record
    slices = StopAt(0, parallel=parallel)
    sliced = run_pinning(small_job(generations=20, stop_share=0.9, patience=0, wrap=slices)).record
    assert without_timings(sliced) == without_timings(whole)
    assert whole.generations[-1].evaluations < 4  # pinned inside its last generation
    *earlier, last = [generation.evaluations for generation in whole.generations]
    # the baseline, the whole generations, then the last one's slices up to the one that pinned it
    assert slices.prompts == 1 + sum(earlier) + math.ceil(last / parallel) * parallel


@pytest.mark.parametrize("exception, status, cause", [(KeyboardInterrupt(), "interrupted", "interrupt"),
                                                      (RuntimeError("CUDA out of memory"), "failed", "fault"),
                                                      (ValueError("a NaN image"), "failed", "fault")])
def test_a_stopped_run_keeps_every_finished_generation_and_says_why(tmp_path, exception, status, cause):
    job = small_job(wrap=StopAt(3, exception), generations=5)
    job.run_dir = tmp_path
    result = run_pinning(job)  # never raises: the result says how the run ended
    record = read_record(tmp_path)
    assert result.status == record.status == status and record.ending.cause == cause
    assert len(record.generations) == 1  # baseline, generation 0, then the stop
    assert (result.error is exception) == (status == "failed")
    if status == "failed":
        assert record.ending.message == f"{type(exception).__name__}: {exception}"


def test_should_stop_ends_the_run_between_generations():
    stops = iter([False, False, True])
    job = small_job(generations=5)
    job.should_stop = lambda: next(stops)
    result = run_pinning(job)
    assert result.status == "interrupted" and len(result.record.generations) == 2


def test_observers_follow_every_change_of_the_best_individual():
    seen = []

    class Watcher(Observer):
        def on_best(self, record, rendered):
            seen.append((record.best, rendered))

    job = small_job("a red circle, blue sky", seeds=(0, 1, 2), generations=4)
    job.observers.append(Watcher())
    result = run_pinning(job)
    assert seen[0][0].generation == -1 and seen[0][0].id is None  # the prompt as written comes first
    assert seen[-1][0] is result.record.best and seen[-1][1] is result.best
    assert len({best.prompt for best, _ in seen}) == len(seen)  # called on changes only


def test_import_of_the_engine_loads_neither_the_report_nor_pictures():
    code = ("import sys, lib_pinning.engine; "
            "print(sorted(m for m in ('matplotlib', 'PIL', 'lib_pinning.report', 'lib_pinning.webui') "
            "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_the_hyperbatch_tree_weighting_follows_the_sampler_and_its_switches():
    common = {**RUN, "generations": 1}
    weighted = pin("a red circle", sampler="DPM++ 2M Hyperbatch", **common).record
    plain = pin("a red circle", sampler="DPM++ 2M Hyperbatch", hyperbatch_weights=False, **common).record
    assert weighted.objective.tree == {"kind": "Geometric", "scale": 1.0, "steps": 4, "tree_size": 3}
    assert plain.objective.tree is None
    assert weighted.baseline.loss != plain.baseline.loss
    # A plain sampler is weighted only when forced, as the original's "force allowed" switch did.
    assert pin("a red circle", **common).record.objective.tree is None
    forced = pin("a red circle", hyperbatch_force=True, hyperbatch_weight_type="Polynomial", **common).record
    assert forced.objective.tree["kind"] == "Polynomial"


# --- the command line -----------------------------------------------------------------------------------

ARGV = ["pin", "--prompt", "a red circle", "--size", "16", "--prototypes", "6", "--batch", "2", "--steps", "3",
        "--generations", "2", "--lambda", "3", "--quiet"]


@pytest.mark.parametrize("args, message", [
    (["--target", "{tmp}/missing.png"], "does not exist"),
    (["--target", "{tmp}"], "is a folder, not an image file"),
    (["--lambda", "1"], "Lambda: children per generation (-1: 4 + 3 ln N) (lambda_): must be between 2 and 1000"),
    (["--generations", "0"], "(generations): must be between 1 and 10000 (or -1), got '0'"),
    (["--batch", "1"], "Batch size (batch): must be between 2 and 64, got '1'"),
    (["--mu", "50"], "(mu): must be at most λ (3), got 50"),
    (["--prompt", "<lora:x:1> BREAK"], "no words"),
    (["--cmatrix", "[[1, 0], [0"], "(cmatrix): must be a JSON list of rows"),
    (["--cmatrix", "[[1, 0], [0, 1]]"], "(cmatrix): must be 3x3"),
    (["--cmatrix", "{tmp}/missing.json"], "(cmatrix): cannot read"),
    (["--cfg-scale", "nan"], "CFG scale (cfg_scale): must be a finite number, got 'nan'"),
    (["--sampler", "DDIM"], "Sampler (sampler): must be one of Euler, Euler a"),
    (["--seed", str(2**64)], "Seed (seed): must be between 0 and 4294967295"),
    (["--sigma", "1e300"], "Initial sigma (sigma): must be between 0.01 and 3"),
    (["--ccovmu", "5"], "(ccovmu): must be more than 0 and at most 1 (or -1), got '5'"),
])
def test_bad_input_is_one_clear_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    code = main(ARGV + ["--out", str(tmp_path / "run")] + [a.replace("{tmp}", str(tmp_path)) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "run").exists()


def test_cli_pin_with_a_target_file(tmp_path, capsys):
    from PIL import Image
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "t.png")
    code = main(["pin", "--prompt", "red circle", "--target", str(tmp_path / "t.png"), "--out",
                 str(tmp_path / "run"), "--size", "16", "--prototypes", "6", "--batch", "2", "--steps", "3",
                 "--generations", "2", "--lambda", "3", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "resized to 16x16" in captured.err
    assert "pinned prompt: " in captured.out
    record = read_record(tmp_path / "run")
    assert record.status == "done" and record.resolved["lambda_"] == 3 and record.options["lambda_"] == 3
    assert record.options["targets"] == [str(tmp_path / "t.png")] and record.objective.target_count == 1
    assert record.notices == ["target 1 is 40x40: resized to 16x16"]


class Fails:
    def __init__(self, renderer):
        self.renderer, self.seeds, self.calls = renderer, renderer.seeds, 0

    def render(self, prompts):
        self.calls += 1
        if self.calls == 2:
            raise ValueError("the loss is nan: the objective cannot rank it")
        return self.renderer.render(prompts)


def test_exit_codes_follow_how_the_run_ended_not_the_exception(tmp_path, capsys, monkeypatch):
    """A ValueError mid-run is a fault of the run (exit 1, its folder written), not bad input (2)."""
    import lib_pinning.embedded_run as embedded_run

    monkeypatch.setattr(embedded_run, "EmbeddedRenderer", lambda *a, **k: Fails(EmbeddedRenderer(*a, **k)))
    code = main(ARGV + ["--out", str(tmp_path / "failed")])
    err = capsys.readouterr().err
    assert code == 1 and "error: the run failed: ValueError: the loss is nan" in err
    assert read_record(tmp_path / "failed").ending.cause == "fault"
    monkeypatch.setattr(embedded_run, "EmbeddedRenderer", lambda *a, **k: StopAt(2)(
        EmbeddedRenderer(*a, **k)))
    assert main(ARGV + ["--out", str(tmp_path / "interrupted")]) == 130
    assert read_record(tmp_path / "interrupted").status == "interrupted"


def test_a_full_disk_mid_run_is_one_line_and_leaves_no_writer_thread(tmp_path, capsys, monkeypatch):
    import threading

    import lib_pinning.engine as engine
    from lib_pinning.runfile import write_bytes_atomic
    calls = {"n": 0}

    def failing_after_three(path, data):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(28, "No space left on device")
        write_bytes_atomic(path, data)

    monkeypatch.setattr(engine, "write_bytes_atomic", failing_after_three)
    threads_before = set(threading.enumerate())
    code = main(ARGV + ["--out", str(tmp_path / "run"), "--generations", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert [line for line in err if line.startswith("error: the run failed")] == [
        "error: the run failed: could not write run.json: [Errno 28] No space left on device"]
    assert set(threading.enumerate()) <= threads_before  # the report's writer was stopped
    assert read_record(tmp_path / "run").status == "running"  # the last record that could be written
