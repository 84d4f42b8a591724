"""The shared volume (``DETR_HOME``) as the trainer sees it: its layout and safe paths into it.

```
datasets/<dataset-id>/   training sets built CVAT-side (images/, annotations/, labels.json)
runs/<job-id>/           job.json, checkpoint.pt, metrics.jsonl, ... of one training job
models/<model-id>/       model.pt + model.json of each successful job
```
Every name that comes from a request goes through :meth:`DetrHome.resolve`, so no
request can reach a file outside its folder. Files are written atomically with
``cvat_plugin.home.layout`` (the same layout CVAT-side code writes).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from cvat_plugin.responses import RequestError
from detr.checkpoint import DISK_FULL_ERRNOS

#: One path component of an id: letters, digits, '.', '_' and '-', not starting with a dot.
_COMPONENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")


class DetrHome:
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).resolve()
        self.datasets = self.root / "datasets"
        self.runs = self.root / "runs"
        self.models = self.root / "models"

    def create(self) -> None:
        for folder in (self.datasets, self.runs, self.models):
            folder.mkdir(parents=True, exist_ok=True)

    def disk_full(self, needed_mb: int, *, writing: str, then: str) -> str:
        """What to say when the volume is full: where, how much is free, how much to free and what next."""
        free_mb = shutil.disk_usage(self.root).free // (1024 * 1024)
        return (f"no space left on the shared volume (DETR_HOME {self.root}, {free_mb} MB free) to write {writing}: "
                f"free at least {needed_mb} MB (delete old runs under DETR_HOME/runs, old datasets or unused "
                f"models), then {then}")

    def write_error(self, error: OSError, *, writing: str) -> RequestError:
        """A failed write on the volume as the job API's answer: 507 when it is full, else 503."""
        if error.errno in DISK_FULL_ERRNOS:
            return RequestError(self.disk_full(1, writing=writing, then="try again"), status=507)
        return RequestError(f"cannot write {writing} on the shared volume DETR_HOME {self.root} "
                            f"({error.strerror or error}); check the volume's mount and permissions, then try "
                            "again", status=503)

    def resolve(self, folder: Path, identifier: Any, *, what: str, nested: bool = False) -> Path:
        """``folder / identifier`` after checking that the id cannot leave ``folder``.

        ``nested`` allows '/'-separated sub-folders (dataset ids such as ``task-7/2024-05-01``).
        Raises :class:`RequestError` naming ``what`` when the id is malformed.
        """
        if not isinstance(identifier, str) or not identifier:
            raise RequestError(f"{what} must be a non-empty string, got {identifier!r}")
        parts = identifier.split("/") if nested else [identifier]
        if not all(_COMPONENT.match(part) for part in parts):
            rule = "'/'-separated names" if nested else "a name"
            raise RequestError(
                f"{what} {identifier!r} is not valid: use {rule} of letters, digits, '.', '_' and '-' "
                "(no leading dot, no '..')"
            )
        path = folder.joinpath(*parts)
        # Symlinks inside the volume must not lead out of it either.
        if not path.resolve().is_relative_to(folder.resolve()):
            raise RequestError(f"{what} {identifier!r} points outside {folder.name}/ of DETR_HOME")
        return path
