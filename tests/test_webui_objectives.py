"""Masks, the semantic loss and target tags through the WebUI glue offline (tests/fake_webui.py): uploads and API
values, the WebUI's CLIP file (a small random-weight one here), the message when it is missing, resume."""

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_support import save_clip_archive
from fake_webui import api_call
from lib_pinning.record import read_record
from report_support import without_timings
from test_webui_script import SMALL, job, webui  # noqa: F401 - the fake WebUI fixture


@pytest.fixture(scope="module")
def clip_archive(tmp_path_factory):
    pytest.importorskip("clip")
    return save_clip_archive(tmp_path_factory.mktemp("clip") / "ViT-L-14.pt")


def data_url(array: np.ndarray) -> str:
    stream = io.BytesIO()
    Image.fromarray(array).save(stream, format="PNG")
    return "data:image/png;base64," + base64.b64encode(stream.getvalue()).decode()


def target_and_mask():
    target = np.zeros((16, 16, 3), np.uint8)
    target[:, :, 0] = 200
    mask = np.zeros((16, 16), np.uint8)
    mask[:8] = 255
    return data_url(target), data_url(mask)


def test_a_masked_run_keeps_each_mask_with_its_target_and_resumes_to_the_uninterrupted_record(webui, tmp_path):
    target, mask = target_and_mask()
    args = [{**SMALL, "targets": [target], "masks": [mask]}]
    whole = api_call(webui, job(tmp_path), args).extra_generation_params["Prompt pinning"]["run_folder"]
    record = read_record(whole)
    assert record.options["masks"] == ["mask upload 1"]
    saved = np.asarray(Image.open(Path(whole) / "targets" / "target-0.png"))
    assert saved.shape == (16, 16, 4) and (saved[:8, :, 3] == 255).all() and (saved[8:, :, 3] == 0).all()
    assert (np.asarray(Image.open(Path(whole) / "targets" / "mask-0.png")) == saved[..., 3]).all()
    webui.renders.clear()
    webui.stop_at = 3  # Interrupt in generation 0
    stopped = api_call(webui, job(tmp_path), args).extra_generation_params["Prompt pinning"]
    assert stopped["status"] == "interrupted"
    webui.state.interrupted, webui.stop_at = False, None
    resumed = api_call(webui, job(tmp_path), [{"resume": stopped["run_folder"]}]).extra_generation_params[
        "Prompt pinning"]
    assert resumed["status"] == "done"
    assert without_timings(read_record(stopped["run_folder"])) == without_timings(record)


@pytest.mark.parametrize("values, says", [
    ({"masks": "all black"}, "mask 1 is all black"),
    ({"masks": "not base64!"}, "mask 1: not a base64 image"),
    ({"masks": "two"}, "2 target masks for 1 target images"),
    ({"tags": "red hair", "targets": None}, "ViT-L-14.pt, and it is not there: press \"Interrogate CLIP\""),
    ({"semantic_weight": 1.0}, "ViT-L-14.pt, and it is not there"),
])
def test_bad_masks_and_a_missing_clip_file_answer_422_before_anything_renders(webui, tmp_path, values, says):
    target, mask = target_and_mask()
    black = data_url(np.zeros((16, 16), np.uint8))
    masks = {"all black": [black], "not base64!": ["not base64!"], "two": [mask, mask]}
    args = {**SMALL, "targets": [target], **values}
    if isinstance(args.get("masks"), str):
        args["masks"] = masks[args["masks"]]
    if args.get("targets") is None:
        args.pop("targets")
    with pytest.raises(Exception) as caught:
        api_call(webui, job(tmp_path), [args])
    assert caught.value.status_code == 422 and says in caught.value.detail
    assert webui.renders == [] and not (tmp_path / "outputs").exists()


def test_semantic_and_tag_runs_use_the_webuis_clip_file(webui, tmp_path, clip_archive):
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "ViT-L-14.pt").write_bytes(clip_archive.read_bytes())
    target, _ = target_and_mask()
    semantic = api_call(webui, job(tmp_path), [{**SMALL, "targets": [target], "semantic_weight": 1.0,
                                                "flip_weight": 0.0}]).extra_generation_params["Prompt pinning"]
    record = read_record(semantic["run_folder"])
    assert semantic["status"] == "done" and record.objective.embedder == "CLIP ViT-L-14.pt"
    assert 0 < record.baseline.loss < 2
    tags = api_call(webui, job(tmp_path), [{**SMALL, "tags": "red hair, night"}]).extra_generation_params[
        "Prompt pinning"]
    record = read_record(tags["run_folder"])
    assert tags["status"] == "done" and record.options["tags"] == ["red hair", "night"]
    assert record.objective.pairs == [] and record.objective.target_source == "none"
    from lib_pinning.webui import clip
    assert next(iter(clip._loaded.values())).model.visual.conv1.weight.device.type == "cpu"  # released


def test_the_clip_file_setting_names_another_file(webui, tmp_path, clip_archive):
    webui.opts.prompt_pinning_clip_file = str(tmp_path / "elsewhere.pt")
    with pytest.raises(Exception) as caught:
        api_call(webui, job(tmp_path), [{**SMALL, "semantic_weight": 1.0}])
    assert "elsewhere.pt, and it is not there" in caught.value.detail
    webui.opts.prompt_pinning_clip_file = str(clip_archive)
    info = api_call(webui, job(tmp_path), [{**SMALL, "semantic_weight": 1.0}]).extra_generation_params[
        "Prompt pinning"]
    assert info["status"] == "done"
