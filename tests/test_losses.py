"""Loss modes and the Hyperbatch tree weighting, from pair losses worked out by hand."""

import itertools

import numpy as np
import pytest
import torch

from lib_pinning import forks
from lib_pinning.losses import LOSS_MODES, TreeWeighting, level_losses, loss_mode, tree_weighting
from lib_pinning.objective import Objective
from lib_pinning.options import PinOptions, spec_of

PAIRWISE, TARGET, CONSISTENCY = (LOSS_MODES[name] for name in ("pairwise", "target", "consistency"))
# Four images, traces(4, 6) = [[0,0,0], [0,1,1], [0,0,2], [0,1,3]]; the six pair losses by hand.
PAIRS = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
LOSSES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]


def mean_std(values):
    return np.mean(values) + np.std(values)


def test_the_options_offer_exactly_the_loss_modes_and_weightings_defined_here():
    assert spec_of(PinOptions, "loss_mode").choices == tuple(LOSS_MODES)
    assert spec_of(PinOptions, "hyperbatch_weight_type").choices == ("Geometric", "Exponential", "Polynomial")


@pytest.mark.parametrize("name, pairs, uses_targets", [
    ("pairwise", [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)], True),
    ("target", [(1, 0), (2, 0), (3, 0)], True),
    ("consistency", [(1, 2), (1, 3), (2, 3)], False),
])
def test_each_mode_says_which_pairs_it_compares_and_whether_it_needs_targets(name, pairs, uses_targets):
    mode = loss_mode(name)
    assert mode.pairs(1, 3) == pairs and mode.uses_targets == uses_targets


def test_modes_aggregate_as_documented():
    assert PAIRWISE.aggregate(LOSSES) == pytest.approx(mean_std(LOSSES))
    assert CONSISTENCY.aggregate(LOSSES) == pytest.approx(mean_std(LOSSES))
    assert TARGET.aggregate(LOSSES) == pytest.approx(np.mean(LOSSES))
    with pytest.raises(ValueError, match="loss mode 'median'"):
        loss_mode("median")


def test_level_losses_group_images_by_their_ancestor():
    assert forks.traces(4, 6) == [[0, 0, 0], [0, 1, 1], [0, 0, 2], [0, 1, 3]]
    root = mean_std(LOSSES)
    halves = np.mean([mean_std([0.1, 0.2, 0.3, 0.4, 0.6]), mean_std([0.1, 0.3, 0.4, 0.5, 0.6])])  # {0,2}, {1,3}
    leaves = np.mean([mean_std([0.1, 0.2, 0.3]), mean_std([0.1, 0.4, 0.5]), mean_std([0.2, 0.4, 0.6]),
                      mean_std([0.3, 0.5, 0.6])])
    assert np.allclose(level_losses(PAIRWISE, PAIRS, LOSSES, forks.traces(4, 6)), [root, halves, leaves])
    assert np.isclose(root, 0.35 + np.sqrt(0.175 / 6))


def test_in_target_mode_each_level_averages_as_the_mode_does():
    # Target 0, images 1..4 with traces(4, 6): each image has one pair, (image, target).
    pairs, losses = [(1, 0), (2, 0), (3, 0), (4, 0)], [0.1, 0.2, 0.3, 0.6]
    root, halves, leaves = level_losses(TARGET, pairs, losses, forks.traces(4, 6), target_count=1)
    assert root == pytest.approx(np.mean(losses))  # the plain target loss: no std creeps in
    assert halves == pytest.approx(np.mean([np.mean([0.1, 0.3]), np.mean([0.2, 0.6])]))
    assert leaves == pytest.approx(np.mean(losses))


def test_weight_formulas():
    x1, x2, x3 = level_losses(PAIRWISE, PAIRS, LOSSES, forks.traces(4, 6))
    weighted = {kind: TreeWeighting(kind, scale, steps=6).loss(PAIRWISE, PAIRS, LOSSES, 0, 4)
                for kind, scale in (("Geometric", 2.0), ("Exponential", 1.0), ("Polynomial", 0.5))}
    assert np.isclose(weighted["Geometric"], x1 ** 2 + x2 ** 1 + x3 ** (2 / 3))
    assert np.isclose(weighted["Exponential"], x1 * 1.5 + x2 * 1.5 ** 2 + x3 * 1.5 ** 3)
    assert np.isclose(weighted["Polynomial"], (1 + x1) ** 0.5 + (1 + x2) + (1 + x3) ** 1.5)
    with pytest.raises(ValueError, match="tree weighting 'Linear'"):
        TreeWeighting("Linear")


def test_pairs_with_targets_touch_only_their_image():
    # Targets 0 and 1, images 2 and 3 (two roots: the fallback). The target pair (0, 1) touches no image.
    pairs, losses = [(0, 1), (0, 2), (1, 3), (2, 3)], [9.0, 0.2, 0.4, 0.6]
    expected = np.mean([mean_std([0.2, 0.6]), mean_std([0.4, 0.6])])
    assert np.isclose(level_losses(PAIRWISE, pairs, losses, [[0], [1]], target_count=2)[0], expected)


def test_the_weighting_applies_to_hyperbatch_samplers_or_when_forced_and_when_on():
    common = dict(kind="Geometric", scale=1.0)
    assert tree_weighting("DPM++ 2M Hyperbatch", 10, 4, enabled=True, force=False, **common) == \
        TreeWeighting("Geometric", 1.0, 10, 4)
    assert tree_weighting("DPM++ 2M", 10, 4, enabled=True, force=False, **common) is None
    assert tree_weighting("DPM++ 2M", 10, 4, enabled=True, force=True, **common) is not None
    assert tree_weighting("DPM++ 2M Hyperbatch", 10, 4, enabled=False, force=True, **common) is None


@pytest.mark.parametrize("mode", list(LOSS_MODES))
def test_the_objective_uses_the_weighted_loss_of_its_mode(mode):
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    targets = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    tree = TreeWeighting("Exponential", 0.7, steps=6)
    plain = Objective(targets, mode).score(images)
    weighted = Objective(targets, mode, tree).score(images)
    count = 2 if LOSS_MODES[mode].uses_targets else 0
    assert weighted.pair_losses == plain.pair_losses
    x = level_losses(LOSS_MODES[mode], plain.pairs, plain.pair_losses, forks.traces(4, 6), count)
    assert np.isclose(weighted.loss, sum(value * 1.2 ** level for level, value in enumerate(x, 1)))


def test_weights_treat_each_sampling_call_as_its_own_trees():
    # A1111 with Batch count 2 and Batch size 2: two calls, each forking its own root.
    pairs = list(itertools.combinations(range(4), 2))
    losses = [0.1, 0.5, 0.6, 0.7, 0.8, 0.2]
    per_call = TreeWeighting("Geometric", 1.0, steps=10, tree_size=2)
    two_trees = [[0, 0], [0, 1], [2, 2], [2, 3]]
    assert forks.call_traces(4, 2, 10) == two_trees
    expected = sum(x ** (1 / level) for level, x in enumerate(level_losses(PAIRWISE, pairs, losses, two_trees), 1))
    assert per_call.loss(PAIRWISE, pairs, losses, 0, 4) == pytest.approx(expected)
    one_tree = TreeWeighting("Geometric", 1.0, steps=10)
    assert per_call.loss(PAIRWISE, pairs, losses, 0, 4) != pytest.approx(one_tree.loss(PAIRWISE, pairs, losses, 0, 4))
    with pytest.raises(ValueError, match="do not split"):
        TreeWeighting(tree_size=3).loss(PAIRWISE, pairs, losses, 0, 4)
