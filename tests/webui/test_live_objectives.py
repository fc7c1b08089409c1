"""Masked targets, the semantic loss and target tags inside a real WebUI, through its API.

The semantic loss and the tags use the WebUI's Interrogate CLIP file (ViT-L-14.pt in --clip-models-path, by
default ~/.cache/clip). Here it has random weights (README: "Live tests"): scores are meaningless, but the file,
its loading, the model's shapes and speed and every code path are the real ones.
"""

import json

import numpy as np
import pytest
from PIL import Image

from live_support import decode_image, encode_image
from test_live import BASE, SCRIPT

SMALL = {"generations": 1, "lambda_": 2, "cma_seed": 3, "log": False}
CLIP_SETTING = "prompt_pinning_clip_file"


@pytest.fixture(scope="module")
def picture(webui) -> np.ndarray:
    response = webui.post("/sdapi/v1/txt2img", {**BASE, "prompt": "a blue sphere in fog", "batch_size": 1,
                                                 "seed": 99})
    return decode_image(response["images"][0]).astype(np.uint8)


def pin(webui, options: dict) -> tuple[dict, dict]:
    response = webui.post("/sdapi/v1/txt2img", {**BASE, "script_name": SCRIPT, "script_args": [{**SMALL, **options}]})
    summary = json.loads(response["info"])["extra_generation_params"]["Prompt pinning"]
    status, record = webui.request("/file=" + summary["run_folder"] + "/run.json")
    assert status == 200, record
    return summary, record


def test_a_masked_run_counts_only_what_the_mask_keeps(webui, picture):
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :32] = 255  # the left half counts
    changed = picture.copy()
    changed[:, 48:] = 255  # far inside the ignored half (white: unlike any render, noise or not)
    first, record = pin(webui, {"targets": [encode_image(Image.fromarray(picture))],
                                "masks": [encode_image(Image.fromarray(mask))]})
    second, _ = pin(webui, {"targets": [encode_image(Image.fromarray(changed))],
                            "masks": [encode_image(Image.fromarray(mask))]})
    plain, _ = pin(webui, {"targets": [encode_image(Image.fromarray(changed))]})
    assert first["status"] == second["status"] == "done"
    assert first["baseline_loss"] == pytest.approx(second["baseline_loss"], abs=1e-9)
    assert abs(plain["baseline_loss"] - first["baseline_loss"]) > 0.01
    assert record["options"]["masks"] == ["mask upload 1"]
    status, body = webui.request("/file=" + first["run_folder"] + "/targets/mask-0.png")
    assert status == 200


def test_a_semantic_run_uses_the_webuis_clip(webui, picture):
    summary, record = pin(webui, {"targets": [encode_image(Image.fromarray(picture))], "semantic_weight": 1.0,
                                  "flip_weight": 0.0})
    assert summary["status"] == "done" and record["objective"]["embedder"] == "CLIP ViT-L-14.pt"
    assert 0 <= summary["best_loss"] <= summary["baseline_loss"] <= 2


def test_a_tag_run_scores_the_images_against_the_tags_alone(webui):
    summary, record = pin(webui, {"tags": "red cube, night"})
    assert summary["status"] == "done" and record["options"]["tags"] == ["red cube", "night"]
    assert record["objective"]["pairs"] == [] and record["objective"]["embedder"] == "CLIP ViT-L-14.pt"
    assert all(len(individual["image_losses"]) == BASE["batch_size"]
               for generation in record["generations"] for individual in generation["individuals"])


def test_a_missing_clip_file_gets_one_clear_message_and_the_server_keeps_serving(webui):
    webui.post("/sdapi/v1/options", {CLIP_SETTING: "/nonexistent/ViT-L-14.pt"})
    try:
        status, body = webui.request("/sdapi/v1/txt2img", {**BASE, "script_name": SCRIPT, "script_args": [
            {**SMALL, "tags": "red cube"}]})
    finally:
        webui.post("/sdapi/v1/options", {CLIP_SETTING: ""})
    assert status == 422, body
    assert "/nonexistent/ViT-L-14.pt, and it is not there: press \"Interrogate CLIP\"" in body["detail"]
    assert webui.get("/sdapi/v1/scripts")
