import numpy as np
import pytest
import torch
from scipy import stats

from lib_pinning.embedded import EmbeddedModel, EmbeddedRenderer, MixtureDenoiser, ToyTextEncoder, make_prototypes


def brute_force_posterior_mean(x, sigma, means, prior, spread, grid):
    """E[x0 | x] by summing over a dense grid of x0 values in two dimensions."""
    g0, g1 = np.meshgrid(grid, grid, indexing="ij")
    points = np.stack([g0.ravel(), g1.ravel()], 1)
    density = np.zeros(len(points))
    for mean, weight in zip(means, prior):
        density += weight * np.exp(-np.sum((points - mean) ** 2, 1) / (2 * spread ** 2))
    likelihood = np.exp(-np.sum((points - x) ** 2, 1) / (2 * sigma ** 2))
    posterior = density * likelihood
    return (posterior[:, None] * points).sum(0) / posterior.sum()


@pytest.mark.parametrize("x, sigma", [((0.1, 0.2), 0.3), ((-0.5, 0.4), 1.0), ((0.8, -0.9), 0.15)])
def test_denoiser_is_the_exact_posterior_mean(x, sigma):
    means = np.array([[0.5, 0.5], [-0.6, 0.1], [0.2, -0.7]])
    prior = np.array([0.5, 0.3, 0.2])
    spread = 0.2
    denoiser = MixtureDenoiser(torch.tensor(means, dtype=torch.float64).view(3, 2, 1, 1), spread).double()
    got = denoiser(torch.tensor(x, dtype=torch.float64).view(1, 2, 1, 1), torch.tensor([sigma], dtype=torch.float64),
                   cond=torch.tensor(np.log(prior))[None])
    expected = brute_force_posterior_mean(np.array(x), sigma, means, prior, spread, np.linspace(-2.5, 2.5, 801))
    assert np.allclose(got.flatten().numpy(), expected, atol=1e-4)


def test_classifier_free_guidance_extrapolates_from_the_unconditional_prediction():
    denoiser = MixtureDenoiser(make_prototypes(3, 4) * 2 - 1, 0.05)
    x, sigma = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([1.0, 1.0])
    cond, uncond = torch.log_softmax(torch.tensor([[2.0, 0, 0]] * 2), 1), torch.zeros(2, 3)
    c, u = denoiser(x, sigma, cond=cond), denoiser(x, sigma, cond=uncond)
    assert torch.allclose(denoiser(x, sigma, cond=cond, uncond=uncond, cond_scale=3.0), u + 3 * (c - u), atol=1e-6)


def test_prototypes_are_deterministic_distinct_images():
    first, again = make_prototypes(6, 16, seed=2), make_prototypes(6, 16, seed=2)
    assert first.shape == (6, 3, 16, 16) and torch.equal(first, again)
    assert first.min() >= 0 and first.max() <= 1
    distances = torch.cdist(first.flatten(1), first.flatten(1)) + torch.eye(6) * 1e9
    assert distances.min() > 1.0
    assert not torch.equal(first, make_prototypes(6, 16, seed=3))


def test_word_weights_scale_the_conditioning_rows():
    encoder = ToyTextEncoder(dim=8)
    cat, dog = encoder.word_embedding("cat"), encoder.word_embedding("dog")
    assert torch.allclose(encoder.encode("(cat:2.5) dog"), 2.5 * cat + dog, atol=1e-6)
    assert torch.allclose(encoder.encode("[cat] <lora:x:1> BREAK dog"), cat / 1.1 + dog, atol=1e-6)
    assert torch.equal(encoder.word_embedding("Cat"), cat)  # CLIP lowercases


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["DPM++ 2M", "Euler a"])
def test_sampled_prototype_frequencies_match_the_prior(sampler):
    """The model is a correct diffusion model: seeds land on prototypes with the prompt's prior frequencies."""
    model = EmbeddedModel(count=4, size=8, seed=1, logit_scale=1.0)
    prompt = "blue (moon:1.2)"
    prior = model.log_prior(prompt).exp().double().numpy()
    prior /= prior.sum()
    assert prior.max() < 0.8 and prior.min() > 0.02  # a non-trivial prior
    renderer = EmbeddedRenderer(model, list(range(400)), steps=30, sampler=sampler, cfg_scale=1.0)
    images = renderer.render([(prompt, "")])[0].images
    assert torch.cdist(images.flatten(1), model.prototypes.flatten(1)).min(1).values.max() < 0.5
    counts = np.bincount(model.nearest_prototype(images).numpy(), minlength=4)
    assert stats.chisquare(counts, prior * counts.sum()).pvalue > 0.01


@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE"])
def test_rendering_is_a_function_of_prompt_and_seed_only(sampler):
    model = EmbeddedModel(count=6, size=16)
    renderer = EmbeddedRenderer(model, [5, 6, 7], steps=6, sampler=sampler)
    prompts = [("a red (circle:1.3)", ""), ("a blue square", "red")]
    torch.manual_seed(0)
    global_before = torch.random.get_rng_state()
    together = [rendered.images for rendered in renderer.render(prompts)]
    assert torch.equal(torch.random.get_rng_state(), global_before)
    torch.manual_seed(99)  # the global RNG must not matter
    alone = [rendered.images for rendered in renderer.render(prompts[1:])]
    assert torch.allclose(together[1], alone[0], atol=1e-6)  # batched matmuls may differ in the last bit
    assert together[0].shape == (3, 3, 16, 16)
    assert not torch.equal(together[0], together[1])
    assert not torch.equal(together[0][0], together[0][1])  # seeds differ


def test_the_prompt_moves_prior_mass():
    model = EmbeddedModel()
    plain, heavy = model.log_prior("red circle"), model.log_prior("(red:3) circle")
    assert not torch.allclose(plain, heavy)
    assert torch.allclose(plain.exp().sum(), torch.tensor(1.0))


@pytest.mark.parametrize("strength", [0.0, 0.05, 0.3, 0.75, 0.999, 1.0])
def test_img2img_samples_the_tail_of_the_schedule_that_a1111_does(strength):
    """A1111's img2img: t_enc = int(min(strength, 0.999) * steps), sigmas[steps - t_enc - 1:]; the tree weighting
    counts the steps that tail has."""
    from lib_pinning.samplers import img2img_schedule, img2img_steps, sigmas

    for steps in range(1, 31):
        full = sigmas(steps, 0.01, 80.0)
        t_enc = int(min(strength, 0.999) * steps)
        tail = img2img_schedule(full, strength)
        assert torch.equal(tail, full[steps - t_enc - 1:])
        assert len(tail) - 1 == img2img_steps(steps, strength) == t_enc + 1
