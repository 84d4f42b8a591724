"""The matcher finds the optimal assignment, per image, for every layer at once."""

import itertools

import numpy as np
import pytest
import torch

from detr.matcher import HungarianMatcher


def _targets(counts, num_classes, gen):
    out = []
    for n in counts:
        centers = torch.rand(n, 2, generator=gen) * 0.6 + 0.2
        sizes = torch.rand(n, 2, generator=gen) * 0.2 + 0.05
        out.append(
            {"labels": torch.randint(0, num_classes, (n,), generator=gen), "boxes": torch.cat([centers, sizes], 1)}
        )
    return out


def _outputs(layers, batch, queries, num_classes, gen):
    logits = torch.randn(layers, batch, queries, num_classes + 1, generator=gen)
    boxes = torch.rand(layers, batch, queries, 4, generator=gen) * 0.5 + 0.1
    return logits, boxes


def _brute_force(cost: np.ndarray) -> float:
    q, t = cost.shape
    return min(sum(cost[p[j], j] for j in range(t)) for p in itertools.permutations(range(q), t))


@pytest.mark.parametrize("seed", range(5))
def test_assignment_is_optimal_against_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    counts = [3, 1, 0, 2]
    targets = _targets(counts, 3, gen)
    logits, boxes = _outputs(2, len(counts), 5, 3, gen)
    matcher = HungarianMatcher()
    costs = matcher.cost_blocks(logits, boxes, targets).numpy()
    result = matcher(logits, boxes, targets)
    for layer in range(2):
        for image, n in enumerate(counts):
            rows, cols = result[layer][image]
            assert len(rows) == len(cols) == n
            assert sorted(cols.tolist()) == list(range(n))
            assert len(set(rows.tolist())) == n
            if n:
                block = costs[layer, image, :, :n]
                assert block[rows, cols].sum() == pytest.approx(_brute_force(block), rel=1e-5)


def test_batched_equals_per_image():
    gen = torch.Generator().manual_seed(0)
    counts = [4, 0, 2, 7]
    targets = _targets(counts, 5, gen)
    logits, boxes = _outputs(3, len(counts), 10, 5, gen)
    matcher = HungarianMatcher()
    batched = matcher(logits, boxes, targets)
    for image in range(len(counts)):
        single = matcher(logits[:, image : image + 1], boxes[:, image : image + 1], targets[image : image + 1])
        for layer in range(3):
            np.testing.assert_array_equal(batched[layer][image][0], single[layer][0][0])
            np.testing.assert_array_equal(batched[layer][image][1], single[layer][0][1])


def test_costs_are_class_l1_and_giou_weighted():
    logits = torch.tensor([[[[0.0, 0.0, -1e4]]]])  # one query, two classes, p = 0.5 each
    boxes = torch.tensor([[[[0.5, 0.5, 0.2, 0.2]]]])
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    cost = HungarianMatcher(1, 5, 2).cost_blocks(logits, boxes, targets)
    # -0.5 (class) + 5 * 0 (L1) - 2 * 1 (GIoU of identical boxes)
    assert cost.item() == pytest.approx(-2.5, abs=1e-5)


def test_empty_batch_and_nan_predictions():
    matcher = HungarianMatcher()
    gen = torch.Generator().manual_seed(1)
    logits, boxes = _outputs(1, 2, 4, 2, gen)
    assert matcher(logits, boxes, _targets([0, 0], 2, gen))[0][0][0].size == 0
    boxes[0, 0, 0] = float("nan")
    result = matcher(logits, boxes, _targets([2, 1], 2, gen))
    assert len(result[0][0][0]) == 2


def test_all_costs_zero_is_rejected():
    with pytest.raises(ValueError, match="all 0"):
        HungarianMatcher(0, 0, 0)
