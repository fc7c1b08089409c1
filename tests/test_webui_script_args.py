"""The script's arguments without A1111: positional and named script_args, target decoding, run folders."""

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

from lib_pinning.images import TargetError
from lib_pinning.options import SCRIPT_CONTROLS, OptionError, PinOptions
from lib_pinning.runfile import new_run_dir
from lib_pinning.webui import targets
from lib_pinning.webui.script_args import decode, positional, sent_count

ROOT = Path(__file__).resolve().parents[1]


# --- arguments -------------------------------------------------------------------------------------------


def test_defaults_give_the_schemas_defaults():
    assert decode(positional()) == PinOptions()
    assert decode([{}]) == PinOptions()


def test_values_by_position_or_by_name_give_the_same_options():
    values = dict(generations=5, cma_seed=9, sigma=0.2, lambda_=6, mu=2, weights="equal", cs=0.3, size_limit=2.0,
                  size_limit_weight=4.0, log=False, cmatrix="[[2, 0], [0, 1]]", keep="blue sky, red", fork_strength=0.5)
    by_position, by_name = decode(positional(**values)), decode([values])
    assert by_position == by_name
    assert (by_name.generations, by_name.cma_seed, by_name.lambda_, by_name.cmatrix) == (5, 9, 6, ((2.0, 0.0), (0.0, 1.0)))
    assert by_name.keep == ("blue sky", "red") and by_name.size_limit_error == -1
    # the API may send whole numbers as floats (JSON) or strings, and lists where the UI sends text
    assert decode([{"generations": 7.0, "lambda_": "8", "keep": ["a", "b"]}]).keep == ("a", "b")


@pytest.mark.parametrize("key, value, says", [
    ("generations", 0, "between 1 and 10000 (or -1)"),
    ("generations", 2.5, "whole number"),
    ("sigma", float("nan"), "finite"),
    ("sigma", 9.0, "between 0.01 and 3"),
    ("lambda_", "many", "a whole number is needed"),
    ("lambda_", True, "a whole number is needed"),
    ("loss_mode", "mse", "must be one of pairwise, target, consistency"),
    ("log", "yes", "true or false"),
    ("cmatrix", "[[1, 0], [0", "JSON list of rows"),
    ("cma_seed", -5, "between 0 and 4294967295 (or -1)"),
    ("size_limit", -1, "between 0 and 100"),
    ("hyperbatch_weight_scale", 1e300, "between 0 and 4"),
    ("fork_strength", -0.5, "between 0 and 2 (or -1)"),
    ("keep", 5, "a list of words or a comma-separated text"),
])
def test_bad_values_name_their_option_and_value(key, value, says):
    spec = next(spec for spec in SCRIPT_CONTROLS if spec.name == key)
    with pytest.raises(OptionError) as caught:
        decode(positional(**{key: value}))
    assert str(caught.value).startswith(f"{spec.label} ({key}): ") and says in str(caught.value)
    assert repr(value)[:20] in str(caught.value)


def test_the_wrong_number_of_script_args_is_refused_with_the_order():
    with pytest.raises(OptionError, match=rf"takes {len(SCRIPT_CONTROLS)} script_args in this order: targets, loss_mode"):
        decode(positional()[:-2])  # 39 values are what the version before stop_share took
    with pytest.raises(OptionError, match="got 3"):
        decode(positional(), sent=3)  # what the client sent counts, not the slice A1111 hands over


def test_the_count_sent_is_read_from_the_whole_argument_list():
    script = SimpleNamespace(args_from=4, args_to=31)
    later = SimpleNamespace(args_from=31, args_to=33)
    p = SimpleNamespace(scripts=SimpleNamespace(scripts=[later, script]), script_args=(0,) * (33 + 1))
    assert sent_count(script, p, 27) == 28
    assert sent_count(script, SimpleNamespace(), 27) == 27  # no bookkeeping: what was received


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
    options = decode(args)
    assert targets.decode_targets(options.targets)[0].size == (12, 8)
    assert options.generations == 20 and options.fork_strength == -1
    named = re.search(r"^named = (\[.*\])$", readme, flags=re.M).group(1)
    assert decode(eval(named, {"target": target})) == options
