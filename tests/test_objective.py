import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from lib_pinning import flip
from lib_pinning.images import TargetError, load_targets
from lib_pinning.objective import Objective


def images(seed, count, size=16):
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_pairwise_loss_is_mean_plus_std_over_targets_and_batch():
    targets, batch = images(0, 2), images(1, 3)
    score = Objective(targets, "pairwise").score(batch)
    pool = torch.cat([targets, batch])
    pairs = list(itertools.combinations(range(5), 2))
    expected = torch.stack([flip.flip_error(pool[i:i + 1], pool[j:j + 1])[0] for i, j in pairs]).double()
    assert score.pairs == pairs
    assert np.isclose(score.loss, float(expected.mean() + expected.std(unbiased=False)), atol=1e-6)
    assert len(score.image_losses) == 3


def test_target_mode_compares_each_image_with_each_target_only():
    targets, batch = images(2, 2), images(3, 3)
    score = Objective(targets, "target").score(batch)
    assert sorted(score.pairs) == sorted((b, t) for b in (2, 3, 4) for t in (0, 1))
    assert np.isclose(score.loss, np.mean(score.pair_losses))


def test_consistency_mode_ignores_targets():
    batch = images(4, 4)
    with_targets = Objective(images(5, 2), "consistency").score(batch)
    without = Objective(None, "consistency").score(batch)
    assert with_targets.loss == without.loss and len(without.pairs) == 6


def test_a_batch_equal_to_its_target_has_zero_loss_and_a_worse_batch_more():
    target = images(6, 1)
    assert Objective(target).score(target.repeat(4, 1, 1, 1)).loss == 0
    assert Objective(target).score(images(7, 4)).loss > 0.1


def test_objective_refuses_mismatched_sizes_and_single_images():
    with pytest.raises(ValueError, match="targets are"):
        Objective(images(0, 1, 16)).score(images(1, 2, 8))
    with pytest.raises(ValueError, match="at least two"):
        Objective(None, "consistency").score(images(1, 1))
    with pytest.raises(ValueError, match="loss mode"):
        Objective(None, "median")


def test_targets_are_resized_with_a_notice_and_transparency_is_the_mask(tmp_path):
    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, :15, 3] = 255  # left half opaque red, right half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.new("L", (16, 16), 128).save(tmp_path / "b.jpg")
    targets, masks, notices = load_targets([tmp_path / "a.png", tmp_path / "b.jpg"], (16, 16))
    assert targets.shape == (2, 3, 16, 16) and masks.shape == (2, 16, 16)
    assert notices == ["target 1 is 30x20: resized to 16x16", "mask 1 is 30x20: resized to 16x16"]
    assert torch.allclose(targets[0, :, 8, 14], torch.tensor([1.0, 0.0, 0.0]), atol=0.02)  # colours kept under it
    assert masks[0, 8, 1] == 1 and masks[0, 8, 14] == 0
    assert torch.equal(masks[1], torch.ones(16, 16))  # a target without transparency counts everywhere
    assert torch.allclose(targets[1], torch.full((3, 16, 16), 128 / 255), atol=1e-6)


def test_a_mask_file_wins_over_transparency_which_is_then_flattened_onto_white(tmp_path):
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, :8, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.new("L", (16, 16), 64).save(tmp_path / "m.png")
    targets, masks, _ = load_targets([tmp_path / "a.png"], (16, 16), [tmp_path / "m.png"])
    assert torch.allclose(targets[0, :, 8, 14], torch.ones(3))  # transparent -> white
    assert torch.equal(masks[0], torch.full((16, 16), 64 / 255))
    opaque, none, _ = load_targets([tmp_path / "m.png"], (16, 16))
    assert none is None and opaque.shape == (1, 3, 16, 16)


@pytest.mark.parametrize("masks, message", [
    (["black"], "mask 1 is all black"),
    (["grey", "grey"], "2 target masks for 1 target images"),
    (["text"], "mask .* is not a readable image"),
    (["folder"], "mask .* is a folder"),
])
def test_unusable_masks_give_one_clear_error_before_anything_renders(tmp_path, masks, message):
    Image.new("RGB", (8, 8)).save(tmp_path / "target.png")
    Image.new("L", (8, 8), 0).save(tmp_path / "black.png")
    Image.new("L", (8, 8), 99).save(tmp_path / "grey.png")
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(TargetError, match=message):
        load_targets([tmp_path / "target.png"], (8, 8), [tmp_path / f"{name}.png" for name in masks])


def test_a_mask_without_a_target_is_refused():
    with pytest.raises(TargetError, match="no target image"):
        Objective(None, masks=[Image.new("L", (8, 8), 255)])


def _masked_objective(mode, mask):
    target = images(20, 1, 32)
    return Objective(target, mode, masks=mask[None]), target


@pytest.mark.parametrize("mode", ["target", "pairwise"])
def test_pixels_under_the_mask_do_not_change_the_loss_and_pixels_it_keeps_do(mode):
    mask = torch.zeros(32, 32)
    mask[:, :12] = 1.0  # the left part counts
    objective, target = _masked_objective(mode, mask)
    batch = images(21, 3, 32)
    before = objective.score(batch).loss
    hidden, kept = batch.clone(), batch.clone()
    hidden[:, :, :, 24:] = torch.rand(3, 3, 32, 8, generator=torch.Generator().manual_seed(5))  # far from the edge
    kept[:, :, :, :12] = target[:, :, :, :12]  # what the mask keeps now matches the target
    assert objective.score(hidden).loss == pytest.approx(before, abs=1e-9)
    assert objective.score(kept).loss < before - 0.1
    unmasked = Objective(target, mode).score(hidden).loss
    assert unmasked != pytest.approx(Objective(target, mode).score(batch).loss, abs=1e-3)


def test_a_masked_error_is_the_flip_map_weighted_by_the_mask_and_normalised_by_its_area():
    mask = torch.rand(32, 32, generator=torch.Generator().manual_seed(3))
    objective, target = _masked_objective("target", mask)
    batch = images(22, 2, 32)
    score = objective.score(batch)
    for (b, t), loss in zip(score.pairs, score.pair_losses):
        error_map = flip.flip_map(batch[b - 1:b], target).double()[0]
        assert loss == pytest.approx(float((error_map * mask).sum() / mask.sum()), abs=1e-6)


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b"not an image", "not a readable image"),
    ("truncated png", "not a readable image"),
])
def test_unusable_targets_give_one_clear_error(tmp_path, content, message):
    Image.new("RGB", (8, 8)).save(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    if content is not None:
        bad.write_bytes(_truncated_png() if content == "truncated png" else content)
    with pytest.raises(TargetError, match=message):
        load_targets([tmp_path / "good.png", bad], (8, 8))


def _truncated_png() -> bytes:
    import io
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()[:200]


def test_high_bit_depth_targets_keep_their_values(tmp_path):
    ramp = np.tile(np.linspace(0, 1, 16, dtype=np.float32), (16, 1))
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(ramp, "F").save(tmp_path / "float.tiff")
    targets, _, _ = load_targets([tmp_path / "deep.png", tmp_path / "float.tiff"], (16, 16))
    for target in targets:
        assert torch.allclose(target, torch.from_numpy(ramp).expand(3, 16, 16), atol=1e-3)
