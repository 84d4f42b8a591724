"""DETR (DEtection TRansformer) in PyTorch + torchvision: model, training engine, evaluation and
inference, compatible with the official checkpoints."""

from .checkpoint import CheckpointError, load_model_file
from .config import ConfigError, ModelConfig, TrainConfig
from .data import DatasetError
from .fast_detr import FastDETR
from .inference import Detections, Detector
from .model import DETR, build_model
from .train import FitResult, TrainEvent, TrainingError, fit

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
