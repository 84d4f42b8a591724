"""``Detector``: a trained model file turned into a callable that returns labelled boxes.

This is the one model handler shared by the CLI, the Nuclio detector, the cvat-sdk function
and the benchmarks. Thresholds live here, not in evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF

from .checkpoint import CheckpointError, load_model_file
from .config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from .data import pad_images
from .images import ImageLike, to_rgb_tensor
from .model import build_model_from_config
from .postprocess import postprocess
from .precision import autocast, prepare_images, prepare_model, resolve_precision


@dataclass
class Detections:
    """Detections of one image: ``boxes`` float32 [N, 4] absolute xyxy pixels of the original
    image (clipped), ``scores`` [N], ``labels`` class indices [N], ``label_names`` [N]."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    label_names: list[str]

    def __len__(self) -> int:
        return len(self.scores)

    def to_list(self) -> list[dict]:
        return [
            {"label": n, "score": float(s), "box": [float(v) for v in b]}
            for n, s, b in zip(self.label_names, self.scores, self.boxes)
        ]


class Detector:
    def __init__(
        self,
        model: nn.Module,
        labels: Sequence[str],
        *,
        threshold: float = 0.5,
        image_size: int = 800,
        max_size: int = 1333,
        device: str | torch.device | None = None,
        metrics: dict | None = None,
        precision: str = "auto",
    ):
        if len(labels) != model.config.num_classes:
            raise ValueError(
                f"The parameter 'labels' expected {model.config.num_classes} names but got {len(labels)} instead."
            )
        self.device = torch.device(device) if device is not None else _default_device()
        self.precision = resolve_precision(precision, self.device)
        self.model = prepare_model(model.eval().to(self.device), self.precision)
        self.labels = list(labels)
        self.threshold = float(threshold)
        self.image_size = image_size
        self.max_size = max_size
        self.metrics = metrics or {}
        # Classes with an empty name are unused slots (e.g. COCO's missing ids in the official
        # checkpoints); they are never reported.
        self._reportable = torch.tensor([bool(n) for n in self.labels], device=self.device)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(3, 1, 1) * 255
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(3, 1, 1) * 255

    @classmethod
    def from_file(
        cls, path: str | Path, device: str | torch.device | None = None, precision: str = "auto"
    ) -> "Detector":
        data = load_model_file(path)
        config = ModelConfig.from_dict(data["model_config"])
        model = build_model_from_config(config, train_backbone=False)
        try:
            model.load_state_dict(data["state_dict"])
        except RuntimeError as e:
            raise CheckpointError(
                f"{path}: the weights do not match the model settings stored with them ({e}); "
                "the file is damaged, train or export it again"
            ) from e
        return cls(
            model,
            data["labels"],
            threshold=data["threshold"],
            image_size=data.get("image_size", 800),
            max_size=data.get("max_size", 1333),
            device=device,
            metrics=data.get("metrics"),
            precision=precision,
        )

    def preprocess(self, image: ImageLike) -> Tensor:
        """RGB uint8 image -> normalised float [3, h, w] at the model's input size, on the device."""
        rgb = to_rgb_tensor(image).to(self.device, non_blocking=True)
        resized = TF.resize(rgb, [self.image_size], max_size=self.max_size, antialias=True)
        return (resized.float() - self._mean) / self._std

    @torch.inference_mode()
    def predict(
        self, images: ImageLike | Sequence[ImageLike], threshold: float | None = None, batch_size: int = 8
    ) -> list[Detections]:
        """Detect objects in one image or a list; a single image also gives a one-element list."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        threshold = self.threshold if threshold is None else float(threshold)
        results: list[Detections] = []
        for start in range(0, len(images), batch_size):
            results.extend(self._predict_batch(images[start : start + batch_size], threshold))
        return results

    __call__ = predict

    def _predict_batch(self, images: Sequence[ImageLike], threshold: float) -> list[Detections]:
        tensors, sizes = [], []
        for image in images:
            rgb = to_rgb_tensor(image)
            sizes.append(rgb.shape[-2:])
            tensors.append(self.preprocess(rgb))
        # A single image needs no padding mask, which lets attention skip masking altogether.
        batch, mask = (tensors[0][None], None) if len(tensors) == 1 else pad_images(tensors)
        batch = prepare_images(batch, self.precision)
        with autocast(self.device, self.precision):
            outputs = self.model(batch, mask)
        return self.postprocess(outputs, sizes, threshold)

    def postprocess(self, outputs: dict, sizes: Sequence[tuple[int, int]], threshold: float) -> list[Detections]:
        """Model outputs -> detections at or above ``threshold`` in pixels of images of ``sizes``
        (h, w), clipped, best first, without unnamed class slots."""
        target_sizes = torch.tensor([list(s) for s in sizes], device=self.device)
        detections = []
        for det, (h, w) in zip(postprocess(outputs, target_sizes, classifier=self.model.config.classifier), sizes):
            keep = (det["scores"] >= threshold) & self._reportable[det["labels"]]
            order = det["scores"][keep].argsort(descending=True)
            boxes = det["boxes"][keep][order]
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            labels = det["labels"][keep][order].cpu().numpy()
            detections.append(
                Detections(
                    boxes=boxes.float().cpu().numpy(),
                    scores=det["scores"][keep][order].float().cpu().numpy(),
                    labels=labels.astype(np.int64),
                    label_names=[self.labels[i] for i in labels],
                )
            )
        return detections


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
