"""The extension inside a real AUTOMATIC1111: listed, its samplers work, a pinning job runs and reproduces.

Sizes are tiny (64², 4 steps) so that the suite runs on a CPU WebUI with a random-weight checkpoint: the
pictures are noise, but shapes, seeds, prompts and the WebUI's code paths are the real ones.
"""

import json
import re
import threading
import time

import numpy as np
import pytest
from PIL import Image

from lib_pinning.options import SCRIPT_CONTROLS
from lib_pinning.webui.script_args import control_default, positional

from live_support import decode_image, encode_image

SCRIPT = "Prompt pinning"
HYPERBATCH = ["Euler a Hyperbatch", "DPM++ 2M Hyperbatch", "DPM++ SDE Hyperbatch", "DPM++ 2M SDE Hyperbatch"]
BASE = {"prompt": "a red cube on a wooden table, studio light", "negative_prompt": "blurry, dark",
        "width": 64, "height": 64, "steps": 4, "cfg_scale": 7, "sampler_name": "DPM++ 2M", "scheduler": "Karras",
        "batch_size": 2, "n_iter": 1, "seed": 1234, "send_images": True, "save_images": False}


def start_and_wait_for_renders(webui, job: threading.Thread, renders: int) -> None:
    """Start `job` (a thread posting one request) and wait until its job has begun its `renders`-th render. The
    progress API keeps the previous job's `job_no` until the next job begins, so only a running job counts: the
    WebUI names the job while it runs and clears the name when it ends (requests run one at a time)."""
    job.start()
    deadline = time.monotonic() + 600
    while True:
        state = webui.get("/sdapi/v1/progress?skip_current_image=true")["state"]
        if state["job"] and state["job_no"] >= renders:
            return
        assert time.monotonic() < deadline and job.is_alive(), "the run did not get going"
        time.sleep(0.3)


def pixels_differ(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def test_the_script_is_listed_for_txt2img_and_img2img(webui):
    scripts = webui.get("/sdapi/v1/scripts")
    assert SCRIPT.lower() in scripts["txt2img"] and SCRIPT.lower() in scripts["img2img"]


def test_the_api_sees_every_control_in_script_args_order_with_its_default(webui):
    infos = [info for info in webui.get("/sdapi/v1/script-info") if info["name"] == SCRIPT.lower()]
    assert {info["is_img2img"] for info in infos} == {False, True}
    for info in infos:
        assert [arg["label"] for arg in info["args"]] == [spec.label for spec in SCRIPT_CONTROLS]
        for arg, spec in zip(info["args"], SCRIPT_CONTROLS):
            if spec.control != "files":
                assert arg["value"] == control_default(spec), spec.name


def test_the_hyperbatch_samplers_are_listed_once_each(webui):
    names = [sampler["name"] for sampler in webui.get("/sdapi/v1/samplers")]
    for name in HYPERBATCH:
        assert names.count(name) == 1, name
    assert not any(name.endswith((" Karras", " Exponential")) for name in HYPERBATCH)


@pytest.mark.parametrize("sampler", HYPERBATCH)
def test_a_hyperbatch_sampler_renders_a_full_batch_of_distinct_images(webui, sampler):
    payload = {**BASE, "sampler_name": sampler, "batch_size": 4, "steps": 5}
    response = webui.post("/sdapi/v1/txt2img", payload)
    images = [decode_image(image) for image in response["images"]]
    assert len(images) == 4 and all(image.shape == (64, 64, 3) for image in images)
    for i in range(4):
        for j in range(i):
            assert pixels_differ(images[i], images[j]) > 1, f"images {j} and {i} are copies"
    again = [decode_image(image) for image in webui.post("/sdapi/v1/txt2img", payload)["images"]]
    assert all(np.array_equal(a, b) for a, b in zip(images, again)), "the same seeds gave other images"
    # the fork strength is in every infotext, so that pasting one reproduces it whatever the settings say
    assert all("Hyperbatch fork strength: 1.0" in text for text in json.loads(response["info"])["infotexts"])


def test_the_hires_fix_pass_of_a_hyperbatch_sampler_keeps_every_image_its_own(webui):
    # Forking in the second pass would replace images 1..3 by variants of image 0: it samples plainly instead,
    # so it must equal the plain sampler as the hires sampler.
    payload = {**BASE, "sampler_name": "DPM++ 2M Hyperbatch", "batch_size": 4, "steps": 5, "enable_hr": True,
               "hr_scale": 1.5, "hr_second_pass_steps": 3, "denoising_strength": 0.5, "hr_upscaler": "Latent",
               "hr_additional_modules": ["Use same choices"]}  # Forge's API fails without it; A1111 ignores it
    same = webui.post("/sdapi/v1/txt2img", payload)["images"]  # no hires sampler: the same one
    plain = webui.post("/sdapi/v1/txt2img", {**payload, "hr_sampler_name": "DPM++ 2M"})["images"]
    assert len(same) == 4 and decode_image(same[0]).shape == (96, 96, 3)
    assert all(np.array_equal(decode_image(a), decode_image(b)) for a, b in zip(same, plain))


@pytest.fixture(scope="module")
def target(webui) -> str:
    """A picture of another prompt, as an API client would upload it (a data URL)."""
    response = webui.post("/sdapi/v1/txt2img", {**BASE, "prompt": "a blue sphere in fog", "batch_size": 1,
                                                 "seed": 99})
    return encode_image(Image.fromarray(decode_image(response["images"][0]).astype(np.uint8)))


@pytest.fixture(scope="module")
def pinned(webui, target):
    args = positional(targets=[target], generations=2, lambda_=2, cma_seed=3, log=False)
    response = webui.post("/sdapi/v1/txt2img", {**BASE, "script_name": SCRIPT, "script_args": args})
    return response, json.loads(response["info"])


def test_named_script_args_give_the_same_run_as_positional_ones(webui, target, pinned):
    named = [{"targets": [target], "generations": 2, "lambda_": 2, "cma_seed": 3, "log": False}]
    response = webui.post("/sdapi/v1/txt2img", {**BASE, "script_name": SCRIPT, "script_args": named})
    info = json.loads(response["info"])
    assert info["prompt"] == pinned[1]["prompt"] and info["negative_prompt"] == pinned[1]["negative_prompt"]
    assert response["images"] == pinned[0]["images"]


@pytest.mark.parametrize("script_args, says", [
    ([{"generation": 2}], "unknown option: generation"),
    ([{"sigma": 9}], "Initial sigma (sigma): must be between 0.01 and 3, got 9"),
    (positional() + [1], f"Prompt pinning takes {len(SCRIPT_CONTROLS)} script_args in this order: targets, loss_mode"),
    (positional()[:3], "got 3"),
])
def test_unknown_names_and_lists_of_the_wrong_length_answer_422(webui, script_args, says):
    status, body = webui.request("/sdapi/v1/txt2img", {**BASE, "script_name": SCRIPT, "script_args": script_args})
    assert status == 422 and says in body["detail"], body
    assert webui.get("/sdapi/v1/scripts")  # still serving


def test_a_pinning_job_returns_the_best_images_and_the_pinned_prompt(pinned):
    response, info = pinned
    assert len(response["images"]) == BASE["batch_size"]
    # the best individual's prompt; the prompt as written (words bare) when nothing beat it
    assert "cube" in info["prompt"] and "blurry" in info["negative_prompt"]
    assert all(text.startswith(info["prompt"]) for text in info["infotexts"])  # infotexts carry it too
    summary = info["extra_generation_params"]["Prompt pinning"]
    assert summary["status"] == "done" and summary["generations"] == 2
    assert summary["best_loss"] <= summary["baseline_loss"]


def test_the_run_folder_is_written_and_its_report_is_served(webui, pinned):
    _, info = pinned
    summary = info["extra_generation_params"]["Prompt pinning"]
    assert re.search(r"prompt_pins/\d{8}$", summary["run_folder"])
    status, page = webui.request("/file=" + summary["report"])
    assert status == 200 and "<html" in page.lower()
    status, record = webui.request("/file=" + summary["run_folder"] + "/run.json")
    assert status == 200 and record["status"] == "done" and len(record["generations"]) == 2
    assert record["best"]["prompt"] == info["prompt"] and record["ending"]["cause"] == "generations"
    assert record["render"]["seeds"] == [BASE["seed"], BASE["seed"] + 1]
    individuals = [i for generation in record["generations"] for i in generation["individuals"]]
    assert len(individuals) == 4 and len({i["prompt"] for i in individuals}) == 4


def test_a_pinned_run_renders_nothing_after_the_individual_that_pinned_it(webui, target):
    # stop share 1: the first individual at least as close to the target as your prompt pins the run
    options = {"targets": [target], "generations": 4, "lambda_": 4, "cma_seed": 3, "log": False, "first_look": 0,
               "stop_share": 1.0}
    response = webui.post("/sdapi/v1/txt2img", {**BASE, "script_name": SCRIPT, "script_args": [options]})
    summary = json.loads(response["info"])["extra_generation_params"]["Prompt pinning"]
    status, record = webui.request("/file=" + summary["run_folder"] + "/run.json")
    assert status == 200 and record["ending"]["cause"] == "pinned", record["ending"]
    *before, pinning = [individual["loss"] for individual in record["generations"][-1]["individuals"]]
    assert pinning <= record["baseline"]["loss"] < min(before, default=float("inf"))
    assert all(len(generation["individuals"]) == 4 for generation in record["generations"][:-1])


def test_the_pinned_prompt_reproduces_its_images_in_plain_txt2img(webui, pinned):
    response, info = pinned
    plain = webui.post("/sdapi/v1/txt2img", {**BASE, "prompt": info["prompt"],
                                             "negative_prompt": info["negative_prompt"], "seed": info["seed"]})
    for best, again in zip(response["images"], plain["images"], strict=True):
        assert np.abs(decode_image(best) - decode_image(again)).max() <= 2


def test_a_hyperbatch_pinning_with_batch_count_2_reproduces_through_its_infotext(webui):
    # Two batches per individual, a fork strength that is not the setting's: the infotext carries it, and a
    # vanilla call that takes it from there (as pasting the infotext does) gives the same images.
    base = {**BASE, "sampler_name": "DPM++ 2M Hyperbatch", "n_iter": 2, "steps": 4}
    response = webui.post("/sdapi/v1/txt2img", {**base, "script_name": SCRIPT, "script_args": [
        {"generations": 1, "lambda_": 2, "log": False, "fork_strength": 0.5}]})
    info = json.loads(response["info"])
    assert len(response["images"]) == 4 and info["all_seeds"] == [1234, 1235, 1236, 1237]
    assert all("Hyperbatch fork strength: 0.5" in text for text in info["infotexts"])
    plain = webui.post("/sdapi/v1/txt2img", {**base, "prompt": info["prompt"],
                                             "negative_prompt": info["negative_prompt"],
                                             "override_settings": {"hyperbatch_fork_strength": 0.5}})
    for best, again in zip(response["images"], plain["images"], strict=True):
        assert np.abs(decode_image(best) - decode_image(again)).max() <= 2


@pytest.mark.parametrize("changes, payload_changes, says", [
    ({"targets": ["data:image/png;base64,bm90IGFuIGltYWdl"]}, {}, "target image 1"),
    ({}, {"batch_size": 1}, "at least 2 images"),
    ({}, {"prompt": "<lora:missing:1> BREAK", "negative_prompt": ""}, "no words to pin"),
    ({"lambda_": 1}, {}, "(lambda_): must be between 2 and 1000"),
    ({"generations": 0}, {}, "(generations): must be between 1 and 10000"),
])
def test_bad_input_gets_one_clear_message_and_the_server_keeps_serving(webui, changes, payload_changes, says):
    status, body = webui.request("/sdapi/v1/txt2img", {**BASE, **payload_changes, "script_name": SCRIPT,
                                                       "script_args": positional(**changes)})
    assert status == 422 and says in body["detail"], body
    assert webui.get("/sdapi/v1/scripts")  # still serving


def test_a_fault_before_the_first_batch_gets_one_clear_message_and_the_server_keeps_serving(webui):
    # The WebUI's own error while rendering the first batch: a hires upscaler it does not have.
    payload = {**BASE, "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "no such upscaler",
               "hr_additional_modules": ["Use same choices"], "script_name": SCRIPT, "script_args": [{}]}
    status, body = webui.request("/sdapi/v1/txt2img", payload)
    assert status == 500, body
    assert body["detail"].startswith("Prompt pinning failed before the first batch was rendered: ")
    assert "could not find upscaler named no such upscaler" in body["detail"]
    assert webui.post("/sdapi/v1/txt2img", {**BASE, "batch_size": 1})["images"]  # still serving


@pytest.mark.parametrize("stop, n_iter", [("interrupt", 1), ("skip", 1), ("skip", 2)])
def test_interrupt_and_skip_end_the_run_with_its_finished_generations(webui, stop, n_iter):
    result = {}
    payload = {**BASE, "steps": 2, "n_iter": n_iter, "sampler_name": "DPM++ 2M Hyperbatch", "script_name": SCRIPT,
               "script_args": positional(generations=20, lambda_=2, first_look=0, log=False)}  # generations of 2
    job = threading.Thread(target=lambda: result.setdefault("response", webui.request("/sdapi/v1/txt2img", payload)))
    start_and_wait_for_renders(webui, job, 4 * n_iter)
    webui.post(f"/sdapi/v1/{stop}", {})
    job.join(600)
    status, body = result["response"]
    assert status == 200, body
    summary = json.loads(body["info"])["extra_generation_params"]["Prompt pinning"]
    assert summary["status"] == "interrupted" and 1 <= summary["generations"] < 20
    assert len(body["images"]) == BASE["batch_size"] * n_iter  # the best so far
    status, record = webui.request("/file=" + summary["run_folder"] + "/run.json")
    assert record["status"] == "interrupted" and len(record["generations"]) == summary["generations"]
    assert len(webui.post("/sdapi/v1/txt2img", BASE)["images"]) == BASE["batch_size"]  # the next job runs


@pytest.mark.parametrize("masked", [False, True])
def test_hyperbatch_in_img2img_and_inpainting(webui, target, masked):
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    payload = {**BASE, "init_images": [target], "denoising_strength": 0.75, "sampler_name": "DPM++ 2M Hyperbatch",
               "steps": 8, "batch_size": 4}
    if masked:
        payload.update(mask=encode_image(mask), inpainting_fill=1, inpaint_full_res=False)
    images = [decode_image(image) for image in webui.post("/sdapi/v1/img2img", payload)["images"]]
    assert len(images) == 4
    for i in range(4):
        for j in range(i):
            assert pixels_differ(images[i], images[j]) > 0.5, f"images {j} and {i} are copies"
    if masked:  # outside the mask every image keeps the target
        original = decode_image(target.split(",")[1])
        for image in images:
            assert pixels_differ(image[:8], original[:8]) < 3


def test_pinning_in_img2img(webui, target):
    payload = {**BASE, "init_images": [target], "denoising_strength": 0.6, "sampler_name": "Euler a Hyperbatch",
               "steps": 6, "script_name": SCRIPT, "script_args": [{"generations": 1, "lambda_": 2, "log": False}]}
    response = webui.post("/sdapi/v1/img2img", payload)
    summary = json.loads(response["info"])["extra_generation_params"]["Prompt pinning"]
    assert summary["status"] == "done" and len(response["images"]) == BASE["batch_size"]
    assert "img2img-images/prompt_pins/" in summary["run_folder"]
    status, record = webui.request("/file=" + summary["run_folder"] + "/run.json")
    assert record["objective"]["tree"]["steps"] == 4  # int(0.6 * 6) + 1 steps are sampled


def test_too_few_steps_for_a_hyperbatch_fork_is_a_notice_not_a_failure(webui):
    payload = {**BASE, "sampler_name": "DPM++ 2M Hyperbatch", "steps": 2, "batch_size": 4, "script_name": SCRIPT,
               "script_args": [{"generations": 1, "lambda_": 2, "log": False}]}
    response = webui.post("/sdapi/v1/txt2img", payload)
    summary = json.loads(response["info"])["extra_generation_params"]["Prompt pinning"]
    assert summary["status"] == "done" and len(response["images"]) == 4
    assert any("too few to fork" in notice for notice in summary["notices"])


def test_a_run_interrupted_through_the_api_resumes_to_the_uninterrupted_runs_prompt(webui):
    options = {"generations": 3, "lambda_": 2, "cma_seed": 3, "log": False, "patience": 0}
    payload = {**BASE, "steps": 2, "script_name": SCRIPT, "script_args": [options]}
    whole = json.loads(webui.post("/sdapi/v1/txt2img", payload)["info"])
    result = {}
    job = threading.Thread(target=lambda: result.setdefault("response", webui.request("/sdapi/v1/txt2img", payload)))
    start_and_wait_for_renders(webui, job, 4)  # the baseline and generation 0
    webui.post("/sdapi/v1/interrupt", {})
    job.join(600)
    status, body = result["response"]
    stopped = json.loads(body["info"])["extra_generation_params"]["Prompt pinning"]
    assert status == 200 and stopped["status"] == "interrupted" and stopped["generations"] < 3
    resumed = webui.post("/sdapi/v1/txt2img", {**payload, "script_args": [{"resume": stopped["run_folder"]}]})
    info = json.loads(resumed["info"])
    summary = info["extra_generation_params"]["Prompt pinning"]
    assert summary["status"] == "done" and summary["run_folder"] == stopped["run_folder"]
    assert info["prompt"] == whole["prompt"] and info["negative_prompt"] == whole["negative_prompt"]
    assert summary["best_loss"] == whole["extra_generation_params"]["Prompt pinning"]["best_loss"]
    status, refused = webui.request("/sdapi/v1/txt2img", {**payload, "seed": 77, "script_args": [
        {"resume": stopped["run_folder"]}]})
    assert status == 422 and "seeds: [1234, 1235] in the run, [77, 78] now" in refused["detail"]
