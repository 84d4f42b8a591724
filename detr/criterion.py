"""DETR's set criterion: weighted cross-entropy, L1 and GIoU on matched pairs, for every decoder layer.

All layers (final and auxiliary) are scored in one vectorised pass over stacked outputs,
with the matching indices moved to the device in one copy. Loss names follow the reference:
``loss_ce``, ``loss_bbox``, ``loss_giou`` for the last layer and ``_0 .. _{L-2}`` suffixes for
the auxiliary ones; ``weight_dict`` says how they add up.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from .box_ops import box_iou, cxcywh_to_xyxy, generalized_box_iou
from .distributed import average_over_processes
from .matcher import HungarianMatcher

#: Varifocal loss: weight of the negatives and the power of their score (VarifocalNet, RT-DETR).
VARIFOCAL_ALPHA = 0.75
VARIFOCAL_GAMMA = 2.0


def stack_layers(outputs: dict) -> tuple[Tensor, Tensor]:
    """Stack auxiliary and final outputs into logits [L, B, Q, K+1] and boxes [L, B, Q, 4] (final last)."""
    layers = list(outputs.get("aux_outputs", [])) + [outputs]
    return (torch.stack([o["pred_logits"] for o in layers]), torch.stack([o["pred_boxes"] for o in layers]))


def count_boxes(targets: list[dict], device: torch.device) -> Tensor:
    """Target boxes in the batch, averaged over processes; a tensor, so that no host sync is needed."""
    num_boxes = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
    return average_over_processes(num_boxes).clamp(min=1.0)


class SetCriterion(nn.Module):
    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        *,
        eos_coef: float = 0.1,
        ce_loss_coef: float = 1.0,
        bbox_loss_coef: float = 5.0,
        giou_loss_coef: float = 2.0,
        focal: tuple[float, float] | None = None,
        varifocal: bool = False,
    ):
        super().__init__()
        if varifocal and focal is None:
            raise ValueError("the varifocal loss needs a sigmoid classifier (focal=(alpha, gamma))")
        self.num_classes = num_classes
        self.matcher = matcher
        self.focal = focal  # (alpha, gamma): sigmoid focal classification instead of softmax + no-object
        self.varifocal = varifocal  # sigmoid targets are the matched boxes' IoU (IoU-aware scores)
        self.coefs = {"loss_ce": ce_loss_coef, "loss_bbox": bbox_loss_coef, "loss_giou": giou_loss_coef}
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def weight_dict(self, num_layers: int) -> dict[str, float]:
        weights = dict(self.coefs)
        for i in range(num_layers - 1):
            weights.update({f"{k}_{i}": v for k, v in self.coefs.items()})
        return weights

    def forward(
        self, outputs: dict, targets: list[dict], indices: list[list[tuple[np.ndarray, np.ndarray]]] | None = None
    ) -> dict[str, Tensor]:
        """targets: per image ``labels`` int64 [T] and ``boxes`` [T, 4] normalised cxcywh, on the device;
        ``indices``: per layer, per image (query indices, target indices) when the pairs are
        known (denoising queries); by default the matcher finds them.

        Returns the named losses (unweighted) plus ``class_error`` (top-1 error in % on matched
        queries of the last layer, for logging; no gradient).
        """
        logits, boxes = stack_layers(outputs)
        num_layers, batch, queries = logits.shape[:3]
        device = logits.device
        if indices is None:
            indices = self.matcher(logits, boxes, targets)

        flat_np = _flatten(indices, [len(t["labels"]) for t in targets])
        # Layers come in order, so the last layer's pairs are the tail: sliced without a device sync.
        last_start = int(np.searchsorted(flat_np[0], num_layers - 1))
        flat = torch.from_numpy(np.stack(flat_np))
        layer_idx, batch_idx, src_idx, tgt_idx = flat.to(device, non_blocking=True).unbind(0)
        tgt_labels = torch.cat([t["labels"] for t in targets]) if targets else torch.zeros(0, dtype=torch.long)
        tgt_boxes = torch.cat([t["boxes"] for t in targets]) if targets else torch.zeros(0, 4)
        tgt_labels, tgt_boxes = tgt_labels.to(device), tgt_boxes.to(device)
        num_boxes = count_boxes(targets, device)

        # Boxes: matched pairs only, summed per layer and normalised by the number of target boxes.
        src_boxes = boxes[layer_idx, batch_idx, src_idx].float()
        matched_tgt = tgt_boxes[tgt_idx].float()
        l1 = F.l1_loss(src_boxes, matched_tgt, reduction="none").sum(-1)
        giou = generalized_box_iou(cxcywh_to_xyxy(src_boxes)[:, None], cxcywh_to_xyxy(matched_tgt)[:, None])

        # Classification: every query of every layer; unmatched ones target no-object.
        target_classes = torch.full((num_layers, batch, queries), self.num_classes, dtype=torch.long, device=device)
        target_classes[layer_idx, batch_idx, src_idx] = tgt_labels[tgt_idx]
        if self.focal is None:
            ce = F.cross_entropy(logits.flatten(0, 2).float(), target_classes.flatten(), reduction="none")
            weights = self.empty_weight[target_classes.flatten()]
            weight_sums = average_over_processes(weights.view(num_layers, -1).sum(1))
            loss_ce = (ce * weights).view(num_layers, -1).sum(1) / weight_sums
        elif self.varifocal:
            loss_ce = self._varifocal(logits, target_classes, (layer_idx, batch_idx, src_idx), src_boxes, matched_tgt)
            loss_ce = loss_ce / num_boxes
        else:
            # one-hot without the no-object column; summed and normalised by boxes (Deformable DETR)
            onehot = F.one_hot(target_classes, self.num_classes + 1)[..., :-1].to(logits.dtype)
            focal = sigmoid_focal_loss(logits.float(), onehot.float(), alpha=self.focal[0], gamma=self.focal[1])
            loss_ce = focal.flatten(1).sum(1) / num_boxes

        loss_bbox = torch.zeros(num_layers, device=device).index_add(0, layer_idx, l1) / num_boxes
        loss_giou = torch.zeros(num_layers, device=device).index_add(0, layer_idx, 1 - giou[:, 0, 0]) / num_boxes

        losses: dict[str, Tensor] = {}
        for i in range(num_layers):
            suffix = "" if i == num_layers - 1 else f"_{i}"
            losses["loss_ce" + suffix] = loss_ce[i]
            losses["loss_bbox" + suffix] = loss_bbox[i]
            losses["loss_giou" + suffix] = loss_giou[i]
        with torch.no_grad():
            matched_logits = logits[-1][batch_idx[last_start:], src_idx[last_start:]]
            if matched_logits.numel():
                correct = (matched_logits.argmax(-1) == tgt_labels[tgt_idx[last_start:]]).float().mean()
                losses["class_error"] = 100.0 * (1.0 - correct)
            else:
                losses["class_error"] = torch.zeros((), device=device)
        return losses

    def _varifocal(
        self, logits: Tensor, target_classes: Tensor, pairs: tuple[Tensor, ...], src_boxes: Tensor, tgt_boxes: Tensor
    ) -> Tensor:
        """Varifocal loss (VarifocalNet, Zhang et al., 2021; as in RT-DETR), summed per layer: a
        matched query's target for its class is the IoU of its box, so its score learns to say how
        good the box is; negatives are down-weighted by ``alpha * p ** gamma``."""
        onehot = F.one_hot(target_classes, self.num_classes + 1)[..., :-1].float()
        iou = torch.zeros_like(onehot[..., 0])
        matched_iou = box_iou(cxcywh_to_xyxy(src_boxes)[:, None], cxcywh_to_xyxy(tgt_boxes)[:, None])[:, 0, 0]
        iou[pairs] = matched_iou.detach().clamp(min=0)
        target = onehot * iou[..., None]
        prob = logits.float().sigmoid()
        weight = VARIFOCAL_ALPHA * prob.detach().pow(VARIFOCAL_GAMMA) * (1 - onehot) + target
        loss = F.binary_cross_entropy_with_logits(logits.float(), target, weight=weight, reduction="none")
        return loss.flatten(1).sum(1)


def _flatten(indices: list[list[tuple[np.ndarray, np.ndarray]]], counts: list[int]) -> tuple[np.ndarray, ...]:
    """Per-layer, per-image assignments -> flat (layer, image, query, global target) index arrays."""
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts else np.zeros(0, np.int64)
    parts: list[list[np.ndarray]] = [[], [], [], []]
    for layer, per_image in enumerate(indices):
        for image, (src, tgt) in enumerate(per_image):
            parts[0].append(np.full(len(src), layer, dtype=np.int64))
            parts[1].append(np.full(len(src), image, dtype=np.int64))
            parts[2].append(src)
            parts[3].append(tgt + offsets[image])
    return tuple(np.concatenate(p) if p else np.zeros(0, dtype=np.int64) for p in parts)


def total_loss(losses: dict[str, Tensor], weight_dict: dict[str, float]) -> Tensor:
    return sum(losses[k] * w for k, w in weight_dict.items() if k in losses)  # type: ignore[return-value]
