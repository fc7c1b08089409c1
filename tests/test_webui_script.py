"""The WebUI glue offline: the real entry script and Script.run -> lib_pinning.webui.run, against stand-ins for
A1111's modules and gradio (tests/fake_webui.py) whose process_images renders with the embedded model."""

import base64
import io
import json
import logging
from types import SimpleNamespace

import pytest
from PIL import Image

import fake_webui
from fake_webui import Processing, api_call
from lib_pinning.options import SCRIPT_CONTROLS
from lib_pinning.record import read_record
from report_support import without_timings

SMALL = {"generations": 2, "lambda_": 3, "log": False}


@pytest.fixture
def webui(monkeypatch, tmp_path):
    logger = logging.getLogger("lib_pinning")
    saved = logger.handlers[:], logger.level, logger.propagate
    fake = fake_webui.install(monkeypatch, tmp_path)
    yield fake
    fake_webui.uninstall()
    logger.handlers[:], logger.level, logger.propagate = saved


def job(tmp_path, **values):
    return Processing(outpath_samples=str(tmp_path / "outputs"), **values)


def png_data_url(colour=(200, 30, 30), size=(20, 20)):
    stream = io.BytesIO()
    Image.new("RGB", size, colour).save(stream, format="PNG")
    return "data:image/png;base64," + base64.b64encode(stream.getvalue()).decode()


def test_the_ui_offers_every_control_in_script_args_order_with_a_tooltip(webui):
    fake_webui.Block.made.clear()
    components = webui.script.ui(False)
    assert [c.kwargs["label"] for c in components] == [spec.label for spec in SCRIPT_CONTROLS]
    assert [c.kwargs["elem_id"] for c in components] == [
        f"script_txt2img_prompt_pinning_{spec.name}" for spec in SCRIPT_CONTROLS]
    holder = next(block for block in fake_webui.Block.made if type(block).__name__ == "HTML")
    tooltips = json.loads(__import__("html").unescape(
        holder.value.split('data-tooltips="')[1].split('"></div>')[0]))
    assert set(tooltips) == {c.kwargs["elem_id"] for c in components}  # the file upload has one too
    assert all(len(text) > 20 for text in tooltips.values())
    # always-visible controls first, then one closed accordion per group, in the schema's order of groups
    accordions = [block.kwargs["elem_id"] for block in fake_webui.Block.made if type(block).__name__ == "Accordion"]
    assert accordions == [f"script_txt2img_prompt_pinning_{name}" for name in ("cmaes", "size_limiter", "hyperbatch",
                                                                              "words", "stopping", "objective")]


def test_a_pinning_run_through_the_api_returns_the_best_images_and_the_pinned_prompt(webui, tmp_path):
    p = job(tmp_path)
    processed = api_call(webui, p, [{**SMALL, "targets": [png_data_url()]}])
    info = processed.extra_generation_params["Prompt pinning"]
    record = read_record(info["run_folder"])
    assert info["status"] == record.status == "done" and info["cause"] == "generations"
    assert len(processed.images) == 2 and processed.prompt == record.best.prompt
    assert processed.all_seeds == record.render.seeds == [11, 12]
    assert record.objective.target_count == 1 and record.options["targets"] == ["upload 1"]
    assert record.render.model == "fake-checkpoint" and record.render.extra["n_iter"] == 1
    assert "target 1 is 20x20: resized to 16x16" in record.notices
    assert any(text.startswith("Prompt pinning done after 2 generations") for text in p.comments)
    # every render is the user's job with the seeds fixed; only the prompt differs
    assert len(webui.renders) == 1 + 2 * 3 and {tuple(seeds) for _, _, seeds, _ in webui.renders} == {(11, 12)}
    assert webui.state.current_image is not None  # the best so far was shown between renders


@pytest.mark.parametrize("script_args, says", [
    ([{"generation": 3}], "unknown option: generation"),
    ([{"sigma": 9}], "Initial sigma (sigma): must be between 0.01 and 3, got 9"),
    ([{"generations": 2}, 5], "either as one object of values by name"),
    (["too", "few"], f"Prompt pinning takes {len(SCRIPT_CONTROLS)} script_args in this order: targets, loss_mode"),
    ([{"targets": ["not base64!"]}], "target image 1: not a base64 image"),
    ([{"keep": ["a", "red", "circle", "blue", "sky", "dark"]}], "no words to pin"),
])
def test_bad_input_answers_http_422_naming_what_is_wrong_and_renders_nothing(webui, tmp_path, script_args, says):
    with pytest.raises(Exception) as caught:
        api_call(webui, job(tmp_path), script_args)
    assert caught.value.status_code == 422 and says in caught.value.detail
    assert webui.renders == [] and not (tmp_path / "outputs").exists()


def test_a_positional_list_of_the_wrong_length_is_refused_though_run_gets_a_full_slice(webui, tmp_path):
    from lib_pinning.webui.script_args import positional
    args = positional(**SMALL)
    with pytest.raises(Exception) as caught:  # 28 values: A1111 would shift every later script's by one
        api_call(webui, job(tmp_path), args + [1.0])
    assert caught.value.status_code == 422 and f"got {len(args) + 1}" in caught.value.detail
    assert api_call(webui, job(tmp_path), args).extra_generation_params["Prompt pinning"]["status"] == "done"
    short = positional(**{**SMALL, "generations": 1})
    for count in (25, 34, 39):  # version 0.1's 25 values, 0.2's 34 and the 39 before stop_share still work
        legacy = api_call(webui, job(tmp_path), short[:count])
        assert legacy.extra_generation_params["Prompt pinning"]["status"] == "done"


def test_a_fault_before_the_first_batch_answers_http_500_and_a_later_one_keeps_the_run(webui, tmp_path):
    webui.fail_at = 1
    with pytest.raises(Exception) as caught:
        api_call(webui, job(tmp_path), [SMALL])
    assert caught.value.status_code == 500 and "out of GPU memory" in caught.value.detail
    webui.renders.clear()
    webui.fail_at = 6
    processed = api_call(webui, job(tmp_path), [SMALL])
    info = processed.extra_generation_params["Prompt pinning"]
    assert info["status"] == "failed" and len(processed.images) == 2
    assert read_record(info["run_folder"]).ending.cause == "fault"
    assert any("out of GPU memory: lower the batch size" in text for text in processed.comments.splitlines())


def test_interrupt_ends_the_run_with_its_finished_generations(webui, tmp_path):
    webui.stop_at = 5  # baseline, generation 0 (3), then Interrupt during generation 1
    processed = api_call(webui, job(tmp_path), [SMALL])
    info = processed.extra_generation_params["Prompt pinning"]
    assert info["status"] == "interrupted" and info["generations"] == 1
    assert len(webui.renders) == 5


@pytest.mark.parametrize("control, override, setting, used", [
    (-1, None, 1.0, 1.0),   # inherit: the setting
    (-1, None, 0.7, 0.7),
    (-1, 0.5, 1.0, 0.5),    # inherit: a pasted infotext's override wins over the setting
    (0.3, 0.5, 1.0, 0.3),   # an explicit strength wins over both
    (1.0, 0.5, 0.2, 1.0),   # ... even when it is the setting's default
])
def test_fork_strength_inherits_only_when_asked(webui, tmp_path, control, override, setting, used):
    webui.opts.hyperbatch_fork_strength = setting
    p = job(tmp_path, override_settings={} if override is None else {"hyperbatch_fork_strength": override})
    processed = api_call(webui, p, [{**SMALL, "generations": 1, "fork_strength": control}])
    assert {strength for _, _, _, strength in webui.renders} == {used}
    assert read_record(processed.extra_generation_params["Prompt pinning"]["run_folder"]).resolved[
        "fork_strength"] == used


def test_the_samplers_and_setting_register_once_even_when_the_script_is_imported_again(webui, monkeypatch,
                                                                                      tmp_path):
    names = [sampler.name for sampler in webui.samplers]
    assert names == ["DPM++ 2M", "Euler a Hyperbatch", "DPM++ 2M Hyperbatch", "DPM++ SDE Hyperbatch", "DPM++ 2M SDE Hyperbatch"]
    import sys
    sys.modules["modules.sd_samplers"].all_samplers_map.update({sampler.name: sampler for sampler in webui.samplers})
    webui.module.samplers.register()  # "Reload UI" imports the entry script again
    assert [sampler.name for sampler in webui.samplers] == names
    setting = webui.opts.data_labels["hyperbatch_fork_strength"]
    assert (setting.default, setting.infotext) == (1.0, "Hyperbatch fork strength")
    assert setting.component_args == {"minimum": 0.0, "maximum": 2.0, "step": 0.05}


def test_the_tokens_route_is_served_behind_api_auth(webui):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    import sys
    shared = sys.modules["modules.shared"]
    chunk = SimpleNamespace(tokens=[49406, 320, 49407], multipliers=[1.0, 1.1, 1.0])
    shared.sd_model.cond_stage_model = SimpleNamespace(process_texts=lambda texts: ([[chunk]], 1))
    shared.cmd_opts.api_auth = "user:secret"
    app = FastAPI()
    (add_routes,) = webui.callbacks
    add_routes(None, app)
    add_routes(None, app)  # "Reload UI" calls the hook again: one route
    assert [getattr(route, "path", None) for route in app.routes].count("/prompt-pinning/v1/tokens") == 1
    client = TestClient(app)
    assert client.post("/prompt-pinning/v1/tokens", json={"prompt": "(a:1.1)"}).status_code == 401
    assert client.post("/prompt-pinning/v1/tokens", json={"prompt": "x"}, auth=("user", "wrong")).status_code == 401
    assert client.get("/prompt-pinning/v1/evolutions").status_code == 401  # prompt evolution's routes too
    assert client.get("/prompt-pinning/v1/evolutions", auth=("user", "secret")).status_code == 200
    answer = client.post("/prompt-pinning/v1/tokens", json={"prompt": "(a:1.1)"}, auth=("user", "secret"))
    assert answer.status_code == 200
    assert answer.json() == {"chunks": [{"tokens": [49406, 320, 49407], "multipliers": [1.0, 1.1, 1.0]}],
                             "token_count": 1}


def test_an_interrupted_run_resumed_through_the_api_ends_as_an_uninterrupted_one(webui, tmp_path):
    from pathlib import Path
    args = [{**SMALL, "generations": 3, "targets": [png_data_url()]}]
    whole = Path(api_call(webui, job(tmp_path), args).extra_generation_params["Prompt pinning"]["run_folder"])
    webui.renders.clear()
    webui.stop_at = 5  # Interrupt in generation 1
    stopped = api_call(webui, job(tmp_path), args).extra_generation_params["Prompt pinning"]
    assert stopped["status"] == "interrupted"
    webui.state.interrupted, webui.stop_at = False, None
    number = Path(stopped["run_folder"]).name.lstrip("0")
    resumed = api_call(webui, job(tmp_path), [{"resume": number}]).extra_generation_params["Prompt pinning"]
    assert resumed["status"] == "done" and resumed["run_folder"] == stopped["run_folder"]
    assert without_timings(read_record(stopped["run_folder"])) == without_timings(read_record(whole))


def test_a_resume_with_other_txt2img_settings_is_refused_naming_them(webui, tmp_path):
    from pathlib import Path
    folder = Path(api_call(webui, job(tmp_path), [{**SMALL, "generations": 1}]).extra_generation_params[
        "Prompt pinning"]["run_folder"])
    with pytest.raises(Exception) as caught:
        api_call(webui, job(tmp_path, seed=5), [{"resume": str(folder)}])
    assert caught.value.status_code == 422 and "seeds: [11, 12] in the run, [5, 6] now" in caught.value.detail
    # a variation seed counts only with a variation strength (A1111 draws a new one per request otherwise)
    resumed = api_call(webui, job(tmp_path, subseed=7), [{"resume": str(folder), "generations": 2}])
    assert resumed.extra_generation_params["Prompt pinning"]["generations"] == 2


def test_a_run_from_the_ui_takes_gradios_open_upload_files(webui, tmp_path):
    """gradio 3 hands an upload over as an open temporary-file object, which cannot be copied: the options holding
    it must never be deep-copied (a live run from the page failed so)."""
    import tempfile

    from lib_pinning.webui.script_args import positional
    upload = tempfile.NamedTemporaryFile(suffix=".png", dir=tmp_path)
    Image.new("RGB", (16, 16), (20, 200, 40)).save(upload.name)
    p = job(tmp_path)
    processed = webui.script.run(p, *positional(targets=[upload], **SMALL))
    info = processed.extra_generation_params["Prompt pinning"]
    assert info["status"] == "done" and read_record(info["run_folder"]).objective.target_count == 1
