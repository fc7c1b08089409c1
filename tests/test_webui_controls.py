"""The script's controls without A1111: argument decoding, target decoding, tooltips, run folders."""

import base64
import io
import json
import re
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from lib_pinning.objective import TargetError
from lib_pinning.runfile import new_run_dir
from lib_pinning.search import SearchOptions
from lib_pinning.webui import targets
from lib_pinning.webui.controls import CONTROLS, KEYS, SettingsError, decode, defaults, script_args

ROOT = Path(__file__).resolve().parents[1]


# --- arguments -------------------------------------------------------------------------------------------


def test_defaults_give_the_engines_own_defaults():
    settings = decode(defaults())
    assert settings.search == SearchOptions(cma_seed=0)  # every formula default left to the search
    assert settings.cma_seed_from_image and settings.loss_mode == "pairwise" and settings.granularity == "word"
    assert settings.hyperbatch_weights and not settings.hyperbatch_force and settings.fork_strength == 1.0
    assert settings.targets is None


def test_values_reach_the_search_options():
    settings = decode(script_args(generations=5, cma_seed=9, sigma=0.2, lambda_=6, mu=2, weights="equal", cs=0.3,
                             size_limit=2.0, size_limit_error=-1, size_limit_weight=4.0, log=False,
                             cmatrix="[[2, 0], [0, 1]]"))
    search = settings.search
    assert (search.generations, search.cma_seed, search.sigma, search.lambda_, search.mu) == (5, 9, 0.2, 6, 2)
    assert (search.weights, search.cs, search.size_limit, search.size_limit_weight) == ("equal", 0.3, 2.0, 4.0)
    assert search.size_limit_error is None and search.damps is None and not search.log
    assert search.cmatrix == [[2.0, 0.0], [0.0, 1.0]] and not settings.cma_seed_from_image
    # the API may send whole numbers as floats (JSON) or strings
    assert decode(script_args(generations=7.0, lambda_="8")).search.lambda_ == 8


@pytest.mark.parametrize("key, value, says", [
    ("generations", 0, "at least 1"),
    ("generations", 2.5, "whole number"),
    ("sigma", float("nan"), "finite"),
    ("sigma", 9.0, "between"),
    ("lambda_", "many", "a number is needed"),
    ("lambda_", True, "a number is needed"),
    ("loss_mode", "mse", "must be one of"),
    ("log", "yes", "true or false"),
    ("cmatrix", "[[1, 0], [0", "JSON list of rows"),
    ("cma_seed", -5, "-1 or more"),
    ("size_limit", -1, "at least 0"),
])
def test_bad_values_name_their_control(key, value, says):
    control = next(c for c in CONTROLS if c.key == key)
    with pytest.raises(SettingsError) as caught:
        decode(script_args(**{key: value}))
    assert control.label in str(caught.value) and says in str(caught.value)


def test_the_wrong_number_of_script_args_is_refused_with_the_order():
    with pytest.raises(SettingsError, match=r"takes 25 script arguments in this order: targets, loss_mode"):
        decode(defaults()[:-1])


def test_options_the_search_refuses_are_refused_before_rendering():
    settings = decode(script_args(lambda_=1))
    with pytest.raises(ValueError, match="at least 2"):
        settings.search.resolved(5)


def test_the_cma_seed_is_the_image_seed_unless_given():
    assert decode(defaults()).search_for(1234).cma_seed == 1234
    given = decode(script_args(cma_seed=7))
    assert given.search_for(1234).cma_seed == 7
    assert decode(defaults()).search.cma_seed == 0  # the decoded settings themselves are not changed


def test_hyperbatch_weights_follow_the_sampler_and_each_batch_is_its_own_trees():
    settings = decode(script_args(hyperbatch_weight_type="Polynomial", hyperbatch_weight_scale=0.5))
    weights = settings.weighting("DPM++ 2M Hyperbatch", 12, 4)
    assert (weights.kind, weights.scale, weights.steps, weights.tree_size) == ("Polynomial", 0.5, 12, 4)
    assert settings.weighting("DPM++ 2M", 12, 4) is None  # a plain sampler forks nothing
    assert decode(script_args(hyperbatch_force=True)).weighting("DPM++ 2M", 12, 4) is not None
    assert decode(script_args(hyperbatch_weights=False)).weighting("DPM++ 2M Hyperbatch", 12, 4) is None


def test_notices_for_too_few_steps_to_fork_and_unused_targets():
    settings = decode(defaults())
    assert settings.notices("DPM++ 2M Hyperbatch", 3, 8, 1) == [
        "3 steps are too few to fork a batch of 8 (steps must exceed log2 of the batch size): "
        "DPM++ 2M Hyperbatch samples the whole batch at every step"]
    assert settings.notices("DPM++ 2M Hyperbatch", 4, 8, 1) == []
    assert settings.notices("DPM++ 2M", 1, 8, 1) == []
    consistency = decode(script_args(loss_mode="consistency"))
    assert consistency.notices("Euler a", 20, 2, 2) == ["the loss is batch consistency: the target images are "
                                                        "not used"]
    assert consistency.notices("Euler a", 20, 2, 0) == []


def test_every_control_has_a_tooltip_and_every_tooltip_a_control():
    script = (ROOT / "javascript" / "prompt_pinning.js").read_text()
    tooltips = dict(re.findall(r'^\s*"(.+?)":\s*"(.+)",?$', script, flags=re.M))
    assert set(tooltips) == {control.label for control in CONTROLS}
    assert all(len(text) > 20 for text in tooltips.values())


def test_the_readme_lists_the_script_args_in_their_order():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("<!-- script_args -->"):readme.index("<!-- /script_args -->")]
    listed = re.findall(r"^\| *(\d+) *\| *`(\w+)` *\|", section, flags=re.M)
    assert [(int(i), key) for i, key in listed] == list(enumerate(KEYS))
    for control in CONTROLS:  # each row states the default the UI starts with
        row = next(line for line in section.splitlines() if f"`{control.key}`" in line)
        assert f"`{json.dumps(control.default)}`" in row, row


# --- targets ---------------------------------------------------------------------------------------------


def png_bytes(size=(12, 8), colour=(200, 30, 30), mode="RGB", fmt="PNG"):
    stream = io.BytesIO()
    Image.new(mode, size, colour).save(stream, format=fmt)
    return stream.getvalue()


def test_no_targets_means_the_first_batch_is_the_target():
    for empty in (None, "", [], [None, ""]):
        assert targets.decode_targets(empty) == []


def test_api_targets_are_base64_or_data_urls(tmp_path):
    raw = base64.b64encode(png_bytes()).decode()
    jpeg = base64.b64encode(png_bytes(colour=(10, 200, 10), fmt="JPEG")).decode()
    assert jpeg.startswith("/9j/")  # looks like an absolute path, is not one
    decoded = targets.decode_targets([f"data:image/png;base64,{raw}", raw, jpeg])
    assert [image.size for image in decoded] == [(12, 8)] * 3
    assert decoded[0].getpixel((0, 0)) == (200, 30, 30)
    assert abs(decoded[2].getpixel((3, 3))[1] - 200) < 8
    assert targets.decode_targets(raw)[0].size == (12, 8)  # a single string, not in a list


def test_ui_targets_are_uploaded_files(tmp_path):
    path = tmp_path / "target.png"
    path.write_bytes(png_bytes((5, 6)))
    uploads = [SimpleNamespace(name=str(path)), {"path": str(path)}, str(path), path]
    assert [image.size for image in targets.decode_targets(uploads)] == [(5, 6)] * 4
    array = np.zeros((4, 3, 3), dtype=np.uint8)
    assert targets.decode_targets([array, Image.new("RGB", (2, 2))])[0].size == (3, 4)


@pytest.mark.parametrize("value, says", [
    ("not base64 at all!", "not a base64 image"),
    (base64.b64encode(b"GIF89a but not really").decode(), "not a readable image"),
    ("data:image/png,plain", "must be base64-encoded"),
    (base64.b64encode(png_bytes()[:40]).decode(), "not a readable image"),  # truncated
    (12, "expected an uploaded file or a base64 string"),
    (np.zeros((2, 2), dtype=np.float32), "uint8"),
])
def test_bad_targets_are_refused_with_their_number(value, says):
    good = base64.b64encode(png_bytes()).decode()
    with pytest.raises(TargetError) as caught:
        targets.decode_targets([good, value])
    assert "target image 2" in str(caught.value) and says in str(caught.value)


def test_missing_empty_and_huge_files_are_refused(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(TargetError, match="empty"):
        targets.decode_targets([SimpleNamespace(name=str(empty))])
    with pytest.raises(TargetError, match="is gone"):
        targets.decode_targets([SimpleNamespace(name=str(tmp_path / "missing.png"))])
    huge = tmp_path / "huge.png"
    Image.new("1", (5000, 4000)).save(huge)  # a few kB on disk, 20 megapixels decoded
    with pytest.raises(TargetError, match="larger than"):
        targets.decode_targets([{"name": str(huge)}])
    with pytest.raises(TargetError, match="at most"):
        targets.decode_targets([base64.b64encode(png_bytes()).decode()] * (targets.MAX_TARGETS + 1))


# --- run folders -----------------------------------------------------------------------------------------


def test_run_folders_are_numbered_and_never_shared(tmp_path):
    (tmp_path / "00000007").mkdir()
    (tmp_path / "notes").mkdir()
    made, lock = [], threading.Lock()

    def make():
        path = new_run_dir(tmp_path)
        with lock:
            made.append(path.name)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(made) == [f"{n:08d}" for n in range(8, 16)]


def test_the_readme_api_example_sends_valid_script_args():
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"^script_args = (\[.*?^\])", readme, flags=re.S | re.M).group(1)
    target = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    args = eval(example, {"target": target, "True": True, "False": False})  # a literal list, with `target`
    settings = decode(args)
    assert targets.decode_targets(settings.targets)[0].size == (12, 8)
    assert settings.search.generations == 20 and settings.fork_strength == 1.0
