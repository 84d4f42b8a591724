"""CVAT's detector contract: the request it sends and the shapes it expects back.

Request: ``{"image": <base64 of the encoded frame>, "threshold": <float, optional>}``.
CVAT adds ``threshold`` only when the user gave a non-zero value, so its absence means
"use the model's calibrated threshold". Other keys are ignored, as CVAT has added and
removed some over versions (``quality`` in 2.14).

Response: a list of ``{"label", "points": [xtl, ytl, xbr, ybr], "type": "rectangle",
"confidence": "<str>"}`` in absolute pixels of the frame as CVAT displays it.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from torch import Tensor

from cvat_plugin.responses import RequestError, json_type
from serverless.detector.images import decode_image

REQUEST_EXAMPLE = '{"image": "<base64 of a JPEG/PNG frame>", "threshold": 0.5}'

_WHITESPACE = re.compile(rb"\s+")


@dataclass(frozen=True)
class DetectRequest:
    image: Tensor
    """RGB uint8 [3, H, W], upright as CVAT shows it."""
    threshold: float | None
    """Score threshold in [0, 1]; None = the model's calibrated threshold."""


def parse_request(body: Mapping[str, Any]) -> DetectRequest:
    """Validate a decoded request body; raises :class:`RequestError` on bad input."""
    if "image" not in body:
        raise RequestError(f"missing field 'image'; send {REQUEST_EXAMPLE}")
    image = decode_image(decode_base64(body["image"]))
    return DetectRequest(image=image, threshold=parse_threshold(body.get("threshold")))


def decode_base64(value: Any) -> bytes:
    """Bytes of a base64 string; tolerates line breaks and a ``data:...;base64,`` prefix."""
    if not isinstance(value, str):
        raise RequestError(f"field 'image' must be a base64 string, got a JSON {json_type(value)}")
    text = value.encode("ascii", errors="replace")
    if text.startswith(b"data:") and b"," in text:
        text = text.split(b",", 1)[1]
    text = _WHITESPACE.sub(b"", text)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(
            f"field 'image' is not valid base64 ({e}); encode the image file bytes with standard base64"
        ) from e


def parse_threshold(value: Any) -> float | None:
    """A score threshold in [0, 1], or None when not given (JSON null counts as not given)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RequestError(f"field 'threshold' must be a number in [0, 1], got a JSON {json_type(value)}")
    try:
        threshold = float(value)
    except ValueError as e:
        raise RequestError(f"field 'threshold' must be a number in [0, 1], got {value!r}") from e
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise RequestError(f"field 'threshold' must be a number in [0, 1], got {value!r}")
    return threshold


def to_cvat_shapes(boxes: np.ndarray, scores: np.ndarray, label_names: list[str]) -> list[dict[str, Any]]:
    """CVAT rectangles from absolute xyxy ``boxes`` [N, 4], ``scores`` [N] and their label names."""
    return [
        {
            "label": name,
            "points": [round(float(v), 2) for v in box],
            "type": "rectangle",
            "confidence": f"{float(score):.4f}",
        }
        for box, score, name in zip(boxes, scores, label_names)
    ]
