"""Files the engine reads and writes: model files, training checkpoints and starting weights.

Every file is written atomically (temporary name in the same folder, fsync, rename), so an
interrupted save or a full disk leaves the previous file intact. Everything we write loads
with ``torch.load(path, weights_only=True)``: tensors, numbers, strings, lists and dicts only.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import torch
from torch import nn

from .config import ModelConfig
from .files import DISK_FULL_ERRNOS, dump_json, write_atomic

logger = logging.getLogger(__name__)

MODEL_FORMAT = "cvat-detr/model"
CHECKPOINT_FORMAT = "cvat-detr/checkpoint"
FORMAT_VERSION = 1
#: Parameters that depend on the number of classes and are re-initialised when fine-tuning:
#: DETR's class head, and the fast architecture's per-layer class heads and dense class convolutions.
CLASS_HEAD_PATTERN = re.compile(r"^(class_embed(\.\d+)?|dense_head\.class_pred\.\d+)\.(weight|bias)$")
MB = 1024 * 1024


class CheckpointError(ValueError):
    """A model, checkpoint or weights file is missing, damaged or does not fit the model."""


class DiskFullError(CheckpointError):
    """No space was left to write ``path``; ``needed_mb`` is how much to free for it to fit."""

    def __init__(self, path: Path, free_mb: int, needed_mb: int):
        super().__init__(f"{path}: no space left on its disk to write it ({free_mb} MB free); free at least "
                         f"{needed_mb} MB, then try again; the previous version is kept")
        self.path, self.free_mb, self.needed_mb = path, free_mb, needed_mb


def atomic_write(path: str | Path, write: Callable[[Any], None], *, binary: bool = True) -> None:
    """Write through ``write(file)`` to a temporary file, then rename over ``path``; a failure raises
    :class:`DiskFullError` when the disk is full, else :class:`CheckpointError`."""
    path = Path(path)
    write_atomic(path, write, binary=binary, on_failure=lambda error, written: _write_error(error, path, written))


def _write_error(error: BaseException, path: Path, written: int) -> CheckpointError | None:
    """A failed write as the engine reports it; None for errors that are not about the file (a bug, Ctrl-C)."""
    full = _disk_full(error, path, written)
    if full is not None:
        return full
    if isinstance(error, OSError):
        return CheckpointError(
            f"{path}: could not be written ({error.strerror or error}); the previous version is kept. "
            "Free disk space or choose another output folder"
        )
    return None


def _disk_full(error: BaseException, path: Path, written: int) -> DiskFullError | None:
    """The error as a :class:`DiskFullError` when the disk is what failed, else None. A full disk raises
    OSError, or a RuntimeError from torch's zip writer (``[enforce fail at inline_container.cc:...] .
    unexpected pos``), which names no cause: then the free space tells."""
    free = shutil.disk_usage(path.parent).free
    if isinstance(error, OSError):
        if error.errno not in DISK_FULL_ERRNOS:
            return None
    elif not (isinstance(error, RuntimeError) and free < MB):
        return None
    # The file needs room for at least what was written before the failure, or its last version's size.
    size = max(written, path.stat().st_size if path.exists() else 0)
    return DiskFullError(path, free // MB, math.ceil(size / MB) + 1)


def atomic_save(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_json(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda f: dump_json(obj, f), binary=False)


def safe_load(path: str | Path, what: str = "file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    try:
        # argparse.Namespace is allowed because official DETR checkpoints store their
        # training arguments as one; nothing else beyond plain data is unpickled.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged or foreign files
        raise CheckpointError(
            f"{path}: cannot load the {what} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "the file is damaged or not a PyTorch checkpoint"
        ) from e


# --- model files ---------------------------------------------------------------------------


def save_model_file(
    path: str | Path,
    model: nn.Module,
    *,
    labels: list[str],
    threshold: float,
    metrics: dict,
    image_size: int,
    max_size: int,
    state_dict: dict | None = None,
) -> None:
    config: ModelConfig = model.config  # type: ignore[assignment]
    if len(labels) != config.num_classes:
        raise ValueError(f"The parameter 'labels' expected {config.num_classes} names but got {len(labels)} instead.")
    atomic_save(
        {
            "format": MODEL_FORMAT,
            "version": FORMAT_VERSION,
            "model_config": config.to_dict(),
            "labels": list(labels),
            "threshold": float(threshold),
            "metrics": _plain(metrics),
            "image_size": int(image_size),
            "max_size": int(max_size),
            "state_dict": {k: v.detach().cpu() for k, v in (state_dict or model.state_dict()).items()},
        },
        path,
    )


def load_model_file(path: str | Path) -> dict:
    """Load and validate a ``model.pt``; raises CheckpointError with the fix when it is not one."""
    data = safe_load(path, "model file")
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        hint = (
            " It looks like a training checkpoint: use the model.pt next to it."
            if isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT
            else " For an official DETR checkpoint, pass it as --pretrained when training."
        )
        raise CheckpointError(f"{path}: not a cvat-detr model file.{hint}")
    if data.get("version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: model file version {data['version']} is newer than this cvat-detr "
            f"understands ({FORMAT_VERSION}); upgrade cvat-detr"
        )
    missing = [k for k in ("model_config", "labels", "threshold", "state_dict") if k not in data]
    if missing:
        raise CheckpointError(f"{path}: model file lacks {', '.join(missing)}; it is damaged, train or export it again")
    return data


def _plain(value: Any) -> Any:
    """Metrics as plain Python values (no numpy scalars), so the file stays weights_only-loadable."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


# --- starting weights ----------------------------------------------------------------------


@dataclass
class LoadReport:
    loaded: list[str]
    skipped: list[str]  # in the file but not used (shape differs or unknown)
    missing: list[str]  # in the model but not in the file (left at their initial values)

    def describe(self) -> str:
        text = f"loaded {len(self.loaded)} tensors"
        if self.skipped:
            text += f"; skipped {len(self.skipped)} ({_some(self.skipped)})"
        if self.missing:
            text += f"; initialised {len(self.missing)} ({_some(self.missing)})"
        return text


def _some(names: list[str], shown: int = 6) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def fetch_weights(source: str, cache_dir: str | Path | None = None) -> Path:
    """A local path as is, or an http(s) URL downloaded once into ``cache_dir`` (torch hub's by default)."""
    if urlparse(source).scheme in ("http", "https"):
        cache = Path(cache_dir or Path(torch.hub.get_dir()) / "checkpoints")
        target = cache / Path(urlparse(source).path).name
        if not target.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            logger.info("Downloading %s", source)
            try:
                torch.hub.download_url_to_file(source, str(target), progress=True)
            except Exception as e:
                raise CheckpointError(
                    f"{source}: download failed ({e}); download it by hand and pass the local path"
                ) from e
        return target
    path = Path(source).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    return path


def load_detr_weights(model: nn.Module, source: str) -> LoadReport:
    """Load an official DETR checkpoint (or one of our model files) for fine-tuning.

    Tensors whose shape differs only in the class head are re-initialised for the new classes;
    any other mismatch means a different architecture and is an error naming the flag to change.
    """
    path = fetch_weights(source)
    data = safe_load(path, "DETR checkpoint")
    if isinstance(data, dict) and data.get("format") == MODEL_FORMAT:
        state = data["state_dict"]
    elif isinstance(data, dict) and isinstance(data.get("model"), dict):
        state = data["model"]
    elif isinstance(data, dict) and all(isinstance(v, torch.Tensor) for v in data.values()):
        state = data
    else:
        raise CheckpointError(f"{path}: no model weights inside (expected a DETR checkpoint with a 'model' entry)")
    if any(k.startswith("detr.") for k in state):  # panoptic checkpoints wrap the detector
        state = {k.removeprefix("detr."): v for k, v in state.items() if k.startswith("detr.")}
    file_config = data.get("model_config") if isinstance(data, dict) and data.get("format") == MODEL_FORMAT else None
    own = getattr(model, "config", None)
    if file_config is not None and own is not None:
        architecture = file_config.get("architecture", "detr")
        if architecture != own.architecture:
            raise CheckpointError(
                f"{path}: holds a model of architecture {architecture!r}, but the model to train is "
                f"{own.architecture!r}; start from it with the same architecture (its model preset)"
            )
    report = _load_matching(model, state, path, allowed_mismatch=CLASS_HEAD_PATTERN)
    absent = [k for k in report.missing if not CLASS_HEAD_PATTERN.match(k)]
    if absent:
        raise CheckpointError(
            f"{path}: checkpoint is for a different architecture: {len(absent)} tensor(s) of the "
            f"model are not in it, e.g. {absent[0]}; build the model with the checkpoint's settings"
        )
    return report


def load_backbone_weights(model: nn.Module, source: str) -> LoadReport:
    """Load torchvision ImageNet weights (e.g. ``resnet50-0676ba61.pth``) into the backbone."""
    path = fetch_weights(source)
    data = safe_load(path, "ImageNet weights file")
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: not a torchvision state dict (a dict of tensors such as 'conv1.weight')")
    fast = getattr(model, "config", None) is not None and model.config.architecture == "fast"
    prefix = "backbone.body." if fast else "backbone.0.body."
    own = model.state_dict()
    state = {f"{prefix}{k}": v for k, v in data.items() if not k.startswith("fc.") and f"{prefix}{k}" in own}
    if not state:
        raise CheckpointError(
            f"{path}: none of its tensors belong to the model's backbone ({model.config.backbone}); "
            "pass the torchvision ImageNet weights of that network"
        )
    report = _load_matching(model, state, path, allowed_mismatch=None)
    backbone_missing = [
        k for k in report.missing if k.startswith("backbone.") and not k.endswith("num_batches_tracked")
    ]
    if backbone_missing:
        raise CheckpointError(
            f"{path}: {len(backbone_missing)} backbone tensors are missing "
            f"(e.g. {backbone_missing[0]}); pass the ImageNet weights of the model's backbone, {model.config.backbone}"
        )
    return report


def _load_matching(model: nn.Module, state: dict, path: Path, *, allowed_mismatch: re.Pattern | None) -> LoadReport:
    """Load the tensors that fit; a tensor of another shape (unless its name matches
    ``allowed_mismatch``) or a tensor the model does not have means another architecture, which is an error."""
    own = model.state_dict()
    usable, skipped, wrong = {}, [], []
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key not in own:
            wrong.append(key)
        elif own[key].shape != value.shape:
            (skipped if allowed_mismatch is not None and allowed_mismatch.match(key) else wrong).append(key)
        else:
            usable[key] = value
    if wrong:
        k = wrong[0]
        found = (
            f"{tuple(state[k].shape)} in the file but {tuple(own[k].shape)} in the model"
            if k in own
            else "in the file but not in the model"
        )
        config = getattr(model, "config", None)
        settings = (
            f" (model: backbone={config.backbone}, hidden_dim={config.hidden_dim}, "
            f"enc_layers={config.enc_layers}, dec_layers={config.dec_layers}, num_queries={config.num_queries})"
            if config is not None
            else ""
        )
        raise CheckpointError(
            f"{path}: checkpoint is for a different architecture: {len(wrong)} tensor(s) do not fit, e.g. {k} is "
            f"{found}{settings}; build the model with the checkpoint's settings (--backbone, --num-queries, ...)"
        )
    model.load_state_dict(usable, strict=False)
    missing = [k for k in own if k not in usable and not k.endswith("num_batches_tracked")]
    return LoadReport(loaded=sorted(usable), skipped=sorted(skipped), missing=missing)


def model_config_of(source: str) -> ModelConfig | None:
    """The architecture stored in one of our model files (to fine-tune it as it is), or None for
    an official DETR checkpoint (the DETR-R50 layout)."""
    data = safe_load(fetch_weights(source), "DETR checkpoint")
    if isinstance(data, dict) and data.get("format") == MODEL_FORMAT and isinstance(data.get("model_config"), dict):
        return ModelConfig.from_dict(data["model_config"])
    return None
