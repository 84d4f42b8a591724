"""Detector: every image kind in, absolute clipped boxes out, threshold semantics."""

import numpy as np
import pytest
import torch
from PIL import Image

from detr import Detector
from tests.fakes.models import constant_model as _constant_model


@pytest.fixture
def detector():
    # class "dog" with p = e^4 / (e^4 + 1 + 1) ~ 0.965; box centre (0.5, 0.25), size 0.5 x 0.2
    return Detector(
        _constant_model([0.5, 0.25, 0.5, 0.2], [0.0, 4.0, 0.0]),
        ["cat", "dog"],
        threshold=0.5,
        image_size=64,
        max_size=128,
        device="cpu",
    )


IMAGES = {
    "pil_rgb": lambda: Image.new("RGB", (200, 100), (10, 200, 30)),
    "pil_gray": lambda: Image.new("L", (200, 100), 128),
    "pil_rgba": lambda: Image.new("RGBA", (200, 100), (10, 20, 30, 128)),
    "pil_palette": lambda: Image.new("RGB", (200, 100), (1, 2, 3)).convert("P"),
    "pil_16bit": lambda: Image.fromarray(np.full((100, 200), 40000, np.uint16)),
    "numpy_hwc": lambda: np.zeros((100, 200, 3), np.uint8),
    "numpy_hw": lambda: np.zeros((100, 200), np.uint8),
    "tensor_chw_uint8": lambda: torch.zeros(3, 100, 200, dtype=torch.uint8),
    "tensor_chw_float": lambda: torch.rand(3, 100, 200),
}


@pytest.mark.parametrize("kind", IMAGES)
def test_boxes_are_in_original_image_pixels_for_every_image_kind(detector, kind):
    [det] = detector.predict(IMAGES[kind]())
    assert det.label_names == ["dog"] and det.labels.tolist() == [1]
    np.testing.assert_allclose(det.boxes, [[50, 15, 150, 35]], atol=1e-3)
    assert det.scores[0] == pytest.approx(np.exp(4) / (np.exp(4) + 2), abs=1e-4)


def test_boxes_are_clipped_to_the_image():
    detector = Detector(_constant_model([0.9, 0.6, 0.5, 0.9], [5.0, 0.0]), ["cat"], device="cpu", image_size=64)
    [det] = detector.predict(np.zeros((50, 80, 3), np.uint8))
    np.testing.assert_allclose(det.boxes, [[52, 7.5, 80, 50]], atol=1e-3)


def test_threshold_defaults_to_the_calibrated_one_and_can_be_overridden(detector):
    image = np.zeros((100, 200, 3), np.uint8)
    assert len(detector.predict(image)[0]) == 1
    assert len(detector.predict(image, threshold=0.97)[0]) == 0
    detector.threshold = 0.97
    assert len(detector.predict(image)[0]) == 0
    assert len(detector.predict(image, threshold=0.0)[0]) == 1


def test_unnamed_class_slots_are_never_reported():
    detector = Detector(
        _constant_model([0.5, 0.5, 0.2, 0.2], [0.0, 6.0, 0.0]), ["person", ""], device="cpu", image_size=64
    )
    assert len(detector.predict(np.zeros((64, 64, 3), np.uint8), threshold=0.0)[0]) == 0


def test_batches_give_one_result_per_image_in_order(detector):
    images = [np.zeros((100, 200, 3), np.uint8), np.zeros((60, 60, 3), np.uint8), Image.new("RGB", (30, 90))]
    results = detector.predict(images, batch_size=2)
    assert len(results) == 3
    np.testing.assert_allclose(results[1].boxes, [[15, 9, 45, 21]], atol=1e-3)
    np.testing.assert_allclose(results[2].boxes, [[7.5, 13.5, 22.5, 31.5]], atol=1e-3)
    assert results[0].to_list()[0]["label"] == "dog"


def test_bad_images_raise_clear_errors(detector):
    from detr.images import ImageError, decode_bytes

    with pytest.raises(ImageError, match="unsupported image shape"):
        detector.predict(np.zeros((2, 3, 4, 5), np.uint8))
    with pytest.raises(ImageError, match="corrupt, truncated or not an image"):
        decode_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(ImageError, match="empty"):
        decode_bytes(b"")


def test_postprocess_drops_a_duplicate_of_a_better_box_of_its_class_only():
    """Two queries on one object give one box; overlapping objects of other classes, or of the same class
    overlapping less than DUPLICATE_IOU, all stay."""
    from detr.postprocess import DUPLICATE_IOU, postprocess

    boxes = torch.tensor([[[0.50, 0.50, 0.40, 0.40],    # an object
                           [0.51, 0.50, 0.40, 0.40],    # the same object again, lower score: dropped
                           [0.50, 0.50, 0.40, 0.40],    # the same place, another class: kept
                           [0.70, 0.50, 0.40, 0.40]]])  # same class, IoU 0.33 < DUPLICATE_IOU: kept
    logits = torch.full((1, 4, 3), -9.0)
    for query, (cls, logit) in enumerate([(0, 4.0), (0, 3.0), (1, 2.0), (0, 1.0)]):
        logits[0, query, cls] = logit
    [det] = postprocess({"pred_logits": logits, "pred_boxes": boxes}, torch.tensor([[100, 100]]), classifier="sigmoid")
    assert DUPLICATE_IOU < 0.9
    assert det["labels"].tolist() == [0, 1, 0]
    assert det["scores"].tolist() == sorted(det["scores"].tolist(), reverse=True)
    torch.testing.assert_close(det["boxes"][0], torch.tensor([30.0, 30.0, 70.0, 70.0]))
