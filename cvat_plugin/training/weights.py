"""Starting weights of a training (option ``weights``): files baked into the trainer image, or the
newest model of the same task or project.

The trainer never downloads at run time: ``function-gpu.yaml`` fetches the official DETR
checkpoint and torchvision's ImageNet ResNet-50 into ``DETR_WEIGHTS`` (default
``/opt/detr/weights``) when the image is built; ``cvat-detr train --local`` reads the same folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cvat_plugin.home.models import ModelStore
from cvat_plugin.training.options import WEIGHTS
from detr.config import DETR_R50_URL
from detr.recipes import DEFAULT_PRESETS, MODEL_PRESETS

DEFAULT_WEIGHTS_DIR = "/opt/detr/weights"

#: The official DETR-R50 COCO checkpoint, under its published file name.
COCO_FILE = Path(urlsplit(DETR_R50_URL).path).name

#: torchvision's ImageNet weights (IMAGENET1K_V1, the ones DETR was trained from), by file
#: name as published at https://download.pytorch.org/models/.
IMAGENET_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "resnet101": "resnet101-63fe2227.pth",
    "regnet_x_400mf": "regnet_x_400mf-adf1edd5.pth",
    "regnet_x_800mf": "regnet_x_800mf-ad17e45c.pth",
}


class WeightsError(ValueError):
    """The starting weights asked for are not there; the message says what to choose instead."""


class MissingWeightsFile(WeightsError):
    """A baked weights file (``coco``, ``imagenet``) is not in :func:`weights_dir`."""

    def __init__(self, weights: str, path: Path):
        super().__init__(f"weights {weights!r} need {path}, which this trainer does not have; rebuild the trainer "
                         f"image (it downloads the file), put the file there, or choose weights 'scratch'")
        self.weights, self.path = weights, path


@dataclass(frozen=True)
class StartingPoint:
    """Keyword arguments of ``detr.fit`` for a choice of ``weights``."""

    pretrained: str | None = None
    backbone_weights: str | None = None


def weights_dir() -> Path:
    return Path(os.environ.get("DETR_WEIGHTS", DEFAULT_WEIGHTS_DIR))


def starting_point(
    weights: str, backbone: str, *, task_id: int | None, models: ModelStore, project_id: int | None = None
) -> StartingPoint:
    """Resolve ``weights`` to files; raises :class:`WeightsError` when they are not there.
    ``previous`` continues the newest model of the task, or of the project, however it was trained."""
    if weights == "scratch":
        return StartingPoint()
    if weights == "previous":
        if task_id is None and project_id is None:
            raise WeightsError("weights 'previous' needs the job's task_id or project_id; send one or choose "
                               "weights 'coco'")
        previous = models.latest(task_id=task_id, project_id=project_id)
        if previous is None:
            source = f"task {task_id}" if task_id is not None else f"project {project_id}"
            raise WeightsError(
                f"weights 'previous': {source} has no trained model yet; choose weights 'coco' for its first run"
            )
        return StartingPoint(pretrained=str(previous.model_path))
    if weights == "coco":
        return StartingPoint(pretrained=str(_baked(COCO_FILE, weights)))
    return StartingPoint(backbone_weights=str(_baked(IMAGENET_FILES[backbone], weights)))


def available_weights() -> list[str]:
    """The choices of option ``weights`` this trainer can start from, in the order of ``WEIGHTS``:
    ``coco`` and ``imagenet`` (for the ResNet-50 of the preset an ImageNet start picks) when their files
    are baked in; ``scratch``
    always; ``previous`` always (it is checked per task when a job is submitted)."""
    have = {"coco": (weights_dir() / COCO_FILE).is_file(),
            "imagenet": (weights_dir() / IMAGENET_FILES[MODEL_PRESETS[DEFAULT_PRESETS["imagenet"]].backbone]).is_file()}
    return [choice for choice in WEIGHTS if have.get(choice, True)]


def _baked(file_name: str, weights: str) -> Path:
    path = weights_dir() / file_name
    if not path.is_file():
        raise MissingWeightsFile(weights, path)
    return path
