"""Where the product keeps datasets, runs and models (``DETR_HOME``), and how it writes there.

Layout (``shared/ARCHITECTURE.md``, "Storage")::

    $DETR_HOME/datasets/<id>/   a training set (see cvat_plugin.cvat.dataset)
    $DETR_HOME/runs/<id>/       one training run (checkpoint.pt, metrics.jsonl, ...)
    $DETR_HOME/models/<id>/     model.pt + model.json (the model card)

``DETR_HOME`` defaults to the per-user data folder (``~/.local/share/cvat-detr`` on Linux).
No torch here: the gateway uses it too.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import platformdirs

APP_NAME = "cvat-detr"


#: Permissions of the files we write: readable by the function containers sharing the volume.
FILE_MODE = 0o644

def detr_home(env: Mapping[str, str] = os.environ) -> Path:
    """``$DETR_HOME`` if set, else the per-user data folder."""
    return Path(env.get("DETR_HOME") or platformdirs.user_data_dir(APP_NAME)).expanduser()


def new_id(task_id: Optional[int] = None, now: Optional[datetime] = None) -> str:
    """A sortable, unique id such as ``task12-20250729-101500-3f2a``."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    prefix = f"task{task_id}-" if task_id is not None else ""
    return f"{prefix}{stamp}-{secrets.token_hex(2)}"


class Storage:
    """The three folders under one home."""

    def __init__(self, home: Union[str, os.PathLike, None] = None) -> None:
        self.home = Path(home) if home is not None else detr_home()

    def dataset_dir(self, dataset_id: str) -> Path:
        return self.home / "datasets" / dataset_id

    def run_dir(self, run_id: str) -> Path:
        return self.home / "runs" / run_id

    def model_dir(self, model_id: str) -> Path:
        return self.home / "models" / model_id


def write_json_atomic(path: Union[str, os.PathLike], data: Any) -> None:
    """Write JSON to a temporary file beside ``path``, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, FILE_MODE)  # mkstemp's 0600 would hide the file from the function containers
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2, ensure_ascii=False)
            out.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def copy_atomic(src: Union[str, os.PathLike], dest: Union[str, os.PathLike]) -> None:
    """Copy ``src`` to a temporary file beside ``dest``, then rename."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, FILE_MODE)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
