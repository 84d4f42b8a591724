"""Metrics on hand-made predictions: COCO AP, the calibrated threshold, the confusion matrix."""

from pathlib import Path

import numpy as np
import pytest

from detr.data import ImageRecord
from detr.evaluate import Prediction, calibrate_threshold, confusion_matrix, evaluate_predictions


def _record(image_id, boxes, labels):
    return ImageRecord(
        image_id,
        Path(f"{image_id}.jpg"),
        f"{image_id}.jpg",
        100,
        100,
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array(labels, np.int64),
    )


def _pred(boxes, scores, labels):
    return Prediction(
        np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32), np.array(labels, np.int64)
    )


RECORDS = [
    _record(1, [[10, 10, 40, 40], [50, 50, 90, 90]], [0, 1]),
    _record(2, [[20, 20, 60, 60]], [1]),
    _record(3, [], []),
]


def test_perfect_predictions_score_ap_one():
    preds = {r.image_id: _pred(r.boxes, [0.9] * len(r.labels), r.labels) for r in RECORDS}
    result = evaluate_predictions(RECORDS, preds, ["a", "b"])
    assert result.metrics["AP"] == pytest.approx(1.0) and result.metrics["AP50"] == pytest.approx(1.0)
    assert result.per_class["a"]["AP"] == pytest.approx(1.0) and result.per_class["b"]["boxes"] == 2
    assert result.confusion.tolist() == [[1, 0, 0], [0, 2, 0], [0, 0, 0]]


def test_wrong_class_and_missed_boxes_lower_ap_and_show_in_the_confusion_matrix():
    preds = {
        1: _pred([[10, 10, 40, 40], [5, 60, 30, 95]], [0.9, 0.8], [1, 0]),
        2: _pred([], [], []),
        3: _pred([], [], []),
    }
    result = evaluate_predictions(RECORDS, preds, ["a", "b"])
    assert result.metrics["AP50"] < 0.2
    # box 1 predicted as b (true a); box (50,50,90,90) of b and image 2's b missed; one false detection of a
    assert result.confusion.tolist() == [[0, 1, 0], [0, 0, 2], [1, 0, 0]]


def test_undefined_metrics_are_none_not_minus_one():
    records = [_record(1, [[10, 10, 90, 90]], [0])]  # one medium box (80x80): no small or large ground truth
    result = evaluate_predictions(records, {1: _pred([[10, 10, 90, 90]], [0.9], [0])}, ["a", "b"])
    assert (
        result.metrics["APs"] is None and result.metrics["APl"] is None and result.metrics["APm"] == pytest.approx(1.0)
    )
    assert result.per_class["b"]["AP"] is None


def test_threshold_is_f1_optimal():
    records = [_record(i, [[10, 10, 50, 50]], [0]) for i in range(1, 5)]
    # true positives score 0.9/0.8/0.7, a false positive 0.6 in image 4, and image 4's box found at 0.3
    preds = {
        1: _pred([[10, 10, 50, 50]], [0.9], [0]),
        2: _pred([[10, 10, 50, 50]], [0.8], [0]),
        3: _pred([[10, 10, 50, 50]], [0.7], [0]),
        4: _pred([[60, 60, 90, 90], [10, 10, 50, 50]], [0.6, 0.3], [0, 0]),
    }
    threshold, f1 = calibrate_threshold(records, preds)
    # keeping all five (P 4/5, R 1: F1 8/9) beats keeping the first three (P 1, R 3/4: F1 6/7)
    assert f1 == pytest.approx(8 / 9)
    assert threshold < 0.3 + 1e-6
    # without the late true positive the best cut is between 0.7 and 0.6
    preds[4] = _pred([[60, 60, 90, 90]], [0.6], [0])
    threshold, f1 = calibrate_threshold(records, preds)
    assert f1 == pytest.approx(6 / 7) and 0.6 < threshold < 0.7


def test_no_ground_truth_gives_the_default_threshold():
    records = [_record(1, [], [])]
    assert calibrate_threshold(records, {1: _pred([[1, 1, 5, 5]], [0.9], [0])}) == (0.5, 0.0)
    result = evaluate_predictions(records, {1: _pred([[1, 1, 5, 5]], [0.9], [0])}, ["a"])
    assert result.metrics["AP"] is None


def test_confusion_counts_false_positives_above_the_threshold_only():
    cm = confusion_matrix(RECORDS, {3: _pred([[1, 1, 9, 9], [1, 1, 9, 9]], [0.9, 0.1], [0, 1])}, 2, 0.5)
    assert cm[2, 0] == 1 and cm[2, 1] == 0
