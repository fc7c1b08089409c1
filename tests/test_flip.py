"""lib_pinning.flip (torch LDR-ꟻLIP) against NVlabs' flip_evaluator 1.7 as the oracle."""

import math

import flip_evaluator
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib_pinning.flip import DEFAULT_PIXELS_PER_DEGREE, FlipImages, _ieee_float32_convolutions, flip_error, flip_map

ORACLE_TOLERANCE = 5e-4  # on the mean flip_evaluator returns
# That mean comes from a float32 running sum over its error map: at 512^2 it is off by up to ~1e-3 for high-error
# pairs (1.1e-4 for the 512^2 pairs below). The exact mean of its map agrees with ours to ~5e-6.
ORACLE_MAP_MEAN_TOLERANCE = 2e-5
ORACLE_PIXEL_TOLERANCE = 1e-4
SAME_CODE_TOLERANCE = 1e-6  # two of our own entry points on the same pair


# ---------------------------------------------------------------- oracle


def oracle(test, reference, pixels_per_degree=None):
    """flip_evaluator's (mean, error map) for HxWx3 sRGB arrays in [0,1]; its API takes (reference, test).

    flip_evaluator calls sys.exit on some bad arguments, so everything is checked before it is called.
    """
    arrays = [np.ascontiguousarray(image, dtype=np.float32) for image in (reference, test)]
    for array in arrays:
        assert array.ndim == 3 and array.shape[2] == 3 and array.shape == arrays[0].shape, array.shape
        assert np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1
    parameters = {} if pixels_per_degree is None else {"ppd": float(pixels_per_degree)}
    assert parameters.get("ppd", 1.0) > 0
    error_map, mean, _ = flip_evaluator.evaluate(*arrays, "LDR", applyMagma=False, parameters=parameters)
    return mean, error_map[..., 0]


def as_tensor(image):
    """HxWx3 numpy -> 3xHxW float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)


# ---------------------------------------------------------------- seeded test images (HxWx3 float32 in [0,1])


def gradient(h, w, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w, 2)
    start, dx, dy = rng.random((3, 3)) * [[0.6], [0.4], [0.4]]
    return np.clip(start + x[..., None] * dx + y[..., None] * dy, 0, 1).astype(np.float32)


def noise(h, w, seed):
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


def steps(h, w, seed):
    """Vertical colour bands with sharp edges."""
    rng = np.random.default_rng(seed)
    colours = rng.random((5, 3))
    bands = (np.arange(w) * 5 // max(w, 1)).clip(0, 4)
    return np.broadcast_to(colours[bands][None], (h, w, 3)).astype(np.float32)


def flat(h, w, seed):
    colour = np.random.default_rng(seed).random(3)
    return np.broadcast_to(colour, (h, w, 3)).astype(np.float32)


def checker(h, w, seed, cell=4):
    rng = np.random.default_rng(seed)
    dark, light = rng.random((2, 3))
    y, x = np.mgrid[0:h, 0:w]
    return np.where((((y // cell) + (x // cell)) % 2)[..., None] == 0, dark, light).astype(np.float32)


def noisy(image, seed, sigma=0.05):
    rng = np.random.default_rng(seed)
    return np.clip(image + sigma * rng.standard_normal(image.shape), 0, 1).astype(np.float32)


def box_blur(image):
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = image.shape[:2]
    return sum(padded[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9


def one_pixel_changed(image):
    changed = image.copy()
    changed[image.shape[0] // 2, image.shape[1] // 3] = 1 - changed[image.shape[0] // 2, image.shape[1] // 3]
    return changed


def posterized(image, levels=4):
    return (np.round(image * (levels - 1)) / (levels - 1)).astype(np.float32)


def solid(h, w, rgb):
    return np.broadcast_to(np.asarray(rgb, dtype=np.float32), (h, w, 3)).copy()


PAIRS = {
    "noise-noise-64": lambda: (noise(64, 64, 1), noise(64, 64, 2)),
    "gradient-gradient-64": lambda: (gradient(64, 64, 3), gradient(64, 64, 4)),
    "gradient-noisy-64": lambda: (noisy(gradient(64, 64, 5), 6), gradient(64, 64, 5)),
    "gradient-noise-64": lambda: (gradient(64, 64, 7), noise(64, 64, 8)),
    "steps-shifted-64": lambda: (steps(64, 64, 9), np.roll(steps(64, 64, 9), 3, axis=1)),
    "steps-blurred-64": lambda: (box_blur(steps(64, 64, 10)), steps(64, 64, 10)),
    "steps-other-colours-64": lambda: (steps(64, 64, 11), steps(64, 64, 12)),
    "flat-flat-64": lambda: (flat(64, 64, 13), flat(64, 64, 14)),
    "flat-gradient-64": lambda: (flat(64, 64, 15), gradient(64, 64, 16)),
    "checker-flat-64": lambda: (checker(64, 64, 17), flat(64, 64, 18)),
    "checker-blurred-64": lambda: (box_blur(checker(64, 64, 19, cell=2)), checker(64, 64, 19, cell=2)),
    "channels-swapped-64": lambda: (gradient(64, 64, 20)[..., ::-1], gradient(64, 64, 20)),
    "darker-64": lambda: (0.8 * noisy(gradient(64, 64, 21), 22), noisy(gradient(64, 64, 21), 22)),
    "posterized-64": lambda: (posterized(gradient(64, 64, 23)), gradient(64, 64, 23)),
    "one-pixel-64": lambda: (one_pixel_changed(gradient(64, 64, 24)), gradient(64, 64, 24)),
    "black-white-64": lambda: (solid(64, 64, (0, 0, 0)), solid(64, 64, (1, 1, 1))),
    "green-blue-64": lambda: (solid(64, 64, (0, 1, 0)), solid(64, 64, (0, 0, 1))),
    "noisy-steps-48x80": lambda: (noisy(steps(48, 80, 25), 26, 0.1), steps(48, 80, 25)),
    "gradient-noise-96x40": lambda: (gradient(96, 40, 27), noise(96, 40, 28)),
    "tiny-noise-16x24": lambda: (noise(16, 24, 29), noise(16, 24, 30)),
    "tiny-gradient-8x8": lambda: (gradient(8, 8, 31), noisy(gradient(8, 8, 31), 32)),
    "tiny-3x7": lambda: (noise(3, 7, 33), noise(3, 7, 34)),
    "single-pixel-1x1": lambda: (noise(1, 1, 35), noise(1, 1, 36)),
    "noisy-gradient-512": lambda: (noisy(gradient(512, 512, 37), 38, 0.03), gradient(512, 512, 37)),
    "steps-noise-512": lambda: (steps(512, 512, 39), noise(512, 512, 40)),
}


@pytest.fixture(autouse=True, scope="module")
def _few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(min(2, previous))
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------- agreement with flip_evaluator


@pytest.mark.parametrize("name", list(PAIRS))
def test_mean_matches_flip_evaluator(name):
    test, reference = PAIRS[name]()
    expected, expected_map = oracle(test, reference)
    got = flip_error(as_tensor(test), as_tensor(reference))
    assert got.shape == (1,) and got.dtype == torch.float32
    assert abs(float(got) - expected) <= ORACLE_TOLERANCE
    assert abs(float(got) - expected_map.mean(dtype=np.float64)) <= ORACLE_MAP_MEAN_TOLERANCE


@pytest.mark.parametrize("name", ["gradient-noisy-64", "steps-blurred-64", "noisy-steps-48x80", "tiny-noise-16x24"])
def test_error_map_matches_flip_evaluator(name):
    test, reference = PAIRS[name]()
    _, expected = oracle(test, reference)
    got = flip_map(as_tensor(test), as_tensor(reference))[0].numpy()
    assert np.abs(got - expected).max() <= ORACLE_PIXEL_TOLERANCE


@pytest.mark.parametrize("pixels_per_degree", [20.0, 42.5, 120.0])
def test_other_viewing_distances_match_flip_evaluator(pixels_per_degree):
    test, reference = noisy(steps(40, 56, 41), 42, 0.1), steps(40, 56, 41)
    expected, _ = oracle(test, reference, pixels_per_degree)
    got = flip_error(as_tensor(test), as_tensor(reference), pixels_per_degree=pixels_per_degree)
    assert abs(float(got) - expected) <= ORACLE_TOLERANCE


def test_default_pixels_per_degree_is_flip_evaluators():
    _, _, parameters = flip_evaluator.evaluate(flat(4, 4, 0), flat(4, 4, 1), "LDR", applyMagma=False)
    assert DEFAULT_PIXELS_PER_DEGREE == pytest.approx(parameters["ppd"], rel=1e-6)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    make=st.sampled_from([noise, gradient, steps, checker]),
    sigma=st.floats(0.0, 0.3),
)
def test_random_small_pairs_match_flip_evaluator(seed, height, width, make, sigma):
    reference = make(height, width, seed)
    test = noisy(reference, seed + 1, sigma)
    expected, _ = oracle(test, reference)
    assert abs(float(flip_error(as_tensor(test), as_tensor(reference))) - expected) <= ORACLE_TOLERANCE


# ---------------------------------------------------------------- properties of our entry points


def image_batch(n, h, w, seed):
    makers = [noise, gradient, steps, checker, flat]
    return torch.stack([as_tensor(noisy(makers[k % len(makers)](h, w, seed + k), seed + 100 + k)) for k in range(n)])


@pytest.mark.parametrize("make", [noise, gradient, steps, flat])
def test_identical_images_give_exactly_zero(make):
    image = as_tensor(make(48, 32, 50))
    assert float(flip_error(image, image)) == 0.0
    assert float(flip_map(image, image).abs().max()) == 0.0
    assert float(FlipImages(image[None]).errors([(0, 0)])) == 0.0


@pytest.mark.parametrize("chunk_bytes", [1, None, 2**30], ids=["one-pair-chunks", "default", "one-chunk"])
def test_pairwise_equals_one_pair_calls(chunk_bytes):
    images = image_batch(6, 40, 56, 60)
    pairs, errors = FlipImages(images, chunk_bytes=chunk_bytes).pairwise()
    assert pairs.tolist() == [[i, j] for i in range(6) for j in range(i + 1, 6)]
    one_by_one = torch.cat([flip_error(images[i], images[j]) for i, j in pairs.tolist()])
    torch.testing.assert_close(errors, one_by_one, rtol=0, atol=SAME_CODE_TOLERANCE)


def test_errors_accepts_any_pairs_and_is_symmetric():
    images = FlipImages(image_batch(5, 32, 32, 70))
    pairs = [(3, 1), (1, 3), (0, 4), (4, 0), (2, 2)]
    errors = images.errors(pairs)
    torch.testing.assert_close(errors, images.errors(torch.tensor(pairs)), rtol=0, atol=0)
    assert abs(float(errors[0] - errors[1])) <= SAME_CODE_TOLERANCE
    assert abs(float(errors[2] - errors[3])) <= SAME_CODE_TOLERANCE
    assert float(errors[4]) == 0.0
    assert images.errors([]).shape == (0,)


def test_single_reference_broadcasts():
    tests = image_batch(4, 24, 40, 80)
    reference = as_tensor(gradient(24, 40, 81))
    expected = torch.cat([flip_error(test, reference) for test in tests])
    for shared in (reference, reference[None]):
        torch.testing.assert_close(flip_error(tests, shared), expected, rtol=0, atol=SAME_CODE_TOLERANCE)
    per_test = flip_error(tests, reference.expand(4, 3, 24, 40))
    torch.testing.assert_close(per_test, expected, rtol=0, atol=SAME_CODE_TOLERANCE)
    assert flip_map(tests, reference).shape == (4, 24, 40)


def test_flip_map_mean_equals_flip_error():
    tests, references = image_batch(3, 36, 20, 90), image_batch(3, 36, 20, 95)
    maps = flip_map(tests, references)
    assert maps.shape == (3, 36, 20) and float(maps.min()) >= 0 and float(maps.max()) <= 1
    torch.testing.assert_close(maps.mean(dim=(1, 2)), flip_error(tests, references), rtol=1e-6, atol=1e-7)


def test_float64_input_gives_the_float32_result():
    test, reference = image_batch(1, 16, 16, 100), image_batch(1, 16, 16, 101)
    assert float(flip_error(test.double(), reference.double())) == float(flip_error(test, reference))


@pytest.mark.parametrize("user_setting", ["tf32", "ieee", "none"])
def test_tf32_is_off_while_preprocessing_on_cuda_and_restored(user_setting):
    conv = torch.backends.cudnn.conv  # the flags can be set without a GPU
    previous = conv.fp32_precision
    conv.fp32_precision = user_setting
    try:
        with _ieee_float32_convolutions(torch.device("cuda")):
            assert conv.fp32_precision == "ieee"
        assert conv.fp32_precision == user_setting
    finally:
        conv.fp32_precision = previous


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_matches_cpu():
    images = image_batch(5, 64, 48, 110)
    _, on_cpu = FlipImages(images).pairwise()
    _, on_gpu = FlipImages(images.cuda()).pairwise()
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="device|cuda"):
        flip_error(images.cuda(), images)


# ---------------------------------------------------------------- bad input


def _good(h=8, w=8):
    return torch.full((1, 3, h, w), 0.5)


def _with(value):
    image = _good()
    image[0, 1, 2, 3] = value
    return image


BAD_INPUTS = {
    "2-d": (torch.zeros(8, 8), _good()),
    "5-d": (torch.zeros(1, 1, 3, 8, 8), _good()),
    "one-channel": (torch.zeros(1, 1, 8, 8), _good()),
    "four-channels": (torch.zeros(1, 4, 8, 8), _good()),
    "nan": (_with(float("nan")), _good()),
    "inf": (_with(float("inf")), _good()),
    "above-one": (_with(1.01), _good()),
    "below-zero": (_good(), _with(-0.01)),
    "sizes-differ": (_good(8, 8), _good(8, 9)),
    "empty-batch": (torch.zeros(0, 3, 8, 8), _good()),
    "zero-height": (torch.zeros(1, 3, 0, 8), torch.zeros(1, 3, 0, 8)),
    "reference-count": (_good().expand(3, 3, 8, 8), _good().expand(2, 3, 8, 8)),
    "integer-dtype": (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), _good()),
    "numpy-array": (np.zeros((1, 3, 8, 8), dtype=np.float32), _good()),
}


@pytest.fixture
def oracle_forbidden(monkeypatch):
    """Bad input must be refused before any FLIP evaluation (flip_evaluator would sys.exit on some)."""

    def refuse(*args, **kwargs):
        pytest.fail("flip_evaluator was reached with bad input")

    monkeypatch.setattr(flip_evaluator, "evaluate", refuse)


@pytest.mark.parametrize("name", list(BAD_INPUTS))
@pytest.mark.parametrize("entry_point", [flip_error, flip_map])
def test_bad_input_raises_value_error(name, entry_point, oracle_forbidden):
    test, reference = BAD_INPUTS[name]
    with pytest.raises(ValueError, match="^flip: "):
        entry_point(test, reference)


@pytest.mark.parametrize("pixels_per_degree", [0, -67.0, math.nan, math.inf, "67", True])
def test_bad_pixels_per_degree_raises_value_error(pixels_per_degree, oracle_forbidden):
    with pytest.raises(ValueError, match="pixels_per_degree"):
        flip_error(_good(), _good(), pixels_per_degree=pixels_per_degree)


@pytest.mark.parametrize("chunk_bytes", [0, -1, 1.5])
def test_bad_chunk_bytes_raises_value_error(chunk_bytes):
    with pytest.raises(ValueError, match="chunk_bytes"):
        FlipImages(_good(), chunk_bytes=chunk_bytes)


@pytest.mark.parametrize("pairs", [[(0, 2)], [(-1, 0)], [(0, 1, 1)], torch.tensor([[0.0, 1.0]]), [(0,)]])
def test_bad_pairs_raise_value_error(pairs):
    images = FlipImages(_good().expand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="pair"):
        images.errors(pairs)


def test_weighted_errors_pick_each_pairs_weights_across_chunks():
    generator = torch.Generator().manual_seed(8)
    images = torch.rand(4, 3, 16, 16, generator=generator)
    weights = torch.rand(2, 16, 16, generator=generator)
    pairs, index = [(0, 1), (2, 3), (1, 3), (0, 2)], [1, 0, 1, 0]
    small = FlipImages(images, chunk_bytes=1)  # one pair per chunk
    maps = FlipImages(images).error_maps(pairs).double()
    expected = [(maps[p] * weights[i]).sum() / weights[i].sum() for p, i in enumerate(index)]
    assert torch.allclose(small.weighted_errors(pairs, weights, index), torch.stack(expected).double(), atol=1e-6)
