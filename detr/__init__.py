"""DETR (DEtection TRansformer) in PyTorch + torchvision: model, training engine, evaluation and
inference, compatible with the official checkpoints.

The public names load on first use (PEP 562), so ``detr.config``, the one option schema, can be
read without importing torch (the gateway and ``cvat-detr status`` never need it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checkpoint import CheckpointError, load_model_file
    from .config import ConfigError, ModelConfig, TrainConfig
    from .data import DatasetError
    from .fast_detr import FastDETR
    from .inference import Detections, Detector
    from .model import DETR, build_model
    from .train import FitResult, TrainEvent, TrainingError, fit

#: Public name -> the module that defines it.
_HOMES = {
    "CheckpointError": "checkpoint", "load_model_file": "checkpoint",
    "ConfigError": "config", "ModelConfig": "config", "TrainConfig": "config",
    "DatasetError": "data",
    "FastDETR": "fast_detr",
    "Detections": "inference", "Detector": "inference",
    "DETR": "model", "build_model": "model",
    "FitResult": "train", "TrainEvent": "train", "TrainingError": "train", "fit": "train",
}

__all__ = [
    "DETR",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "Detections",
    "Detector",
    "FastDETR",
    "FitResult",
    "ModelConfig",
    "TrainConfig",
    "TrainEvent",
    "TrainingError",
    "build_model",
    "fit",
    "load_model_file",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'detr' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
