import json
import random

import numpy as np
import pytest
import torch
from deap import creator

from lib_pinning.cli import main, pin
from lib_pinning.engine import LOSS_TIE, PinningJob, run_pinning
from lib_pinning.embedded import EmbeddedModel, EmbeddedRenderer
from lib_pinning.genome import build_genome
from lib_pinning.objective import Objective
from lib_pinning.recorder import Recorder
from lib_pinning.runfile import read_run
from lib_pinning.search import SearchOptions

SMALL = dict(batch=3, steps=4, prototypes=6, size=16, progress=False)


def small_search(**overrides):
    return SearchOptions(**{"cma_seed": 1, "generations": 3, "lambda_": 4, "log": False, **overrides})


def without_timings(record):
    for generation in record["generations"]:
        generation.pop("seconds")
        for individual in generation["individuals"]:
            individual.pop("seconds_render")
            individual.pop("seconds_loss")
    return record


def test_run_json_follows_the_contract(tmp_path):
    result = pin("a red circle, blue sky", "dark", out=tmp_path / "run", search=small_search(), **SMALL)
    record = read_run(tmp_path / "run")
    assert record["status"] == result.status == "done"
    assert record["genome"]["words"] == ["a", "red", "circle", ",", "blue", "sky"]
    assert record["genome"]["negative_words"] == ["dark"]
    assert [g["index"] for g in record["generations"]] == [0, 1, 2]
    for generation in record["generations"]:
        assert generation["evaluations"] == len(generation["individuals"]) == 4
        losses = [i["loss"] for i in generation["individuals"]]
        assert generation["best_loss"] == min(losses)
        assert generation["mean_loss"] == pytest.approx(np.mean(losses))
        for individual in generation["individuals"]:
            assert set(individual) >= {"id", "weights", "loss", "prompt", "negative_prompt", "seconds_render",
                                       "seconds_loss"}
            assert len(individual["weights"]) == 7
    assert set(record["baseline"]) >= {"loss", "prompt", "negative_prompt"}
    best = record["best"]
    every = [(record["baseline"]["loss"], [0.0] * 7)] + [(i["loss"], i["weights"]) for g in record["generations"]
                                                         for i in g["individuals"]]
    lowest = min(loss for loss, _ in every)
    assert best["loss"] <= lowest + LOSS_TIE
    # Among the (near-)lowest losses, the best is the one closest to the user's prompt.
    near = [np.linalg.norm(weights) for loss, weights in every if loss <= lowest + LOSS_TIE]
    assert np.linalg.norm(best["weights"]) == pytest.approx(min(near))
    assert (tmp_path / "run" / "best").is_dir() and len(list((tmp_path / "run" / "best").glob("*.png"))) == 3


def test_best_prompt_reproduces_its_loss_when_rendered_again():
    result = pin("a red circle, blue sky", search=small_search(), **SMALL)
    best = result.record["best"]
    model = EmbeddedModel(count=6, size=16)
    renderer = EmbeddedRenderer(model, [0, 1, 2], steps=4)
    baseline_prompt = (result.record["baseline"]["prompt"], result.record["baseline"]["negative_prompt"])
    targets = renderer.render([baseline_prompt])[0]  # no target given: the first batch is the target
    images = renderer.render([(best["prompt"], best["negative_prompt"])])[0]
    assert torch.allclose(images, result.best_images, atol=1e-5)
    assert Objective(targets).score(images).loss == pytest.approx(best["loss"], abs=1e-6)


def test_same_seed_and_inputs_give_the_same_run_record():
    # run.json is this record (test_run_json_follows_the_contract checks the file itself).
    first = pin("a red circle", search=small_search(), **SMALL).record
    np.random.seed(5), random.seed(5), torch.manual_seed(5)  # global state must not matter
    again = pin("a red circle", search=small_search(), **SMALL).record
    assert without_timings(json.loads(json.dumps(first))) == without_timings(json.loads(json.dumps(again)))
    other = pin("a red circle", search=small_search(cma_seed=2), **SMALL).record
    assert without_timings(json.loads(json.dumps(first))) != without_timings(json.loads(json.dumps(other)))


def test_a_run_leaves_global_rng_state_and_deap_creator_untouched(tmp_path):
    np.random.seed(3)
    torch.manual_seed(3)
    numpy_state, torch_state, names = np.random.get_state(), torch.random.get_rng_state(), set(vars(creator))
    pin("a red circle", sampler="Euler a", search=small_search(), **SMALL)
    pin("a red circle", search=small_search(size_limit=0.3), **SMALL)
    after = np.random.get_state()
    assert np.array_equal(numpy_state[1], after[1]) and numpy_state[2:] == after[2:]
    assert torch.equal(torch_state, torch.random.get_rng_state())
    assert set(vars(creator)) == names


class InterruptingRenderer:
    """Renders normally, then behaves like Ctrl-C during the third render call."""

    def __init__(self, renderer, exception):
        self.renderer, self.exception, self.calls = renderer, exception, 0
        self.seeds = renderer.seeds

    def render(self, prompts):
        self.calls += 1
        if self.calls == 3:
            raise self.exception
        return self.renderer.render(prompts)


@pytest.mark.parametrize("exception, status", [(KeyboardInterrupt(), "interrupted"),
                                               (RuntimeError("CUDA out of memory"), "failed")])
def test_a_stopped_run_keeps_every_finished_generation(tmp_path, exception, status):
    genome = build_genome("a red circle")
    renderer = InterruptingRenderer(EmbeddedRenderer(EmbeddedModel(count=6, size=16), [0, 1], steps=3), exception)
    job = PinningJob(genome, renderer, Objective(), small_search(generations=5), tmp_path, progress=False,
                     recorder=Recorder())
    if status == "failed":
        with pytest.raises(RuntimeError):
            run_pinning(job)
    else:
        assert run_pinning(job).status == status
    record = read_run(tmp_path)
    assert record["status"] == status
    assert len(record["generations"]) == 1  # baseline, generation 0, then the stop
    assert "message" in record and (status != "failed" or "out of memory" in record["message"])


def test_should_stop_ends_the_run_between_generations(tmp_path):
    genome = build_genome("a red circle")
    renderer = EmbeddedRenderer(EmbeddedModel(count=6, size=16), [0, 1], steps=3)
    stops = iter([False, False, True])
    job = PinningJob(genome, renderer, Objective(), small_search(generations=5), None,
                     should_stop=lambda: next(stops), progress=False)
    result = run_pinning(job)
    assert result.status == "interrupted" and len(result.record["generations"]) == 2


@pytest.mark.parametrize("args, message", [
    (["--target", "{tmp}/missing.png"], "does not exist"),
    (["--lambda", "1"], "lambda_"),
    (["--generations", "0"], "generations"),
    (["--batch", "1"], "batch size"),
    (["--mu", "50"], "mu"),
    (["--prompt", "<lora:x:1> BREAK"], "no words"),
    (["--cmatrix", "[[1, 0], [0"], "--cmatrix"),
    (["--cmatrix", "[[1, 0], [0, 1]]"], "cmatrix must be 3x3"),
])
def test_bad_input_is_one_clear_line_and_writes_nothing(tmp_path, capsys, args, message):
    argv = ["pin", "--prompt", "a red circle", "--out", str(tmp_path / "run"), "--size", "16", "--quiet"]
    code = main(argv + [a.replace("{tmp}", str(tmp_path)) for a in args])  # later --prompt wins
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
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
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "done" and record["options"]["search"]["lambda_"] == 3


def test_hyperbatch_weights_apply_to_hyperbatch_samplers_unless_switched_off():
    common = dict(search=small_search(generations=1), **SMALL)
    weighted = pin("a red circle", sampler="DPM++ 2M Hyperbatch", **common).record
    plain = pin("a red circle", sampler="DPM++ 2M Hyperbatch", hyperbatch_weights=False, **common).record
    assert weighted["options"]["hyperbatch_weights"]["kind"] == "Geometric"
    assert plain["options"]["hyperbatch_weights"] is None
    assert weighted["baseline"]["loss"] != plain["baseline"]["loss"]
    # A plain sampler is weighted only when forced, as the original's "force allowed" switch did.
    assert pin("a red circle", **common).record["options"]["hyperbatch_weights"] is None
    forced = pin("a red circle", hyperbatch_force=True, hyperbatch_weight_type="Polynomial", **common).record
    assert forced["options"]["hyperbatch_weights"]["kind"] == "Polynomial"


def test_a_full_disk_mid_run_is_one_line_and_leaves_no_writer_thread(tmp_path, capsys, monkeypatch):
    import threading

    import lib_pinning.engine as engine
    from lib_pinning.runfile import write_json_atomic
    calls = {"n": 0}

    def failing_after_three(path, data):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(28, "No space left on device")
        write_json_atomic(path, data)

    monkeypatch.setattr(engine, "write_json_atomic", failing_after_three)
    threads_before = set(threading.enumerate())
    code = main(["pin", "--prompt", "a red circle", "--out", str(tmp_path / "run"), "--size", "16", "--batch", "2",
                 "--steps", "3", "--generations", "3", "--lambda", "3", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert [line for line in err if line.startswith("error: the run failed")] == [
        "error: the run failed: OSError: [Errno 28] No space left on device"]
    assert set(threading.enumerate()) <= threads_before  # the report's writer was stopped
    assert read_run(tmp_path / "run")["status"] == "running"  # the last record that could be written


def test_non_finite_sampling_options_are_refused_before_anything_is_written(tmp_path, capsys):
    code = main(["pin", "--prompt", "a red circle", "--out", str(tmp_path / "run"), "--cfg-scale", "nan"])
    assert code == 2 and "CFG scale must be a finite number" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_on_best_follows_every_change_of_the_best_individual():
    genome = build_genome("a red circle, blue sky")
    renderer = EmbeddedRenderer(EmbeddedModel(count=6, size=16), [0, 1, 2], steps=3)
    seen = []
    job = PinningJob(genome, renderer, Objective(), small_search(generations=4), None, progress=False,
                     on_best=lambda best, images: seen.append((dict(best), images)))
    result = run_pinning(job)
    assert seen[0][0]["generation"] == -1  # the prompt as written comes first
    assert seen[-1][0] == result.record["best"] and seen[-1][1] is result.best_images
    assert len({best["prompt"] for best, _ in seen}) == len(seen)  # called on changes only
