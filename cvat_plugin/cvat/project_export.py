"""A CVAT project -> one training set: every task with images is exported and the exports are joined.

In CVAT a task has exactly one subset and subsets split a project's tasks, so a project is where
Train / Validation subsets can decide the split (``cvat_plugin.cvat.split``). The tasks share the
project's labels and label ids: the label contract is the project's labels. Each task's images go
under ``images/task_<id>/``, since two tasks may hold files of the same name. Tasks are exported
one by one through the task export (as the CLI and gateway do for one task), so deleted frames and
shapes left out of the export are counted per task, as for a single task.
"""

from __future__ import annotations

import logging
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from cvat_plugin.cvat.dataset import DEFAULT_VAL_FRACTION, ExportPart, TrainingSetError, build_from_parts
from cvat_plugin.progress import ProgressReporter

if TYPE_CHECKING:
    from cvat_plugin.cvat.client import CvatClient

logger = logging.getLogger(__name__)


def export_project(client: "CvatClient", project_id: int, out_dir: Union[str, os.PathLike], *,
                   val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = 0, overwrite: bool = False,
                   pbar: Optional[ProgressReporter] = None) -> dict:
    """Export every task of project ``project_id`` that has images, as ``client``'s user, and build one
    training set in ``out_dir``; returns the manifest (``source`` names the project and its tasks)."""
    out_dir = Path(out_dir)
    project = client.get_project(project_id)
    name = project.get("name")
    labels = client.get_project_labels(project_id)
    tasks = client.get_project_tasks(project_id)
    with_data = [task for task in tasks if task.get("size")]
    for task in tasks:
        if not task.get("size"):
            logger.warning("Task %d (%r) of project %d has no images: left out", task["id"], task.get("name"),
                           project_id)
    if not with_data:
        raise TrainingSetError(f"project {project_id} ({name!r}) has no task with images ({len(tasks)} task(s) you "
                           f"can see): create a task in the project and upload images to it in CVAT")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir.parent) as tmp:
        parts = []
        for task in with_data:
            task_id = int(task["id"])
            export_zip = client.export_dataset(task_id, Path(tmp) / f"task_{task_id}_coco.zip", pbar=pbar)
            parts.append(ExportPart(export_zip, data_meta=client.get_data_meta(task_id),
                                    annotations=client.get_annotations(task_id), subset=task.get("subset") or "",
                                    folder=f"task_{task_id}/"))
        source = {"url": client.url, "project_id": project_id, "project_name": name,
                  "tasks": [{"id": task["id"], "name": task.get("name"), "subset": task.get("subset") or ""}
                            for task in with_data],
                  "server_version": str(client.server_version),
                  "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        return build_from_parts(parts, out_dir, labels=labels, source=source, val_fraction=val_fraction, seed=seed,
                                overwrite=overwrite, pbar=pbar)
