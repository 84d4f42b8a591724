"""Hungarian matching of predictions to targets, for every decoder layer at once.

The reference matcher builds one cost matrix over the whole batch (B*Q x sum of targets),
copies it to the host and solves only its diagonal blocks, once per decoder layer: six host
syncs per step and B times more data than needed. Here the cost is built on the device as
per-image blocks padded to the largest target count ([L, B, Q, T_max]), moved to the host
**once per step** for all layers, and each block is solved with scipy on its valid columns.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from .box_ops import cxcywh_to_xyxy, generalized_box_iou

#: One assignment per layer and image: (query indices, target indices), int64 numpy arrays.
Assignment = tuple[np.ndarray, np.ndarray]

#: A valid box used to pad target slots so padded costs stay finite (they are never selected).
_PAD_BOX = (0.5, 0.5, 1.0, 1.0)


class HungarianMatcher:
    """Costs: ``cost_class * -p(class) + cost_bbox * L1 + cost_giou * -GIoU`` (DETR defaults 1, 5, 2);
    with ``focal`` the class cost is the focal one.

    The reference's constant "1 -" of the class cost is dropped: it does not change the matching.
    """

    def __init__(
        self,
        cost_class: float = 1.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        *,
        focal: tuple[float, float] | None = None,
    ):
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("matcher costs are all 0; set at least one of set_cost_class/bbox/giou above 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.focal = focal  # (alpha, gamma) for sigmoid classifiers, None for softmax

    def _class_cost(self, logits: Tensor) -> Tensor:
        """Per-class matching cost [..., K]: -p for softmax; the focal loss difference for sigmoid
        (Deformable DETR), so the cost agrees with the loss being minimised."""
        if self.focal is None:
            return -logits.float().softmax(-1)
        alpha, gamma = self.focal
        prob = logits.float().sigmoid()
        neg = (1 - alpha) * prob.pow(gamma) * -(1 - prob + 1e-8).log()
        pos = alpha * (1 - prob).pow(gamma) * -(prob + 1e-8).log()
        return pos - neg

    @torch.no_grad()
    def cost_blocks(self, logits: Tensor, boxes: Tensor, targets: list[dict]) -> Tensor:
        """logits [L, B, Q, C], boxes [L, B, Q, 4] (cxcywh); returns costs [L, B, Q, T_max] on the device."""
        num_layers, batch, queries = logits.shape[:3]
        counts = [len(t["labels"]) for t in targets]  # shapes are host metadata: no sync
        t_max = max(counts, default=0)
        if t_max == 0:
            return logits.new_zeros(num_layers, batch, queries, 0)
        tgt_labels = logits.new_zeros(batch, t_max, dtype=torch.long)
        tgt_boxes = torch.tensor(_PAD_BOX, device=logits.device).repeat(batch, t_max, 1)
        for i, t in enumerate(targets):
            tgt_labels[i, : counts[i]] = t["labels"]
            tgt_boxes[i, : counts[i]] = t["boxes"].to(tgt_boxes.dtype)

        index = tgt_labels[None, :, None, :].expand(num_layers, batch, queries, t_max)
        cost = self.cost_class * self._class_cost(logits).gather(-1, index)
        pred = boxes.float()
        cost = cost + self.cost_bbox * torch.cdist(pred.flatten(0, 1), tgt_boxes.repeat(num_layers, 1, 1), p=1).view(
            num_layers, batch, queries, t_max
        )
        giou = generalized_box_iou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(tgt_boxes)[None])
        cost = cost - self.cost_giou * giou
        # A diverging model can produce NaN boxes; scipy rejects non-finite costs.
        return torch.nan_to_num(cost, nan=1e8, posinf=1e8, neginf=-1e8)

    def __call__(self, logits: Tensor, boxes: Tensor, targets: list[dict]) -> list[list[Assignment]]:
        """Match every layer; returns ``result[layer][image] = (query_idx, target_idx)``."""
        counts = [len(t["labels"]) for t in targets]
        costs = self.cost_blocks(logits, boxes, targets).cpu().numpy()  # the one host sync of the step
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        result = []
        for layer_costs in costs:
            per_image = []
            for c, n in zip(layer_costs, counts):
                if n == 0:
                    per_image.append(empty)
                    continue
                rows, cols = linear_sum_assignment(c[:, :n])
                per_image.append((rows.astype(np.int64), cols.astype(np.int64)))
            result.append(per_image)
        return result
