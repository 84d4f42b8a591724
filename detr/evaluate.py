"""Detection metrics: COCO mAP (pycocotools), per-class AP and PR curves, the F1-optimal score
threshold, and a confusion matrix. Works on plain arrays, so it is independent of the model.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import box_iou

from .data import ImageRecord

#: COCOeval.stats order for bounding boxes.
_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
#: Score threshold used when validation has no boxes to calibrate against.
DEFAULT_THRESHOLD = 0.5


@dataclass
class Prediction:
    """One image's detections in original-image pixels (all queries, no threshold)."""

    boxes: np.ndarray  # float32 [N, 4] xyxy
    scores: np.ndarray  # float32 [N]
    labels: np.ndarray  # int64 [N]


@dataclass
class EvalResult:
    metrics: dict[str, float | None]
    per_class: dict[str, dict[str, float | None]]  # label -> {"AP", "AP50", "boxes"}
    precision_at_50: np.ndarray  # [K, 101] precision over recall 0..1 at IoU 0.5 (-1 where undefined)
    threshold: float
    f1: float
    confusion: np.ndarray  # [K+1, K+1]; rows true, columns predicted; index K = background
    labels: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """JSON-ready metrics: scalars, per-class AP, threshold."""
        return {**self.metrics, "per_class": self.per_class, "threshold": self.threshold, "F1": self.f1}


def evaluate_predictions(
    records: list[ImageRecord], predictions: dict[int, Prediction], labels: list[str]
) -> EvalResult:
    metrics, precision, per_class_ap = coco_map(records, predictions, len(labels))
    counts = np.bincount(np.concatenate([r.labels for r in records] or [np.zeros(0, np.int64)]), minlength=len(labels))
    per_class = {
        name: {"AP": per_class_ap[k][0], "AP50": per_class_ap[k][1], "boxes": int(counts[k])}
        for k, name in enumerate(labels)
    }
    threshold, f1 = calibrate_threshold(records, predictions)
    confusion = confusion_matrix(records, predictions, len(labels), threshold)
    return EvalResult(
        metrics,
        per_class,
        precision[0, :, :, 0, -1].T.copy() if precision.size else np.full((len(labels), 101), -1.0),
        threshold,
        f1,
        confusion,
        list(labels),
    )


def coco_map(
    records: list[ImageRecord], predictions: dict[int, Prediction], num_classes: int, max_dets: int = 100
) -> tuple[dict[str, float | None], np.ndarray, list[tuple[float | None, float | None]]]:
    """COCO box metrics. Undefined values (no ground truth of that kind) are None, not -1."""
    gt = {
        "images": [{"id": r.image_id, "width": r.width, "height": r.height} for r in records],
        "categories": [{"id": k + 1, "name": str(k)} for k in range(num_classes)],
        "annotations": [],
    }
    for r in records:
        for box, cls in zip(r.boxes, r.labels):
            x0, y0, x1, y1 = (float(v) for v in box)
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": r.image_id,
                    "category_id": int(cls) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    rows = []
    for image_id, p in predictions.items():
        order = np.argsort(-p.scores, kind="stable")[:max_dets]
        for i in order:
            x0, y0, x1, y1 = (float(v) for v in p.boxes[i])
            rows.append([image_id, x0, y0, x1 - x0, y1 - y0, float(p.scores[i]), int(p.labels[i]) + 1])
    empty = (
        {name: (0.0 if name.startswith("A") and gt["annotations"] else None) for name in _STAT_NAMES},
        np.zeros(0),
        [(None, None)] * num_classes,
    )
    if not rows or not gt["annotations"]:
        return empty
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(np.array(rows, dtype=np.float64))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    metrics = {name: _defined(v) for name, v in zip(_STAT_NAMES, ev.stats)}
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    per_class = []
    for k in range(num_classes):
        p_all = precision[:, :, k, 0, -1]
        p50 = precision[0, :, k, 0, -1]
        per_class.append((_mean_defined(p_all), _mean_defined(p50)))
    return metrics, precision, per_class


def calibrate_threshold(
    records: list[ImageRecord], predictions: dict[int, Prediction], iou: float = 0.5
) -> tuple[float, float]:
    """The score threshold with the best F1 over all classes at IoU ``iou``, and that F1."""
    scores, hits, total = [], [], 0
    for r in records:
        total += len(r.labels)
        p = predictions.get(r.image_id)
        if p is None or not len(p.scores):
            continue
        s, tp = _match(r, p, iou)
        scores.append(s)
        hits.append(tp)
    if total == 0 or not scores:
        return DEFAULT_THRESHOLD, 0.0
    s = np.concatenate(scores)
    tp = np.concatenate(hits)
    order = np.argsort(-s, kind="stable")
    s, tp = s[order], tp[order]
    ctp = np.cumsum(tp)
    precision = ctp / np.arange(1, len(tp) + 1)
    recall = ctp / total
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1))
    if f1[best] <= 0:
        return DEFAULT_THRESHOLD, 0.0
    # Midway to the next lower score, so the chosen detections stay above it with some slack.
    below = s[best + 1] if best + 1 < len(s) else 0.0
    return float((s[best] + below) / 2), float(f1[best])


def confusion_matrix(
    records: list[ImageRecord], predictions: dict[int, Prediction], num_classes: int, threshold: float, iou: float = 0.5
) -> np.ndarray:
    """Rows = true class, columns = predicted; index K is background (missed box / false detection)."""
    cm = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for r in records:
        p = predictions.get(r.image_id)
        keep = p.scores >= threshold if p is not None else np.zeros(0, bool)
        boxes = p.boxes[keep] if p is not None else np.zeros((0, 4), np.float32)
        labels = p.labels[keep] if p is not None else np.zeros(0, np.int64)
        scores = p.scores[keep] if p is not None else np.zeros(0, np.float32)
        matched_gt = np.zeros(len(r.labels), bool)
        if len(boxes) and len(r.labels):
            ious = box_iou(torch.from_numpy(boxes), torch.from_numpy(r.boxes)).numpy()
            for i in np.argsort(-scores, kind="stable"):
                candidates = np.where(~matched_gt & (ious[i] >= iou))[0]
                if len(candidates):
                    j = candidates[np.argmax(ious[i, candidates])]
                    matched_gt[j] = True
                    cm[r.labels[j], labels[i]] += 1
                else:
                    cm[num_classes, labels[i]] += 1
        else:
            for lab in labels:
                cm[num_classes, lab] += 1
        for j in np.where(~matched_gt)[0]:
            cm[r.labels[j], num_classes] += 1
    return cm


def _match(r: ImageRecord, p: Prediction, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy same-class matching by descending score; returns (scores, is_true_positive)."""
    order = np.argsort(-p.scores, kind="stable")
    tp = np.zeros(len(order), dtype=np.float64)
    if len(r.labels):
        ious = box_iou(torch.from_numpy(p.boxes[order]), torch.from_numpy(r.boxes)).numpy()
        used = np.zeros(len(r.labels), bool)
        for rank, i in enumerate(order):
            ok = (~used) & (r.labels == p.labels[i]) & (ious[rank] >= iou)
            if ok.any():
                j = np.where(ok)[0][np.argmax(ious[rank, ok])]
                used[j] = True
                tp[rank] = 1.0
    return p.scores[order].astype(np.float64), tp


def _defined(v: float) -> float | None:
    return None if v < 0 or math.isnan(v) else float(v)


def _mean_defined(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None
