"""Turn raw model outputs into scored boxes in image pixels.

Keeps every query but near-duplicates (no threshold): evaluation needs them all, and thresholds
belong to the ``Detector``. A set-prediction model trained on a few hundred images may still put two
queries on one object; an annotator would have to delete the second box by hand, so a box that overlaps
a better-scored box of its class by more than ``DUPLICATE_IOU`` is dropped, for evaluation (so the
calibrated threshold fits what is served) and serving alike.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from .box_ops import cxcywh_to_xyxy, scale_boxes

#: IoU above which a box is a duplicate of a better-scored box of the same class (Ultralytics' NMS default).
DUPLICATE_IOU = 0.7


@torch.no_grad()
def postprocess(outputs: dict, target_sizes: Tensor, *, classifier: str = "softmax") -> list[dict[str, Tensor]]:
    """target_sizes [B, 2] as (h, w) of the image the boxes should refer to.

    Returns per image ``scores`` [N], ``labels`` [N] (each query's best class; the softmax
    no-object column is excluded) and ``boxes`` [N, 4] absolute xyxy, best first: the Q queries
    but their duplicates (``DUPLICATE_IOU``).
    """
    prob = class_probabilities(outputs["pred_logits"], classifier)
    scores, labels = prob.max(-1)
    boxes = scale_boxes(cxcywh_to_xyxy(outputs["pred_boxes"].float()), target_sizes.to(prob.device))
    results = []
    for s, c, b in zip(scores, labels, boxes):
        keep = batched_nms(b, s, c, DUPLICATE_IOU)
        results.append({"scores": s[keep], "labels": c[keep], "boxes": b[keep]})
    return results


def class_probabilities(logits: Tensor, classifier: str) -> Tensor:
    """Per-class probabilities [..., K] from the head's logits."""
    if classifier == "sigmoid":
        return logits.float().sigmoid()
    return logits.float().softmax(-1)[..., :-1]


#: The dense head's own detections (for its AP beside the decoder's): IoU of NMS and boxes kept per image.
DENSE_NMS_IOU = 0.6
DENSE_MAX_DETECTIONS = 100
_DENSE_CANDIDATES = 1000


@torch.no_grad()
def dense_postprocess(dense: Any, valid_ratio: Tensor, target_sizes: Tensor) -> list[dict[str, Tensor]]:
    """The fast architecture's dense head as a detector of its own: per image, the best-scoring
    cells after class-wise NMS, at most ``DENSE_MAX_DETECTIONS``, as ``postprocess`` returns them."""
    prob = dense.logits.float().sigmoid()
    boxes = scale_boxes(cxcywh_to_xyxy(dense.boxes.float() / valid_ratio.repeat(1, 2)[:, None]), target_sizes)
    results = []
    for p, b, padding in zip(prob, boxes, dense.padding):
        scores, labels = p.masked_fill(padding[:, None], 0).max(-1)
        top = scores.topk(min(_DENSE_CANDIDATES, len(scores))).indices
        keep = batched_nms(b[top], scores[top], labels[top], DENSE_NMS_IOU)[:DENSE_MAX_DETECTIONS]
        results.append({"scores": scores[top][keep], "labels": labels[top][keep], "boxes": b[top][keep]})
    return results
