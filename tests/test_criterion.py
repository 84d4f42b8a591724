import pytest
import torch

from detr.criterion import SetCriterion, total_loss
from detr.matcher import HungarianMatcher


def _outputs_from(boxes, labels, num_classes, queries=4, layers=2):
    """Outputs whose first queries predict the given boxes and classes confidently."""
    logits = torch.full((1, queries, num_classes + 1), -10.0)
    logits[0, :, num_classes] = 10.0
    pred = torch.full((1, queries, 4), 0.5)
    pred[0, :, 2:] = 0.1
    for i, (b, c) in enumerate(zip(boxes, labels)):
        logits[0, i] = -10.0
        logits[0, i, c] = 10.0
        pred[0, i] = torch.tensor(b)
    final = {"pred_logits": logits, "pred_boxes": pred}
    return {**final, "aux_outputs": [dict(final) for _ in range(layers - 1)]}


def _criterion(num_classes=3):
    return SetCriterion(num_classes, HungarianMatcher())


def test_perfect_prediction_has_near_zero_losses():
    boxes = [[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.1, 0.3]]
    outputs = _outputs_from(boxes, [0, 2], 3)
    targets = [{"labels": torch.tensor([2, 0]), "boxes": torch.tensor([boxes[1], boxes[0]])}]
    losses = _criterion()(outputs, targets)
    for key in ("loss_bbox", "loss_giou", "loss_bbox_0", "loss_giou_0"):
        assert losses[key].item() == pytest.approx(0.0, abs=1e-5)
    assert losses["loss_ce"].item() < 1e-3
    assert losses["class_error"].item() == 0.0


def test_image_without_boxes_gives_zero_box_loss_and_pushes_no_object():
    outputs = _outputs_from([[0.3, 0.3, 0.2, 0.2]], [1], 3)
    losses = _criterion()(outputs, [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}])
    assert losses["loss_bbox"].item() == 0.0 and losses["loss_giou"].item() == 0.0
    assert losses["loss_ce"].item() > 1.0  # query 0 claims an object that is not there


def test_box_losses_are_normalised_by_the_number_of_boxes():
    boxes = [[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.1, 0.3]]
    outputs = _outputs_from(boxes, [0, 1], 3)
    shifted = [[b[0] + 0.05, b[1], b[2], b[3]] for b in boxes]
    targets = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor(shifted)}]
    losses = _criterion()(outputs, targets)
    assert losses["loss_bbox"].item() == pytest.approx(0.05, abs=1e-5)  # mean L1 sum per box


def test_no_object_weight_is_eos_coef():
    num_classes = 2
    crit = SetCriterion(num_classes, HungarianMatcher(), eos_coef=0.1)
    assert crit.empty_weight.tolist() == pytest.approx([1.0, 1.0, 0.1])
    weights = crit.weight_dict(3)
    assert weights["loss_ce"] == 1 and weights["loss_bbox_1"] == 5 and weights["loss_giou_0"] == 2
    assert len(weights) == 9


def test_total_loss_has_gradients_for_every_layer():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, requires_grad=True)
    boxes = torch.rand(2, 5, 4, requires_grad=True)
    aux_logits = torch.randn(2, 5, 4, requires_grad=True)
    outputs = {
        "pred_logits": logits,
        "pred_boxes": boxes,
        "aux_outputs": [{"pred_logits": aux_logits, "pred_boxes": boxes * 1.0}],
    }
    targets = [
        {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])},
        {"labels": torch.tensor([1, 2]), "boxes": torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.6, 0.6, 0.3, 0.2]])},
    ]
    crit = _criterion()
    loss = total_loss(crit(outputs, targets), crit.weight_dict(2))
    loss.backward()
    assert logits.grad.abs().sum() > 0 and aux_logits.grad.abs().sum() > 0 and boxes.grad.abs().sum() > 0


def test_sigmoid_focal_classification_scores_matched_and_unmatched_queries():
    boxes = [[0.3, 0.3, 0.2, 0.2]]
    outputs = _outputs_from(boxes, [1], 3)
    for layer in [outputs, *outputs["aux_outputs"]]:
        layer["pred_logits"] = layer["pred_logits"][..., :-1]  # sigmoid heads have K outputs
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor(boxes)}]
    focal = (0.25, 2.0)
    crit = SetCriterion(3, HungarianMatcher(2, 5, 2, focal=focal), focal=focal)
    good = crit(outputs, targets)["loss_ce"].item()
    targets[0]["labels"] = torch.tensor([2])  # the confident query now has the wrong class
    bad = crit(outputs, targets)["loss_ce"].item()
    assert good < 1e-3 < bad
