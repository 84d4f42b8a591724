"""The shared volume (``DETR_HOME``): its folders, safe paths into them, new ids, and how files are written there.

Layout (``shared/ARCHITECTURE.md``, "Storage")::

    datasets/<dataset-id>/   a training set: images/, annotations/{train,val}.json, labels.json, manifest.json
    runs/<run-id>/           one training run: config.json, checkpoint.pt, metrics.jsonl, report/ (and job.json
                             for the trainer's jobs)
    models/<model-id>/       model.pt + model.json (the card, ``cvat_plugin.home.models``) + report/

``DETR_HOME`` defaults to the per-user data folder (``~/.local/share/cvat-detr`` on Linux). Every id that
comes from a request or a command line goes through :meth:`DetrHome.resolve`, so none reaches a file outside
its folder. Files are written atomically (``detr.files``: temporary name, then rename). No torch here: the
gateway and the CLI use this module too.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import platformdirs

# The one way files are written on the volume, re-exported for the modules of this package.
from detr.files import copy_atomic, write_json_atomic

__all__ = ["DetrHome", "InvalidId", "copy_atomic", "detr_home", "new_id", "source_name", "write_json_atomic"]

APP_NAME = "cvat-detr"

#: One path component of an id: letters, digits, '.', '_' and '-', not starting with a dot.
_COMPONENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")


class InvalidId(ValueError):
    """An id of a dataset, run or model that is malformed or would lead outside its folder."""


def detr_home(env: Mapping[str, str] = os.environ) -> Path:
    """``$DETR_HOME`` if set, else the per-user data folder."""
    return Path(env.get("DETR_HOME") or platformdirs.user_data_dir(APP_NAME)).expanduser()


def new_id(prefix: Optional[str] = None, now: Optional[datetime] = None) -> str:
    """A new id, unique and sorting by creation time among those of its prefix: ``20250131-142501-3f9a1c``
    for a run (a trainer job or a local run), ``task-7-20250131-142501-3f9a1c`` for a training set of task 7."""
    stamp = f"{now or datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    return f"{prefix}-{stamp}" if prefix else stamp


def source_name(task_id: Optional[int], project_id: Optional[int] = None) -> str:
    """``task-7`` or ``project-5``: what a training set and a model line are named after."""
    if task_id is not None:
        return f"task-{task_id}"
    if project_id is not None:
        return f"project-{project_id}"
    raise ValueError("a training source needs a task id or a project id")


class DetrHome:
    """The three folders under one home, and safe paths into them."""

    def __init__(self, root: Union[str, os.PathLike, None] = None) -> None:
        self.root = (Path(root).expanduser() if root is not None else detr_home()).resolve()
        self.datasets = self.root / "datasets"
        self.runs = self.root / "runs"
        self.models = self.root / "models"

    def create(self) -> None:
        for folder in (self.datasets, self.runs, self.models):
            folder.mkdir(parents=True, exist_ok=True)

    def dataset_dir(self, dataset_id: Any) -> Path:
        """``datasets/<dataset_id>``; ids may have '/'-separated parts (``task-7/2024-05-01``)."""
        return self.resolve(self.datasets, dataset_id, what="dataset_id", nested=True)

    def run_dir(self, run_id: Any) -> Path:
        return self.resolve(self.runs, run_id, what="run id")

    def model_dir(self, model_id: Any) -> Path:
        return self.resolve(self.models, model_id, what="model id")

    def resolve(self, folder: Path, identifier: Any, *, what: str, nested: bool = False) -> Path:
        """``folder / identifier`` after checking that the id cannot leave ``folder``.

        ``nested`` allows '/'-separated sub-folders. Raises :class:`InvalidId` naming ``what`` when the id
        is malformed.
        """
        if not isinstance(identifier, str) or not identifier:
            raise InvalidId(f"{what} must be a non-empty string, got {identifier!r}")
        parts = identifier.split("/") if nested else [identifier]
        if not all(_COMPONENT.match(part) for part in parts):
            rule = "'/'-separated names" if nested else "a name"
            raise InvalidId(
                f"{what} {identifier!r} is not valid: use {rule} of letters, digits, '.', '_' and '-' "
                "(no leading dot, no '..')"
            )
        path = folder.joinpath(*parts)
        # Symlinks inside the volume must not lead out of it either.
        if not path.resolve().is_relative_to(folder.resolve()):
            raise InvalidId(f"{what} {identifier!r} points outside {folder.name}/ of DETR_HOME")
        return path

    def disk_full(self, needed_mb: int, *, writing: str, then: str) -> str:
        """What to say when the volume is full: where, how much is free, how much to free and what next."""
        free_mb = shutil.disk_usage(self.root).free // (1024 * 1024)
        return (f"no space left on the shared volume (DETR_HOME {self.root}, {free_mb} MB free) to write {writing}: "
                f"free at least {needed_mb} MB (delete old runs under DETR_HOME/runs, old datasets or unused "
                f"models), then {then}")
