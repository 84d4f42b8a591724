"""The CVAT detector Nuclio function, through nuclio_sdk: wire format, image handling, thresholds, bad input."""

from __future__ import annotations

import base64
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from detr.checkpoint import CheckpointError, save_model_file
from detr.config import FAST_MODEL
from detr.model import build_model_from_config
from serverless.detector import main
from serverless.detector.images import decode_image
from tests.fakes.models import constant_model
from tests.fakes.nuclio import Platform, make_event, to_wire

#: The known model: one query whose box is (cx, cy, w, h) = BOX in image fractions, whatever the
#: image, and whose class scores are fixed: class 1 ("square") wins with SCORE.
BOX = (0.5, 0.25, 0.5, 0.5)
LOGITS = (0.0, 2.0, 0.0)  # "", "square", no-object
SCORE = math.exp(2.0) / (math.exp(2.0) + 2.0)  # 0.787
CALIBRATED = 0.6


def known_model(path, *, labels=("", "square"), threshold=CALIBRATED, box=BOX, logits=LOGITS) -> str:
    save_model_file(path, constant_model(box, logits), labels=list(labels), threshold=threshold, metrics={},
                    image_size=64, max_size=96)
    return str(path)


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def rgb(width: int = 160, height: int = 90) -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def start_detector(model_path: str):
    """A detector container serving ``model_path``; returns a function that calls the handler like the
    wrapper does and gives (status, content type, decoded body)."""
    platform = Platform()

    def call(body, content_type="application/json"):
        wire = to_wire(platform.call_handler(main.handler, make_event("POST", "/", body, content_type=content_type)))
        return wire["status_code"], wire["content_type"], json.loads(wire["body"])

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETR_MODEL", model_path)
        call({"image": encode(rgb())})  # init_context runs on the first call
    return call


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    return start_detector(known_model(tmp_path_factory.mktemp("model") / "model.pt"))


def expected_points(width: int, height: int, box=BOX) -> list[float]:
    cx, cy, w, h = box
    return [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]


def test_a_known_model_gives_its_box_in_pixels_of_the_original_frame(detector):
    status, content_type, shapes = detector({"image": encode(rgb(300, 200))})
    assert (status, content_type) == (200, "application/json")
    assert isinstance(shapes, list) and len(shapes) == 1
    shape = shapes[0]
    assert set(shape) == {"label", "points", "type", "confidence"}
    assert shape["label"] == "square" and shape["type"] == "rectangle"
    assert isinstance(shape["confidence"], str) and float(shape["confidence"]) == pytest.approx(SCORE, abs=1e-3)
    assert shape["points"] == pytest.approx(expected_points(300, 200), abs=0.05)  # [75, 0, 225, 100]


def gray16(width: int, height: int) -> Image.Image:
    return Image.fromarray((np.arange(width * height).reshape(height, width) * 7 % 65536).astype(np.uint16))


def wrap_lines(text: str, width: int = 76) -> str:
    """Base64 as the `base64` command writes it."""
    return "\n".join(text[i:i + width] for i in range(0, len(text), width))


#: Sizes differ (to check the scaling back to pixels) but share one aspect ratio, so the model
#: input keeps one shape and CPU kernels are set up once.
FRAMES = {
    "JPEG": lambda: encode(rgb(176, 99), "JPEG"),
    "PNG": lambda: encode(rgb(192, 108)),
    "BMP": lambda: encode(rgb(208, 117), "BMP"),
    "TIFF": lambda: encode(rgb(224, 126), "TIFF"),
    "WEBP": lambda: encode(rgb(240, 135), "WEBP"),
    "GIF": lambda: encode(rgb(256, 144).convert("P"), "GIF"),
    "grayscale": lambda: encode(rgb(272, 153).convert("L")),
    "grayscale+alpha": lambda: encode(rgb(288, 162).convert("LA")),
    "RGBA": lambda: encode(rgb(304, 171).convert("RGBA")),
    "palette": lambda: encode(rgb(320, 180).convert("P")),
    "palette+transparency": lambda: encode(rgb(336, 189).convert("P"), transparency=0),
    "1-bit": lambda: encode(rgb(352, 198).convert("1")),
    "16-bit PNG": lambda: encode(gray16(416, 234)),
    "16-bit TIFF": lambda: encode(gray16(432, 243), "TIFF"),
    "CMYK JPEG": lambda: encode(rgb(368, 207).convert("CMYK"), "JPEG"),
    "base64 with line breaks": lambda: wrap_lines(encode(rgb(384, 216))),
    "data URL": lambda: "data:image/png;base64," + encode(rgb(400, 225)),
}


@pytest.mark.parametrize("kind", FRAMES)
def test_every_frame_kind_cvat_can_hold_is_served(detector, kind):
    image = FRAMES[kind]()
    status, _, shapes = detector({"image": image})
    assert status == 200, shapes
    width, height = Image.open(io.BytesIO(base64.b64decode(image.split(",")[-1].replace("\n", "")))).size
    assert [s["points"] for s in shapes] == [pytest.approx(expected_points(width, height), abs=0.05)]


def test_boxes_follow_the_exif_orientation_cvat_displays(detector):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated by 90 degrees clockwise, 80 wide and 120 high
    status, _, shapes = detector({"image": encode(rgb(120, 80), "JPEG", exif=exif)})
    assert status == 200
    assert shapes[0]["points"] == pytest.approx(expected_points(80, 120), abs=0.05)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = base64.b64decode(encode(rgb(12, 7), "PNG", exif=exif))
    expected = np.array(ImageOps.exif_transpose(Image.open(io.BytesIO(data)).convert("RGB")))
    assert torch.equal(decode_image(data), torch.from_numpy(expected).permute(2, 0, 1))


def test_16_bit_frames_use_their_whole_range():
    white = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert decode_image(base64.b64decode(encode(white))).unique().tolist() == [255]


def test_boxes_are_clipped_to_the_frame(tmp_path):
    call = start_detector(known_model(tmp_path / "model.pt", box=(0.9, 0.9, 0.4, 0.4)))
    status, _, shapes = call({"image": encode(rgb(200, 100))})
    assert status == 200 and shapes[0]["points"] == pytest.approx([140, 70, 200, 100], abs=0.05)


THRESHOLDS = [
    ({}, 1),                    # none sent: the model's calibrated 0.6, below the score 0.787
    ({"threshold": None}, 1),
    ({"threshold": 0.7}, 1),
    ({"threshold": 0.8}, 0),
    ({"threshold": "0.8"}, 0),  # CVAT's own handlers accept numeric strings too
    ({"threshold": 1}, 0),
    ({"threshold": 0}, 1),
]


@pytest.mark.parametrize(("extra", "boxes"), THRESHOLDS, ids=[json.dumps(t) for t, _ in THRESHOLDS])
def test_threshold_semantics(detector, extra, boxes):
    status, _, shapes = detector({"image": encode(rgb()), **extra})
    assert status == 200 and len(shapes) == boxes


def test_without_a_threshold_the_calibrated_one_applies(tmp_path):
    call = start_detector(known_model(tmp_path / "model.pt", threshold=0.9))
    assert len(call({"image": encode(rgb())})[2]) == 0
    assert len(call({"image": encode(rgb()), "threshold": 0.5})[2]) == 1


def test_unused_class_slots_are_never_reported(tmp_path):
    # The official checkpoint's 91 slots include COCO ids without a category: empty names.
    call = start_detector(known_model(tmp_path / "model.pt", logits=(2.0, 0.0, 0.0)))
    assert call({"image": encode(rgb()), "threshold": 0})[2] == []


def huge_png() -> str:
    return encode(Image.new("1", (10_000, 9_000)))


def truncated_jpeg() -> str:
    data = base64.b64decode(encode(rgb(300, 200), "JPEG"))
    return base64.b64encode(data[: len(data) // 2]).decode()


BAD_INPUT = [
    ("no body", None, "expected a JSON object such as {\"image\""),
    ("empty body", b"", "got an empty body"),
    ("not JSON", b"image=abc", "the request body is not valid JSON"),
    ("a JSON list", [1, 2], "got a JSON array"),
    ("no image", {"threshold": 0.5}, "missing field 'image'"),
    ("image not a string", {"image": 42}, "field 'image' must be a base64 string, got a JSON number"),
    ("bad base64", {"image": "not*base64!"}, "field 'image' is not valid base64"),
    ("empty image", {"image": ""}, "field 'image' is empty"),
    ("not an image", {"image": base64.b64encode(b"hello, world").decode()},
     "field 'image' is not an image in a known format (it starts with b'hello, w'); send a JPEG, PNG"),
    ("deeply nested JSON", b"[" * 5000 + b"]" * 5000, "the request body is nested too deeply"),
    ("unsupported format", {"image": encode(rgb(), "PPM")}, "send a JPEG, PNG, BMP, TIFF, WEBP or GIF file"),
    ("truncated JPEG", {"image": truncated_jpeg()}, "the image could not be decoded"),
    ("oversized image", {"image": huge_png()}, "the image is 10000x9000 (90.0 megapixels), more than the 80"),
    ("threshold not a number", {"image": encode(rgb()), "threshold": "high"},
     "field 'threshold' must be a number in [0, 1], got 'high'"),
    ("threshold out of range", {"image": encode(rgb()), "threshold": 1.5}, "must be a number in [0, 1], got 1.5"),
    ("threshold negative", {"image": encode(rgb()), "threshold": -0.1}, "got -0.1"),
    ("threshold a boolean", {"image": encode(rgb()), "threshold": True}, "got a JSON boolean"),
    ("threshold NaN", {"image": encode(rgb()), "threshold": "nan"}, "got 'nan'"),
]


@pytest.mark.parametrize(("body", "message"), [(b, m) for _, b, m in BAD_INPUT], ids=[c for c, _, _ in BAD_INPUT])
def test_bad_input_gets_a_400_with_a_clear_json_error(detector, body, message):
    content_type = "text/plain" if isinstance(body, bytes) else "application/json"
    status, content_type, error = detector(body, content_type=content_type)
    assert (status, content_type, set(error)) == (400, "application/json", {"error"})
    assert message in error["error"] and " object at 0x" not in error["error"]


def test_json_sent_with_a_charset_is_still_understood(detector):
    body = json.dumps({"image": encode(rgb())}).encode()
    status, _, shapes = detector(body, content_type="application/json; charset=utf-8")
    assert status == 200 and len(shapes) == 1


def test_damaged_frames_never_cause_a_500(detector):
    rng = np.random.default_rng(1)
    for fmt in ("JPEG", "PNG", "TIFF", "BMP", "GIF", "WEBP"):
        data = bytearray(base64.b64decode(encode(rgb(64, 48).convert("P") if fmt == "GIF" else rgb(64, 48), fmt)))
        for _ in range(8):
            damaged = bytearray(data)
            for index in rng.integers(0, len(damaged), 6):
                damaged[index] = int(rng.integers(0, 256))
            damaged = damaged[: int(rng.integers(8, len(damaged) + 1))]
            status, _, _ = detector({"image": base64.b64encode(bytes(damaged)).decode()})
            assert status in (200, 400)


def test_init_context_needs_a_model(tmp_path, monkeypatch):
    monkeypatch.delenv("DETR_MODEL", raising=False)
    with pytest.raises(RuntimeError, match="DETR_MODEL is not set"):
        Platform().call_handler(main.handler, make_event(body={}))
    (tmp_path / "model.pt").write_bytes(b"not a model")
    monkeypatch.setenv("DETR_MODEL", str(tmp_path / "model.pt"))
    with pytest.raises(CheckpointError, match="damaged or not a PyTorch checkpoint"):
        Platform().call_handler(main.handler, make_event(body={}))


def test_a_fast_architecture_model_serves_the_same_wire_format(tmp_path):
    config = FAST_MODEL.replace(num_classes=2, hidden_dim=32, nheads=4, dim_feedforward=64, num_queries=10)
    torch.manual_seed(0)
    save_model_file(tmp_path / "fast.pt", build_model_from_config(config), labels=["cat", "dog"], threshold=0.5,
                    metrics={}, image_size=64, max_size=96)
    call = start_detector(str(tmp_path / "fast.pt"))
    status, content_type, shapes = call({"image": encode(rgb(160, 90)), "threshold": 0.0})
    assert status == 200 and content_type == "application/json" and len(shapes) == 10
    for shape in shapes:
        assert shape["type"] == "rectangle" and shape["label"] in ("cat", "dog")
        assert 0 <= float(shape["confidence"]) <= 1
        xtl, ytl, xbr, ybr = shape["points"]
        assert 0 <= xtl <= xbr <= 160 and 0 <= ytl <= ybr <= 90


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_precision_comes_from_the_functions_env(tmp_path, monkeypatch, precision):
    """DETR_PRECISION picks the precision (the log and the detector say which); both serve the same box."""
    monkeypatch.setenv("DETR_MODEL", known_model(tmp_path / "model.pt"))
    monkeypatch.setenv("DETR_PRECISION", precision)
    platform = Platform()
    wire = to_wire(platform.call_handler(main.handler, make_event(body={"image": encode(rgb())})))
    detector = platform._get_handler_context(main.handler).user_data.detector
    assert detector.precision == precision
    [shape] = json.loads(wire["body"])
    assert shape["points"] == pytest.approx(expected_points(*rgb().size), abs=1.0)


def test_an_unknown_precision_is_refused_at_start_up(tmp_path, monkeypatch):
    monkeypatch.setenv("DETR_MODEL", known_model(tmp_path / "model.pt"))
    monkeypatch.setenv("DETR_PRECISION", "fp8")
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        Platform().call_handler(main.handler, make_event(body={}))
