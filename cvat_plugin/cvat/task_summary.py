"""What a CVAT task (or a project's tasks) holds for training, counted from its annotations without exporting it:
frames, boxes per label, annotated frames, and the warnings the training set would carry.

The counts follow what the export and ``cvat_plugin.cvat.dataset`` will make of the task: every
rectangle, polygon, mask and ellipse is one box; a track gives one box per frame where it is
visible (from each visible keyframe up to the next keyframe, the last one up to the end of the
task); deleted frames count for nothing. The Train DETR dialog shows this before anything runs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

from cvat_plugin.cvat.dataset import count_unsupported, training_warnings

#: CVAT shape types that become one box in the training set.
BOX_SHAPES = ("rectangle", "polygon", "mask", "ellipse")


def _track_frames(track: Mapping[str, Any], end: int) -> Iterable[int]:
    """Frames where a track is visible: each keyframe not ``outside`` holds until the next keyframe."""
    keyframes = sorted(track.get("shapes", []), key=lambda shape: int(shape.get("frame", 0)))
    for index, shape in enumerate(keyframes):
        if shape.get("outside") or shape.get("type") not in BOX_SHAPES:
            continue
        stop = int(keyframes[index + 1]["frame"]) if index + 1 < len(keyframes) else end
        yield from range(int(shape["frame"]), stop)


def _count(task: Mapping[str, Any], annotations: Mapping[str, Any], data_meta: Mapping[str, Any]
           ) -> tuple[Counter, set[int], int, Counter]:
    """Boxes per label id, annotated frames, frames kept and shapes without a box, of one task."""
    size = int(task.get("size") or 0)
    deleted = {int(frame) for frame in data_meta.get("deleted_frames") or []}
    boxes: Counter = Counter()
    annotated: set[int] = set()

    def count(label_id: Any, frame: int) -> None:
        if frame not in deleted and 0 <= frame < size:
            boxes[label_id] += 1
            annotated.add(frame)

    for shape in annotations.get("shapes", []):
        if shape.get("type") in BOX_SHAPES:
            count(shape.get("label_id"), int(shape.get("frame", -1)))
    for track in annotations.get("tracks", []):
        for frame in _track_frames(track, size):
            count(track.get("label_id"), frame)
    frames = size - len({frame for frame in deleted if 0 <= frame < size})
    return boxes, annotated, frames, count_unsupported(annotations, deleted)


def summarize_project(project: Mapping[str, Any], labels: Sequence[Mapping[str, Any]],
                      tasks: Sequence[tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]]]
                      ) -> dict[str, Any]:
    """The summary of a project from ``GET /api/projects/{id}``, its labels (shared by its tasks) and
    ``(task, annotations, data_meta)`` of each task with images, in ``summarize_task``'s shape with
    ``project`` instead of ``task``: ``{"id", "name", "frames", "tasks": [{"id", "name", "subset", "frames"}]}``."""
    boxes: Counter = Counter()
    skipped: Counter = Counter()
    annotated = frames = 0
    rows = []
    for task, labeled_data, data_meta in tasks:
        task_boxes, task_annotated, task_frames, task_skipped = _count(task, labeled_data, data_meta)
        boxes += task_boxes
        skipped += task_skipped
        annotated += len(task_annotated)
        frames += task_frames
        rows.append({"id": task["id"], "name": task.get("name"), "subset": task.get("subset") or "",
                     "frames": task_frames})
    label_rows = [{"id": label["id"], "name": label["name"], "boxes": boxes[label["id"]]} for label in labels]
    warnings = training_warnings([(row["name"], row["boxes"], None) for row in label_rows], images=frames,
                                 skipped=skipped)
    if not rows:
        warnings.insert(0, f"project {project['id']} has no task with images yet: create tasks in it and upload "
                           f"images to them in CVAT")
    return {
        "project": {"id": project["id"], "name": project.get("name") or f"project {project['id']}",
                    "frames": frames, "tasks": rows},
        "labels": label_rows,
        "annotated_frames": annotated,
        "warnings": warnings,
    }


def summarize_task(task: Mapping[str, Any], labels: Sequence[Mapping[str, Any]], annotations: Mapping[str, Any],
                   data_meta: Mapping[str, Any]) -> dict[str, Any]:
    """The summary of a task from ``GET /api/tasks/{id}``, its labels (``CvatClient.get_labels``),
    ``GET /api/tasks/{id}/annotations`` and ``GET /api/tasks/{id}/data/meta``::

        {"task": {"id", "name", "frames"}, "labels": [{"id", "name", "boxes"}], "annotated_frames", "warnings"}

    ``frames`` leaves deleted frames out; ``labels`` are in CVAT order.
    """
    boxes, annotated, frames, skipped = _count(task, annotations, data_meta)
    label_rows = [{"id": label["id"], "name": label["name"], "boxes": boxes[label["id"]]} for label in labels]
    warnings = training_warnings([(row["name"], row["boxes"], None) for row in label_rows], images=frames,
                                 skipped=skipped)
    return {
        "task": {"id": task["id"], "name": task.get("name") or f"task {task['id']}", "frames": frames},
        "labels": label_rows,
        "annotated_frames": len(annotated),
        "warnings": warnings,
    }
