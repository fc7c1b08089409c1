"""The command line pins against a running AUTOMATIC1111 over its HTTP API (`pin --webui URL`), and the pinned
prompt, rendered there again in plain txt2img, gives the run's images. Tiny sizes, as every live test."""

import numpy as np
from PIL import Image

from lib_pinning import cli
from lib_pinning.record import read_record

from live_support import WEBUI_URL, decode_image, encode_image

SETTINGS = ["--width", "64", "--height", "64", "--steps", "4", "--batch", "2", "--seed", "1234", "--cfg-scale", "7",
            "--scheduler", "Karras", "--generations", "2", "--first-look", "0", "--lambda", "4", "--quiet"]


def test_the_command_line_pins_on_the_webui_and_the_pinned_prompt_renders_the_same_there(webui, tmp_path):
    out = tmp_path / "run"
    code = cli.main(["pin", "--webui", WEBUI_URL, "--prompt", "a red cube on a wooden table", "--negative", "blurry",
                     "--sampler", "DPM++ 2M Hyperbatch", *SETTINGS, "--out", str(out)])
    assert code == 0
    record = read_record(out)
    assert record.status == "done" and len(record.generations) == 2
    assert record.render.model == webui.get("/sdapi/v1/options")["sd_model_checkpoint"]
    best = record.best
    again = webui.post("/sdapi/v1/txt2img", {
        "prompt": best.prompt, "negative_prompt": best.negative_prompt, "seed": 1234, "batch_size": 2, "n_iter": 1,
        "steps": 4, "width": 64, "height": 64, "cfg_scale": 7, "sampler_name": "DPM++ 2M Hyperbatch",
        "scheduler": "Karras", "send_images": True, "save_images": False})
    images = [decode_image(image) for image in again["images"]]
    for seed, image in zip(record.render.seeds, images):
        saved = np.asarray(Image.open(out / best.folder / f"seed-{seed}.png").convert("RGB"))
        assert np.array_equal(saved, image.astype(saved.dtype)), f"seed {seed} renders otherwise"


def test_a_sampler_the_webui_lacks_is_named_and_nothing_is_written(webui, tmp_path, capsys):
    code = cli.main(["pin", "--webui", WEBUI_URL, "--prompt", "a red cube", "--sampler", "Nonesuch", *SETTINGS,
                     "--out", str(tmp_path / "run")])
    assert code == cli.BAD_INPUT and f"worker {WEBUI_URL} has no sampler 'Nonesuch'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_img2img_pins_from_an_init_image_and_the_pinned_prompt_renders_the_same_there(webui, tmp_path):
    init = tmp_path / "init.png"
    gradient = np.linspace(0, 255, 64, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(gradient, (64, 1)), np.tile(gradient[:, None], (1, 64)),
                              np.full((64, 64), 128, np.uint8)], axis=-1)).save(init)
    out = tmp_path / "run"
    code = cli.main(["pin", "--webui", WEBUI_URL, "--prompt", "a red cube on a wooden table", "--sampler",
                     "DPM++ 2M", *SETTINGS, "--init-image", str(init), "--denoising-strength", "0.6",
                     "--generations", "1", "--out", str(out)])
    assert code == 0
    record = read_record(out)
    assert record.render.extra["denoising_strength"] == 0.6
    best = record.best
    again = webui.post("/sdapi/v1/img2img", {
        "init_images": [encode_image(Image.open(init))], "denoising_strength": 0.6, "prompt": best.prompt,
        "negative_prompt": best.negative_prompt, "seed": 1234, "batch_size": 2, "n_iter": 1, "steps": 4,
        "width": 64, "height": 64, "cfg_scale": 7, "sampler_name": "DPM++ 2M", "scheduler": "Karras",
        "send_images": True, "save_images": False, "include_init_images": False})
    for seed, image in zip(record.render.seeds, [decode_image(image) for image in again["images"]]):
        saved = np.asarray(Image.open(out / best.folder / f"seed-{seed}.png").convert("RGB"))
        assert np.array_equal(saved, image.astype(saved.dtype)), f"seed {seed} renders otherwise"
