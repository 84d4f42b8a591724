"""Nuclio entry point of the CVAT detector: serves one DETR model file.

``init_context`` loads the model named by ``DETR_MODEL`` once per worker process, at the
precision ``DETR_PRECISION`` names (``auto``, the default: bf16 where the hardware runs it natively);
``handler`` turns one CVAT request into boxes. ``detr.Detector`` is the model handler.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

from cvat_plugin.responses import RequestError, error_response, json_object, json_response
from detr import Detector
from serverless.detector.request import REQUEST_EXAMPLE, parse_request, to_cvat_shapes

#: Size of the blank frame used to warm the model up (CVAT frames are often 720p or larger).
WARMUP_SHAPE = (720, 1280, 3)


def init_context(context: Any) -> None:
    context.logger.info("Init context...  0%")
    model_path = os.environ.get("DETR_MODEL")
    if not model_path:
        raise RuntimeError("DETR_MODEL is not set; set it to the path of a model.pt in the function's env")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    detector = Detector.from_file(model_path, device=device, precision=os.environ.get("DETR_PRECISION", "auto"))
    # The first call pays for allocator and kernel set-up; do it before CVAT's first frame.
    detector.predict([np.zeros(WARMUP_SHAPE, dtype=np.uint8)])
    context.user_data.detector = detector
    context.logger.info_with(
        "Model loaded", path=model_path, device=str(detector.device), precision=detector.precision,
        architecture=detector.model.config.architecture, labels=len(detector.labels), threshold=detector.threshold,
    )
    context.logger.info("Init context...100%")


def handler(context: Any, event: Any) -> Any:
    started = time.perf_counter()
    try:
        request = parse_request(json_object(event, example=REQUEST_EXAMPLE))
    except RequestError as e:
        context.logger.info_with("Rejected request", status=e.status, error=e.message)
        return error_response(context, e)
    detections = context.user_data.detector.predict([request.image], threshold=request.threshold)[0]
    shapes = to_cvat_shapes(detections.boxes, detections.scores, detections.label_names)
    height, width = request.image.shape[-2:]
    context.logger.debug_with(
        "Detected", width=width, height=height, boxes=len(shapes),
        ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return json_response(context, shapes)
