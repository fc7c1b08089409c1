"""The semantic loss and tag scores: exact on the embedded model (against brute force), CLIP's preprocessing and
text scores on a small random-weight CLIP of the `clip` package, and pinning runs with each objective."""

import math

import numpy as np
import pytest
import torch

from lib_pinning.embedded import EmbeddedModel, PrototypeEmbedder, make_prototypes, prototype_tags
from lib_pinning.embedded_run import pin
from lib_pinning.errors import InputError
from lib_pinning.objective import Objective, Terms
from lib_pinning.semantic import CLIP_MEAN, CLIP_STD, ClipEmbedder


@pytest.fixture(scope="module")
def model():
    return EmbeddedModel(count=6, size=16, seed=2)


def brute_posterior(model, image):
    """p(k | x) ∝ N(x; μ_k, v I), every density written out in full, one prototype at a time."""
    x = (image.double() * 2 - 1).flatten()
    means = (model.prototypes.double() * 2 - 1).flatten(1)
    squared = (means - means[:, None]).pow(2).sum(-1)
    variance = float(squared[~torch.eye(len(means), dtype=torch.bool)].median()) / 16
    logs = [-0.5 * x.numel() * math.log(2 * math.pi * variance) - float((x - mean).pow(2).sum()) / (2 * variance)
            for mean in means]
    top = max(logs)
    weights = [math.exp(value - top) for value in logs]
    return [w / sum(weights) for w in weights]


def test_the_semantic_loss_on_the_embedded_model_equals_a_brute_force_computation(model):
    generator = torch.Generator().manual_seed(1)
    protos = model.prototypes
    targets = torch.stack([protos[0], (protos[1] + protos[2]) / 2])
    batch = torch.stack([protos[0], protos[3], 0.6 * protos[1] + 0.4 * protos[2]]) + \
        0.02 * torch.randn(3, 3, 16, 16, generator=generator)
    score = Objective(targets, "pairwise", terms=Terms(flip=0.0, semantic=1.0, embedder=PrototypeEmbedder(model))
                      ).score(batch)
    pool = torch.cat([targets, batch])
    for (i, j), loss in zip(score.pairs, score.pair_losses):
        p, q = brute_posterior(model, pool[i]), brute_posterior(model, pool[j])
        assert loss == pytest.approx(1 - sum(math.sqrt(a * b) for a, b in zip(p, q)), abs=1e-7)
    spread = np.asarray(score.pair_losses)
    assert score.loss == pytest.approx(spread.mean() + spread.std(), abs=1e-12)
    assert 0 < min(score.pair_losses) and max(score.pair_losses) > 0.5  # the pairs do differ in meaning


def test_tag_scores_on_the_embedded_model_are_exact(model):
    embedder = PrototypeEmbedder(model)
    tags = prototype_tags(6, 16, 2)
    assert model.tags == tags
    chosen = [tags[0][0], tags[3][-1], "disc"]
    scores = embedder.tag_scores(embedder.embed_images(model.prototypes), chosen)
    posterior = embedder.posterior(model.prototypes)
    for k in range(6):
        for t, tag in enumerate(chosen):
            expected = sum(float(posterior[k, j]) for j in range(6) if tag in tags[j])
            assert float(scores[k, t]) == pytest.approx(expected, abs=1e-12)
    assert float(scores[0, 0]) > 0.5  # a prototype shows its own tags


def test_prototype_tags_describe_how_each_prototype_was_drawn():
    images, tags = make_prototypes(16, 64, 0), prototype_tags(16, 64, 0)
    for image, drawn in zip(images, tags):
        backgrounds = [tag for tag in drawn if tag.endswith(" background")]
        assert 1 <= len(backgrounds) <= 2
        assert {tag for tag in drawn if " " not in tag} <= {"disc", "rectangle", "stripes"}
    disc_count = sum("disc" in drawn for drawn in tags)
    assert 0 < disc_count < 16


def test_unknown_tags_and_an_empty_loss_are_refused_before_anything_renders(model, tmp_path):
    with pytest.raises(InputError, match="knows no tag 'unicorn'.*disc"):
        pin("a b c", out=tmp_path / "run", tags=["disc", "unicorn"], prototypes=6, size=16, progress=False)
    with pytest.raises(InputError, match="nothing to score"):
        pin("a b c", out=tmp_path / "run", flip_weight=0, prototypes=6, size=16, progress=False)
    assert not (tmp_path / "run").exists()


def test_workers_refuse_the_semantic_loss_and_tags_before_asking_any_worker(tmp_path):
    from lib_pinning.workers import run as workers
    for values in ({"semantic_weight": 1.0}, {"tags": ["red"]}):
        with pytest.raises(InputError, match="not available with --webui workers"):
            workers.pin("a b", webui=["http://127.0.0.1:9"], out=tmp_path / "run", progress=False, **values)
    assert not (tmp_path / "run").exists()



@pytest.fixture(scope="module")
def tiny_clip():
    clip = pytest.importorskip("clip")
    torch.manual_seed(0)  # the module's own parameter init; restored below
    state = torch.random.get_rng_state()
    try:
        model = clip.model.CLIP(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64,
                                vision_patch_size=8, context_length=77, vocab_size=49408, transformer_width=32,
                                transformer_heads=2, transformer_layers=2).float()
    finally:
        torch.random.set_rng_state(state)
    return ClipEmbedder(model, clip.tokenize, "tiny CLIP", "cpu")


def test_clip_images_are_resized_centre_cropped_and_normalised_as_clip_does(tiny_clip):
    images = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(4))
    pixels = tiny_clip._pixels(images)
    assert pixels.shape == (2, 3, 32, 32)
    import torchvision.transforms.functional as TF
    resized = TF.resize(images, 32, antialias=True, interpolation=TF.InterpolationMode.BICUBIC).clamp(0, 1)
    expected = TF.normalize(TF.center_crop(resized, [32, 32]), CLIP_MEAN, CLIP_STD)
    assert torch.allclose(pixels, expected, atol=1e-5)


def test_clip_embeddings_are_unit_vectors_and_tag_scores_are_cosines(tiny_clip):
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    embeddings = tiny_clip.embed_images(images)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(3, dtype=torch.float64))
    scores = tiny_clip.tag_scores(embeddings, ["red hair", "night"])
    import clip
    with torch.no_grad():
        text = tiny_clip.model.encode_text(clip.tokenize(["red hair", "night"])).double()
    expected = embeddings @ torch.nn.functional.normalize(text, dim=1).T
    assert torch.allclose(scores, expected, atol=1e-6)
    assert torch.equal(tiny_clip.embed_images(images), embeddings)  # no randomness in eval mode


def test_pinning_to_tags_alone_raises_the_tag_score(tmp_path):
    result = pin("a quiet painting of round shapes", "noise", out=tmp_path / "run", tags=["cyan rectangle"], batch=4,
                 seed=3, generations=4, first_look=8, progress=False, report=False)
    record = result.record
    assert record.objective.target_source == "none" and record.objective.pairs == []
    assert record.objective.embedder == PrototypeEmbedder.name
    assert record.baseline.loss > 0.9 and record.best.loss < 0.1  # no image showed it; the pinned ones do
    assert "no target images: the target tags alone score the images" in record.notices


def test_a_batch_is_embedded_once_for_both_the_semantic_loss_and_the_tags_and_the_targets_once_per_run(model):
    class Counting(PrototypeEmbedder):
        calls = []

        def embed_images(self, images):
            self.calls.append(len(images))
            return super().embed_images(images)

    embedder = Counting(model)
    terms = Terms(flip=0.0, semantic=1.0, tags=(model.tags[0][0],), embedder=embedder)
    objective = Objective(model.prototypes[:2], "target", terms=terms)
    first = objective.score(model.prototypes[2:5])
    second = objective.score(model.prototypes[2:5])
    assert Counting.calls == [3, 2, 3]  # batch, targets (cached after), batch
    expected_tags = 1 - embedder.tag_scores(PrototypeEmbedder(model).embed_images(model.prototypes[2:5]),
                                            terms.tags)[:, 0]
    assert first.loss == second.loss
    assert first.loss == pytest.approx(np.mean(first.pair_losses) + float(expected_tags.mean()), abs=1e-12)
