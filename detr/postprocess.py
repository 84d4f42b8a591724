"""Turn raw model outputs into scored boxes in image pixels.

Keeps every query (no threshold, no NMS), like the reference ``PostProcess``: evaluation
needs them all, and thresholds belong to the ``Detector``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .box_ops import cxcywh_to_xyxy, scale_boxes


@torch.no_grad()
def postprocess(outputs: dict, target_sizes: Tensor, *, classifier: str = "softmax") -> list[dict[str, Tensor]]:
    """target_sizes [B, 2] as (h, w) of the image the boxes should refer to.

    Returns per image ``scores`` [Q], ``labels`` [Q] (each query's best class; the softmax
    no-object column is excluded) and ``boxes`` [Q, 4] absolute xyxy.
    """
    prob = class_probabilities(outputs["pred_logits"], classifier)
    scores, labels = prob.max(-1)
    boxes = scale_boxes(cxcywh_to_xyxy(outputs["pred_boxes"].float()), target_sizes.to(prob.device))
    return [{"scores": s, "labels": c, "boxes": b} for s, c, b in zip(scores, labels, boxes)]


def class_probabilities(logits: Tensor, classifier: str) -> Tensor:
    """Per-class probabilities [..., K] from the head's logits."""
    if classifier == "sigmoid":
        return logits.float().sigmoid()
    return logits.float().softmax(-1)[..., :-1]
