"""One-to-many supervision of the dense head: task-aligned assignment and its losses.

Task-aligned assignment (TOOD, Feng et al., 2021; as in YOLOv8): for each object, the cells
whose centre lies in its box (or within a cell of its centre, so that tiny objects get one)
are ranked by ``score ** alpha * IoU ** beta``, where ``score`` is the cell's predicted
probability of the object's class and IoU that of its predicted box; the ``top_k`` best
become positives. A cell claimed by several objects keeps the one it overlaps most. The class
target of a positive is its alignment normalised per object to that object's best IoU, so
scores learn to rank boxes by quality, which the two-stage query selection relies on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .box_ops import box_iou, cxcywh_to_xyxy, generalized_box_iou
from .dense_head import DenseOutputs
from .distributed import average_over_processes

#: TOOD / YOLOv8 defaults.
TOP_K = 10
ALPHA = 1.0
BETA = 6.0


class DenseCriterion:
    """Losses of the dense head: ``loss_dense_cls`` (BCE against the aligned scores),
    ``loss_dense_bbox`` (L1 of cxcywh) and ``loss_dense_giou``, weighted by the targets' scores
    and normalised by their sum over the batch."""

    def __init__(self, *, top_k: int = TOP_K, alpha: float = ALPHA, beta: float = BETA):
        self.top_k, self.alpha, self.beta = top_k, alpha, beta

    def __call__(self, dense: DenseOutputs, targets: list[dict], valid_ratio: Tensor) -> dict[str, Tensor]:
        """targets: per image ``labels`` [T] and image-normalised ``boxes`` [T, 4] (cxcywh)."""
        logits = dense.logits.float()
        batch, cells, classes = logits.shape
        device = logits.device
        gt_labels, gt_boxes, gt_valid = _pad_targets(targets, valid_ratio, device)
        with torch.no_grad():
            positive, target_box, target_class, target_score = self.assign(
                logits.sigmoid(), dense, gt_labels, gt_boxes, gt_valid
            )
        class_target = torch.zeros_like(logits)
        if positive.any():
            class_target[positive, target_class[positive]] = target_score[positive]
        score_sum = average_over_processes(target_score.sum()).clamp(min=1.0)
        loss_cls = F.binary_cross_entropy_with_logits(logits, class_target, reduction="sum") / score_sum
        weight = target_score[positive]
        pred = dense.boxes[positive]
        true = target_box[positive]
        loss_bbox = (F.l1_loss(pred, true, reduction="none").sum(-1) * weight).sum() / score_sum
        giou = generalized_box_iou(cxcywh_to_xyxy(pred)[:, None], cxcywh_to_xyxy(true)[:, None])[:, 0, 0]
        loss_giou = ((1 - giou) * weight).sum() / score_sum
        return {"loss_dense_cls": loss_cls, "loss_dense_bbox": loss_bbox, "loss_dense_giou": loss_giou}

    @torch.no_grad()
    def assign(
        self, scores: Tensor, dense: DenseOutputs, gt_labels: Tensor, gt_boxes: Tensor, gt_valid: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """scores [B, N, K] probabilities; gt_* [B, T, ...] padded, boxes canvas cxcywh.

        Returns per cell: positive [B, N] bool, target box [B, N, 4], class [B, N], score [B, N]."""
        batch, cells, _ = scores.shape
        if gt_labels.shape[1] == 0:
            zeros = scores.new_zeros(batch, cells)
            return zeros.bool(), scores.new_zeros(batch, cells, 4), zeros.long(), zeros
        gt_xyxy = cxcywh_to_xyxy(gt_boxes)  # [B, T, 4]
        points = dense.points[None, None]  # [1, 1, N, 2]
        inside = (
            (points[..., 0] > gt_xyxy[..., None, 0])
            & (points[..., 0] < gt_xyxy[..., None, 2])
            & (points[..., 1] > gt_xyxy[..., None, 1])
            & (points[..., 1] < gt_xyxy[..., None, 3])
        )
        near_centre = ((points - gt_boxes[:, :, None, :2]).abs() < dense.strides[None, None]).all(-1)
        candidate = (inside | near_centre) & gt_valid[..., None] & ~dense.padding[:, None, :]  # [B, T, N]

        pred_xyxy = cxcywh_to_xyxy(dense.boxes.float())  # [B, N, 4]
        iou = box_iou(gt_xyxy, pred_xyxy).clamp(min=0)  # [B, T, N]
        class_scores = scores.gather(2, gt_labels[:, None, :].expand(-1, cells, -1)).transpose(1, 2)  # [B, T, N]
        alignment = class_scores.pow(self.alpha) * iou.pow(self.beta) * candidate

        k = min(self.top_k, cells)
        top = alignment.topk(k, dim=-1).indices
        chosen = torch.zeros_like(candidate).scatter_(-1, top, True) & candidate  # [B, T, N]
        # one object per cell: the one it overlaps most
        overlap = torch.where(chosen, iou, torch.full_like(iou, -1.0))
        best_gt = overlap.argmax(1)  # [B, N]
        positive = chosen.any(1)
        owned = F.one_hot(best_gt, gt_labels.shape[1]).transpose(1, 2).bool() & chosen  # [B, T, N]

        aligned = alignment * owned
        per_gt_max_alignment = aligned.amax(-1, keepdim=True)
        per_gt_max_iou = (iou * owned).amax(-1, keepdim=True)
        normalised = aligned / (per_gt_max_alignment + 1e-9) * per_gt_max_iou
        target_score = normalised.amax(1)  # [B, N]
        target_class = gt_labels.gather(1, best_gt)
        target_box = gt_boxes.gather(1, best_gt[..., None].expand(-1, -1, 4))
        return positive, target_box, target_class, target_score * positive


def _pad_targets(targets: list[dict], valid_ratio: Tensor, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Targets padded to the largest count, boxes moved to canvas coordinates."""
    batch = len(targets)
    t_max = max((len(t["labels"]) for t in targets), default=0)
    labels = torch.zeros(batch, t_max, dtype=torch.long, device=device)
    boxes = torch.full((batch, t_max, 4), 0.5, device=device)
    valid = torch.zeros(batch, t_max, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        n = len(t["labels"])
        labels[i, :n] = t["labels"]
        boxes[i, :n] = t["boxes"].float() * valid_ratio[i].repeat(2)
        valid[i, :n] = True
    return labels, boxes, valid

