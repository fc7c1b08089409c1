import copy
import inspect
import itertools
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from lib_pinning import hyperbatch as hb
from lib_pinning.embedded import SIGMA_MAX, SIGMA_MIN, EmbeddedModel, EmbeddedRenderer
from lib_pinning.noise import SeededNoise
from lib_pinning.samplers import SAMPLERS, noise_kwargs, sigmas

HYPERBATCH = {
    "Euler a": hb.sample_euler_ancestral_hyperbatch,
    "DPM++ 2M": hb.sample_dpmpp_2m_hyperbatch,
    "DPM++ SDE": hb.sample_dpmpp_sde_hyperbatch,
    "DPM++ 2M SDE": hb.sample_dpmpp_2m_sde_hyperbatch,
}
PRIOR = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)  # over the 4 prototypes, not via a prompt


@pytest.fixture(scope="module")
def model():
    return EmbeddedModel(count=4, size=8, seed=1)


def run(model, function, name, seeds, steps, cfg_scale=1.5, denoiser=None, **options):
    """One sampler call on the embedded model with seeded noise, as EmbeddedRenderer makes it."""
    schedule = sigmas(steps, SIGMA_MIN, SIGMA_MAX)
    noise = SeededNoise(seeds, model.image_shape)
    rows = len(seeds)
    extra_args = {"cond": PRIOR.log().float().expand(rows, -1), "uncond": torch.zeros(rows, 4),
                  "cond_scale": cfg_scale}
    return function(denoiser or model.denoiser, noise.initial(float(schedule[0])), schedule, extra_args=extra_args,
                    disable=True, **noise_kwargs(SAMPLERS[name], noise, schedule), **options)


def sizes(batch_size, steps):
    return [size for _, size in hb.schedule(batch_size, steps)]


# --- schedule and traces ----------------------------------------------------------------------------------


def segment_lengths(batch_sizes):
    return [(size, len(list(run))) for size, run in itertools.groupby(batch_sizes)]


def test_the_default_schedule_is_the_originals_even_doubling():
    plan = hb.schedule(8, 20)
    assert [step for step, _ in plan] == list(range(20))
    assert segment_lengths([size for _, size in plan]) == [(1, 4), (2, 5), (4, 5), (8, 6)]


def test_the_last_fork_of_a_batch_that_is_not_a_power_of_two_adds_only_the_leftover_rows():
    assert segment_lengths(sizes(7, 20)) == [(1, 4), (2, 5), (4, 5), (7, 6)]
    assert segment_lengths(sizes(5, 12)) == [(1, 2), (2, 3), (4, 3), (5, 4)]


def test_a_batch_of_one_never_forks():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert hb.schedule(1, 5) == [(i, 1) for i in range(5)]


@pytest.mark.parametrize("batch_size, steps", [(8, 3), (8, 1), (2, 1), (7, 2), (16, 4)])
def test_too_few_steps_fall_back_to_plain_sampling_with_a_warning(batch_size, steps):
    with pytest.warns(hb.HyperbatchFallbackWarning):
        assert hb.schedule(batch_size, steps) == [(i, batch_size) for i in range(steps)]
    assert hb.traces(batch_size, steps) == [[row] for row in range(batch_size)]


def test_one_step_more_than_log2_forks_at_every_step():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sizes(8, 4) == [2, 4, 8, 8]  # the first two rows start from their own noise
        assert sizes(7, 3) == [2, 4, 7]


def test_traces_match_the_originals_example():
    # The original's get_hyperbatch_traces(7, 20), written leaf first; ours are root first.
    original = [[0, 0, 0, 0], [1, 1, 1, 0], [2, 2, 0, 0], [3, 3, 1, 0], [4, 0, 0, 0], [5, 1, 1, 0], [6, 2, 0, 0]]
    assert hb.traces(7, 20) == [trace[::-1] for trace in original]
    assert hb.traces(8, 20)[5] == [0, 1, 1, 5]


@pytest.mark.parametrize("batch_size, steps", [(8, 20), (7, 20), (16, 9), (3, 4), (8, 4), (1, 3)])
def test_traces_agree_with_the_schedule(batch_size, steps):
    levels = sorted(set(sizes(batch_size, steps)))
    image_traces = hb.traces(batch_size, steps)
    assert len(image_traces) == batch_size
    for image, trace in enumerate(image_traces):
        assert len(trace) == len(levels) and trace[-1] == image
        for level, (ancestor, descendant) in enumerate(zip(trace, trace[1:])):
            assert ancestor < levels[level]
            # Rows that exist stay themselves; a new row r comes from row r - (rows before the fork).
            assert descendant == ancestor or descendant == ancestor + levels[level]


# --- the samplers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HYPERBATCH)
def test_without_a_fork_each_sampler_equals_the_plain_k_diffusion_sampler(model, name):
    plain = SAMPLERS[name].function
    assert torch.equal(run(model, HYPERBATCH[name], name, [3], 6), run(model, plain, name, [3], 6))
    with pytest.warns(hb.HyperbatchFallbackWarning):
        fallback = run(model, HYPERBATCH[name], name, [3, 4, 5, 6], 2)
    assert torch.equal(fallback, run(model, plain, name, [3, 4, 5, 6], 2))


@pytest.mark.parametrize("name", HYPERBATCH)
def test_all_siblings_differ_and_reruns_are_identical(model, name):
    torch.manual_seed(0)
    global_state = torch.random.get_rng_state()
    images = run(model, HYPERBATCH[name], name, list(range(8)), 8)
    assert torch.equal(torch.random.get_rng_state(), global_state)  # only seeded generators are used
    torch.manual_seed(1)
    assert torch.equal(images, run(model, HYPERBATCH[name], name, list(range(8)), 8))
    distances = torch.cdist(images.flatten(1), images.flatten(1)) + torch.eye(8) * 1e9
    assert distances.min() > 0.05  # the spread of one prototype's images is about 0.4 here


@pytest.mark.parametrize("name", HYPERBATCH)
def test_segmenting_changes_only_multistep_history(model, name):
    """With fork strength 0 children copy their parent: the root is what segmenting alone does to a sample."""
    seeds = list(range(4))
    plain = run(model, SAMPLERS[name].function, name, seeds, 8)
    copies = run(model, HYPERBATCH[name], name, seeds, 8, fork_strength=0.0)
    if name in ("Euler a", "DPM++ SDE"):  # no state carried between steps: the very same steps
        assert torch.equal(copies[0], plain[0])
    else:  # the first step after each fork is first order
        assert not torch.equal(copies[0], plain[0])
    if name == "DPM++ 2M":  # an ODE: a small change; no noise of its own: siblings are exact copies
        assert (copies[0] - plain[0]).norm() < 2e-3 * plain[0].norm()
        assert all(torch.equal(copies[0], row) for row in copies)


@pytest.mark.parametrize("name", ["DPM++ 2M", "DPM++ SDE"])
def test_model_calls_and_rows_follow_the_schedule(model, name):
    calls = []

    def counting(x, sigma, **extra):
        calls.append(len(x))
        assert all(len(v) == len(x) for v in extra.values() if torch.is_tensor(v))
        return model.denoiser(x, sigma, **extra)

    steps, groups = 9, 2
    run(model, HYPERBATCH[name], name, list(range(8)) * groups, steps, denoiser=counting, groups=groups)
    per_step = [size * groups for size in sizes(8, steps)]
    expected = per_step if name == "DPM++ 2M" else [n for n in per_step[:-1] for _ in (0, 1)] + per_step[-1:]
    assert calls == expected  # DPM++ SDE calls the model twice per step but for the last


def test_the_callback_sees_global_step_indices(model):
    steps = []
    run(model, hb.sample_dpmpp_2m_hyperbatch, "DPM++ 2M", list(range(4)), 7, callback=lambda d: steps.append(d["i"]))
    assert steps == list(range(7))


@pytest.mark.parametrize("name", ["DPM++ 2M", "Euler a"])
def test_groups_fork_independently_and_alike(model, name):
    first, second = run(model, HYPERBATCH[name], name, [0, 1, 2, 3, 10, 11, 12, 13], 6, groups=2).split(4)
    alone = run(model, HYPERBATCH[name], name, [10, 11, 12, 13], 6)
    assert torch.allclose(second, alone, atol=1e-6) and not torch.allclose(first, second)


def test_each_child_continues_its_own_parent(model):
    """Without fork noise a child is a fixed function of its parent, so an image is a function of the forks it
    was born at: with the right parents all eight histories, hence all eight images, differ."""
    images = run(model, hb.sample_dpmpp_2m_hyperbatch, "DPM++ 2M", list(range(8)), 8,
                 fork_noise=lambda rows: torch.zeros(len(rows), *model.image_shape))
    histories = {tuple(a != b for a, b in zip(trace, trace[1:])) for trace in hb.traces(8, 8)}
    assert len(histories) == 8 and len({tuple(image.flatten().tolist()) for image in images}) == 8


def test_bad_batch_sizes_are_refused(model):
    with pytest.raises(ValueError, match="at most double"):
        run(model, hb.sample_dpmpp_2m_hyperbatch, "DPM++ 2M", list(range(4)), 3, batch_sizes=[1, 4, 4])
    with pytest.raises(ValueError, match="groups"):
        run(model, hb.sample_dpmpp_2m_hyperbatch, "DPM++ 2M", list(range(5)), 3, groups=2)


def test_the_row_selector_builds_new_arguments_and_never_mutates_the_callers(model):
    seeds = list(range(8))
    extra_args = {"cond": PRIOR.log().float().repeat(8, 1), "uncond": torch.zeros(8, 4), "cond_scale": 1.5}
    before = {key: (value, copy.deepcopy(value)) for key, value in extra_args.items()}
    selected_rows = []

    def select(args, rows):
        selected_rows.append(rows.tolist())
        new = hb.select_rows(args, rows)
        assert new is not args and all(new[k] is not args[k] for k in ("cond", "uncond"))
        return new

    schedule = sigmas(8, SIGMA_MIN, SIGMA_MAX)
    x = SeededNoise(seeds, model.image_shape).initial(float(schedule[0]))
    x_before = x.clone()
    hb.sample_dpmpp_2m_hyperbatch(model.denoiser, x, schedule, extra_args=extra_args, disable=True, select=select)
    assert selected_rows == [[0], [0, 1], [0, 1, 2, 3]]  # the full batch passes the caller's own arguments
    assert torch.equal(x, x_before) and list(extra_args) == list(before)
    for key, (original, snapshot) in before.items():
        assert extra_args[key] is original
        assert torch.equal(original, snapshot) if torch.is_tensor(original) else original == snapshot


def test_the_fork_keeps_unit_noise_at_the_scheduled_level():
    generator = torch.Generator().manual_seed(0)
    denoised, eps, own = (torch.randn(20000, generator=generator) for _ in range(3))
    sigma_prev, sigma = torch.tensor(10.0), torch.tensor(7.0)
    child = hb.fork(denoised + sigma * eps, denoised, sigma_prev, sigma, own, strength=1.0)
    child_eps = (child - denoised) / sigma
    f = (1 - (7 / 10) ** 2) ** 0.5  # one ancestral step from sigma 10 to 7
    assert abs(child_eps.var().item() - 1) < 0.03
    assert abs(torch.corrcoef(torch.stack([child_eps, eps]))[0, 1].item() - (1 - f ** 2) ** 0.5) < 0.02
    assert torch.equal(hb.fork(denoised + sigma * eps, denoised, sigma_prev, sigma, own, 0.0), denoised + sigma * eps)


def test_children_forked_early_keep_the_priors_prototype_frequencies(model):
    """Forking does not bias the distribution: children drawn through three forks land with the prior's odds.

    Siblings share most of their path, so a tree's 8 images are not 8 independent draws (the chi-square would
    overstate their weight); the test takes one child per tree, the one born at the last fork.
    """
    roots, batch_size, steps = 400, 8, 30
    prior = PRIOR.numpy()
    for batch_sizes in ([1, 2, 4] + [8] * (steps - 3), None):  # forks at sigma 67, 56, 46; the default schedule
        images = run(model, hb.sample_dpmpp_2m_hyperbatch, "DPM++ 2M", list(range(roots * batch_size)), steps,
                      cfg_scale=1.0, groups=roots, batch_sizes=batch_sizes)
        last_children = model.nearest_prototype(((images[batch_size - 1::batch_size] + 1) / 2).clamp(0, 1))
        counts = np.bincount(last_children.numpy(), minlength=4)
        assert stats.chisquare(counts, prior * counts.sum()).pvalue > 0.01


# --- integration ------------------------------------------------------------------------------------------


def test_hyperbatch_samplers_are_registered_with_a1111_names():
    for name, function in HYPERBATCH.items():
        spec = SAMPLERS[f"{name} Hyperbatch"]
        assert spec.function is function and spec.noise == SAMPLERS[name].noise
    # A1111 passes sigmas / noise_sampler only to functions whose signature names them.
    parameters = inspect.signature(hb.sample_dpmpp_sde_hyperbatch).parameters
    assert {"sigmas", "eta", "s_noise", "noise_sampler", "fork_strength"} <= set(parameters)
    assert "noise_sampler" not in inspect.signature(hb.sample_dpmpp_2m_hyperbatch).parameters


def test_the_embedded_renderer_renders_each_prompt_as_its_own_trees():
    model = EmbeddedModel(count=6, size=16)
    renderer = EmbeddedRenderer(model, [5, 6, 7, 8], steps=6, sampler="DPM++ 2M Hyperbatch", fork_strength=0.5)
    prompts = [("a red (circle:1.3)", ""), ("a blue square", "red")]
    together, alone = renderer.render(prompts), renderer.render(prompts[1:])
    assert torch.allclose(together[1].images, alone[0].images, atol=1e-6)
    first = together[0].images
    assert first.shape == (4, 3, 16, 16) and not torch.equal(first[0], first[1])
