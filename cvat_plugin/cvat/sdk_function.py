"""A trained DETR model as a cvat-sdk auto-annotation detection function (no Nuclio needed)::

    cvat-cli task auto-annotate 42 --function-module cvat_plugin.cvat.sdk_function \\
        -p model=str:$DETR_HOME/models/task-7-v3/model.pt [-p precision=str:fp32]

``spec`` comes from the labels stored in the model file (class index = label id); cvat-sdk
maps them by name to the task's labels. ``detect`` keeps boxes scored at or above the
context's ``conf_threshold`` (``--conf-threshold``), else the model's calibrated threshold.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Optional

import cvat_sdk.auto_annotation as cvataa
import cvat_sdk.models as models
import PIL.Image

from detr import Detector


class DetrDetectionFunction:
    def __init__(self, model: str, device: Optional[str] = None, precision: str = "auto") -> None:
        """``model``: a model.pt, or the model folder holding it; ``device``: e.g. "cuda" (default: the best);
        ``precision``: auto (bf16 where the hardware runs it natively), fp32 or bf16."""
        path = Path(model).expanduser()
        self._detector = Detector.from_file(
            path / "model.pt" if path.is_dir() else path, device=device, precision=precision
        )

    @cached_property
    def spec(self) -> cvataa.DetectionFunctionSpec:
        return cvataa.DetectionFunctionSpec(labels=[
            cvataa.label_spec(name, index, type="rectangle")
            for index, name in enumerate(self._detector.labels) if name  # empty: an unused class slot
        ])

    def detect(self, context: cvataa.DetectionFunctionContext,
               image: PIL.Image.Image) -> list[models.LabeledShapeRequest]:
        threshold = context.conf_threshold if context.conf_threshold is not None else self._detector.threshold
        [detections] = self._detector.predict(image, threshold=threshold)
        return [cvataa.rectangle(int(label), [float(v) for v in box])
                for box, label in zip(detections.boxes, detections.labels)]


create = DetrDetectionFunction
