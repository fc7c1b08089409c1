"""The Hyperbatch bridge to A1111's sampler call, against a stand-in with the WebUI's contracts.

The stand-in denoiser checks what A1111's CFGDenoiser relies on (A1111.md): the batch size comes from `cond`,
`uncond` and `image_cond` have as many rows, img2img blending uses per-row `init_latent`; and A1111's noise
hijack returns one row per seed whatever the input.
"""

import inspect

import k_diffusion.sampling
import pytest
import torch

from lib_pinning import hyperbatch as hb
from lib_pinning.webui.bridge import RowsDenoiser, bridge, select_conditioning

SHAPE = (4, 2, 2)


class Multicond:  # A1111's prompt_parser.MulticondLearnedConditioning(shape, batch)
    def __init__(self, shape, batch):
        self.shape, self.batch = shape, batch


class StandInDenoiser:
    """Denoises every row toward the value its own conditioning carries, checking A1111's row contracts."""

    def __init__(self, init_latent=None, mask=None):
        self.init_latent, self.mask = init_latent, mask
        self.nmask = None if mask is None else 1 - mask
        self.rows_seen = []

    def __call__(self, x, sigma, cond, uncond, image_cond, cond_scale, s_min_uncond):
        rows = len(cond.batch)  # A1111 takes the batch size from cond
        assert x.shape[0] == rows == len(uncond) == image_cond.shape[0], "rows of x and conditioning differ"
        assert all(image_cond[i, 0, 0, 0] == cond.batch[i][0] for i in range(rows)), "rows mixed up"
        target = torch.stack([torch.full(SHAPE, float(c[0])) for c in cond.batch])
        denoised = target + 0.1 * torch.tanh(x)
        if self.init_latent is not None:
            assert self.init_latent.shape == denoised.shape, "init_latent not narrowed with the rows"
            denoised = denoised * self.nmask + self.init_latent * self.mask
        self.rows_seen.append(rows)
        return denoised


class SeedRowsNoise:
    """A1111's TorchHijack: randn_like returns one row per seed, whatever tensor it is given."""

    def __init__(self, seeds):
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.calls = 0

    def randn_like(self, x):
        self.calls += 1
        return torch.stack([torch.randn(SHAPE, generator=g) for g in self.generators])

    def __getattr__(self, name):
        return getattr(torch, name)


def a1111_arguments(batch):
    cond = Multicond((batch,), [[float(i + 1), "cached"] for i in range(batch)])
    uncond = [[f"uncond {i}"] for i in range(batch)]
    image_cond = torch.arange(1, batch + 1, dtype=torch.float32).view(batch, 1, 1, 1).expand(batch, 5, 1, 1)
    return {"cond": cond, "uncond": uncond, "image_cond": image_cond.clone(), "cond_scale": 7.0,
            "s_min_uncond": 0.0}


def sigmas(steps):
    return k_diffusion.sampling.get_sigmas_karras(steps, 0.03, 14.6)


def call(function, batch, steps, model, noise_hijack=None, monkeypatch=None, x=None, **kwargs):
    """Call a bridged sampler as A1111's KDiffusionSampler.sample does (sigmas as a keyword)."""
    if noise_hijack is not None:
        monkeypatch.setattr(k_diffusion.sampling, "torch", noise_hijack)
    schedule = sigmas(steps)
    x = torch.randn((batch, *SHAPE), generator=torch.Generator().manual_seed(7)) * schedule[0] if x is None else x
    return function(model, x, extra_args=a1111_arguments(batch), disable=True, sigmas=schedule, **kwargs)


def test_segments_get_new_conditioning_for_their_rows_and_the_cached_objects_stay_whole():
    arguments = a1111_arguments(8)
    cached_batch = arguments["cond"].batch
    for rows in ([0], [0, 1], [0, 1, 2, 3], [1, 5]):
        selected = select_conditioning(arguments, torch.tensor(rows), 8)
        assert selected["cond"] is not arguments["cond"] and isinstance(selected["cond"], Multicond)
        assert selected["cond"].shape == (len(rows),)
        assert [c[0] for c in selected["cond"].batch] == [float(r + 1) for r in rows]
        assert selected["uncond"] == [[f"uncond {r}"] for r in rows]
        assert selected["image_cond"][:, 0, 0, 0].tolist() == [float(r + 1) for r in rows]
        assert selected["cond_scale"] == 7.0
    assert arguments["cond"].batch is cached_batch and len(cached_batch) == 8


def test_sdxl_dict_conditioning_tensors_are_narrowed_key_by_key():
    arguments = {"cond": Multicond((4,), list(range(4))), "uncond": list(range(4)),
                 "image_cond": {"crossattn": torch.arange(4.0)[:, None], "vector": torch.arange(4.0)[:, None] * 10}}
    selected = select_conditioning(arguments, torch.tensor([2, 3]), 4)
    assert selected["image_cond"]["crossattn"].flatten().tolist() == [2.0, 3.0]
    assert selected["image_cond"]["vector"].flatten().tolist() == [20.0, 30.0]


@pytest.mark.parametrize("name", ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE"])
def test_a_bridged_sampler_forks_with_the_webuis_row_contracts(name):
    function = {"DPM++ 2M": hb.sample_dpmpp_2m_hyperbatch, "DPM++ SDE": hb.sample_dpmpp_sde_hyperbatch,
                "DPM++ 2M SDE": hb.sample_dpmpp_2m_sde_hyperbatch}[name]
    model = StandInDenoiser()
    schedule = sigmas(12)
    # A1111 passes a full-batch Brownian noise sampler to the SDE samplers ("brownian_noise" option).
    x = torch.randn((8, *SHAPE), generator=torch.Generator().manual_seed(7)) * schedule[0]
    noise = k_diffusion.sampling.BrownianTreeNoiseSampler(x, schedule[-2], schedule[0], seed=list(range(8)))
    extra = {"noise_sampler": noise} if "SDE" in name else {}
    result = call(bridge(function, False, lambda m: 1.0), 8, 12, model, x=x, **extra)
    assert result.shape == (8, *SHAPE)
    assert {1, 2, 4, 8} <= set(model.rows_seen)  # it really forked
    # every row ends at its own conditioning's value (a mixed-up row would land elsewhere)
    means = result.mean(dim=(1, 2, 3))
    assert torch.allclose(means, torch.arange(1, 9, dtype=torch.float32), atol=0.2)


def test_the_ancestral_sampler_takes_its_noise_rows_from_the_webuis_seed_rows(monkeypatch):
    model = StandInDenoiser()
    hijack = SeedRowsNoise(range(8))
    result = call(bridge(hb.sample_euler_ancestral_hyperbatch, True, lambda m: 1.0), 8, 12, model, hijack,
                  monkeypatch)
    assert result.shape == (8, *SHAPE) and torch.isfinite(result).all()
    plain = SeedRowsNoise(range(8))
    call(k_diffusion.sampling.sample_euler_ancestral, 8, 12, StandInDenoiser(), plain, monkeypatch)
    assert hijack.calls == plain.calls  # one draw per noisy step, as the plain sampler makes


def test_without_forks_the_bridged_sampler_equals_the_plain_one(monkeypatch):
    plain_hijack, bridged_hijack = SeedRowsNoise([3]), SeedRowsNoise([3])
    x = torch.randn((1, *SHAPE), generator=torch.Generator().manual_seed(1)) * sigmas(6)[0]
    bridged = call(bridge(hb.sample_euler_ancestral_hyperbatch, True, lambda m: 1.0), 1, 6, StandInDenoiser(),
                   bridged_hijack, monkeypatch, x=x)
    plain = call(k_diffusion.sampling.sample_euler_ancestral, 1, 6, StandInDenoiser(), plain_hijack, monkeypatch,
                 x=x)
    assert torch.equal(bridged, plain)


def test_img2img_blending_sees_the_init_latent_of_its_rows_and_gets_it_back():
    init = torch.arange(8.0).view(8, 1, 1, 1).expand(8, *SHAPE).clone()
    mask = torch.zeros(SHAPE)
    mask[0] = 1  # channel 0 is kept from the init image
    model = StandInDenoiser(init, mask)
    schedule = sigmas(10)[3:]
    noise = torch.randn((8, *SHAPE), generator=torch.Generator().manual_seed(2))
    x = init + noise * schedule[0]
    strength = []
    function = bridge(hb.sample_dpmpp_2m_hyperbatch, False, lambda m: strength.append(m) or 1.0)
    result = function(model, x, extra_args=a1111_arguments(8), disable=True, sigmas=schedule)
    assert model.init_latent is init  # restored after the narrowed calls
    assert {2, 4, 8} <= set(model.rows_seen)  # 7 steps for 8 rows: the first fork comes at step 0
    assert torch.allclose(result[:, 0], init[:, 0], atol=1e-4)  # masked channel kept, per row
    assert isinstance(strength[0], StandInDenoiser)  # the fork strength is asked of the WebUI's model


def test_rows_denoiser_narrows_only_calls_with_fewer_rows_and_only_per_row_tensors():
    # The batch-wide inpainting mask is (C, H, W); with C equal to the batch size it must not be taken for rows.
    model = StandInDenoiser(torch.zeros(4, *SHAPE), torch.zeros(SHAPE))
    rows = RowsDenoiser(model, 4)
    arguments = a1111_arguments(4)
    rows(torch.zeros(4, *SHAPE), torch.ones(4), **arguments)
    rows(torch.zeros(2, *SHAPE), torch.ones(2), **rows.select(arguments, torch.tensor([1, 3])))
    assert model.rows_seen == [4, 2] and model.init_latent.shape[0] == 4


def test_a1111_sees_the_plain_samplers_parameters():
    euler_a = inspect.signature(bridge(hb.sample_euler_ancestral_hyperbatch, True, lambda m: 1.0)).parameters
    assert {"sigmas", "eta", "noise_sampler", "s_noise"} <= set(euler_a)
    assert not {"fork_strength", "select", "groups", "batch_sizes", "fork_noise"} & set(euler_a)
    dpm = inspect.signature(bridge(hb.sample_dpmpp_2m_hyperbatch, False, lambda m: 1.0)).parameters
    assert "sigmas" in dpm and "eta" not in dpm and "noise_sampler" not in dpm


class Interrupted(Exception):  # A1111's sd_samplers_common.InterruptedException
    pass


class InterruptingDenoiser(StandInDenoiser):
    """Keeps `sampler.last_latent` as A1111's CFGDenoiser does, and raises at call `stop_at` like Interrupt."""

    def __init__(self, stop_at):
        super().__init__()
        self.sampler = type("Sampler", (), {"last_latent": None})()
        self.calls, self.stop_at = 0, stop_at

    def __call__(self, x, sigma, **kwargs):
        self.calls += 1
        if self.calls == self.stop_at:
            raise Interrupted()
        denoised = super().__call__(x, sigma, **kwargs)
        self.sampler.last_latent = denoised
        return denoised


@pytest.mark.parametrize("stop_at, rows", [(3, 1), (7, 2), (11, 4)])
def test_an_interrupt_inside_a_fork_segment_leaves_a_latent_for_every_row(stop_at, rows):
    model = InterruptingDenoiser(stop_at)
    with pytest.raises(Interrupted):
        call(bridge(hb.sample_dpmpp_2m_hyperbatch, False, lambda m: 1.0), 8, 16, model)
    assert model.rows_seen[-1] == rows  # the interrupt came while only `rows` rows were sampled
    latent = model.sampler.last_latent
    assert latent.shape[0] == 8  # A1111 returns it as the batch's images
    for row in range(8):
        assert torch.equal(latent[row], latent[row % rows])  # each row shows its ancestor


def spy_call(batch, steps, model, ancestral=False, can_fork=lambda m: True, **kwargs):
    seen = {}

    def spy(model, x, sigmas, **options):
        seen.update(options, x=x, sigmas=sigmas)
        return x

    bridge(spy, ancestral, lambda m: 0.5, can_fork)(model, kwargs.pop("x"), sigmas=sigmas(steps),
                                                      extra_args=a1111_arguments(batch), **kwargs)
    return seen


def test_img2img_children_get_their_own_seeded_noise_not_the_image():
    init = torch.full((4, *SHAPE), 3.0)
    noise = torch.randn((4, *SHAPE), generator=torch.Generator().manual_seed(4))
    schedule = sigmas(6)
    seen = spy_call(4, 6, StandInDenoiser(init, torch.zeros(SHAPE)), x=init + noise * schedule[0])
    children = torch.tensor([1, 3])
    assert torch.allclose(seen["fork_noise"](children), noise[children], atol=1e-5)
    assert seen["fork_strength"] == 0.5 and "batch_sizes" not in seen
    assert spy_call(4, 6, StandInDenoiser(), x=noise)["fork_noise"] is None  # txt2img: the wrapper's default


def test_the_ancestral_noise_sampler_draws_every_seed_row_from_the_webui(monkeypatch):
    hijack = SeedRowsNoise(range(4))
    monkeypatch.setattr(k_diffusion.sampling, "torch", hijack)
    seen = spy_call(4, 6, StandInDenoiser(), ancestral=True, x=torch.zeros(4, *SHAPE))
    draw = seen["noise_sampler"](torch.tensor(1.0), torch.tensor(0.5))
    expected = torch.stack([torch.randn(SHAPE, generator=torch.Generator().manual_seed(s)) for s in range(4)])
    assert torch.equal(draw, expected)  # row i is seed i's draw; the wrapper narrows it per segment


def test_where_forks_are_not_allowed_the_bridged_sampler_is_the_plain_one():
    x = torch.randn((8, *SHAPE), generator=torch.Generator().manual_seed(3)) * sigmas(10)[0]
    model = StandInDenoiser()
    bridged = call(bridge(hb.sample_dpmpp_2m_hyperbatch, False, lambda m: 1.0, lambda m: False), 8, 10, model, x=x)
    plain = call(k_diffusion.sampling.sample_dpmpp_2m, 8, 10, StandInDenoiser(), x=x)
    assert set(model.rows_seen) == {8} and torch.equal(bridged, plain)
