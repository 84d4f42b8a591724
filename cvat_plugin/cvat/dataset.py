"""CVAT "COCO 1.0" export zip -> the training set the ``detr`` engine reads, through Datumaro.

Layout written (``shared/ARCHITECTURE.md``, "Training set on disk")::

    <out>/images/<file_name>             the export's images, relative paths only
    <out>/annotations/{train,val}.json   COCO instances, category id = class index + 1
    <out>/labels.json                    [{"id": <CVAT label id>, "name": ...}] in CVAT order
    <out>/manifest.json                  source, counts per label and split, warnings

Every box-like CVAT shape becomes one box: rectangles (rotated ones by the axis-aligned
extent of the rotated rectangle: CVAT's COCO export keeps the unrotated box and puts the
angle in ``attributes.rotation``), polygons, masks and ellipses (exported as masks) by their
extent. Points, polylines, skeletons, cuboids and tags have no box: CVAT's COCO export
leaves them out, so they are counted from the task's annotations when given. Frames in
``deleted_frames`` are dropped even when the export still has them (CVAT issue #8222).

The export is read with Datumaro's streaming importer and boxes are spooled to disk, so
memory does not grow with the number of images.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import stat
import tempfile
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Sequence, Union

from cvat_plugin.cvat.split import split_by_subsets, subset_role
from cvat_plugin.home.layout import write_json_atomic
from cvat_plugin.progress import NullProgressReporter, ProgressReporter

if TYPE_CHECKING:
    from cvat_plugin.cvat.client import CvatClient

logger = logging.getLogger(__name__)

DATASET_FORMAT = "cvat-detr/dataset"
DATASET_FORMAT_VERSION = 1
DEFAULT_VAL_FRACTION = 0.15
#: The validation share's range: at least 1 % held out, and never more validation than training images.
VAL_FRACTION_BOUNDS = (0.01, 0.5)
#: Below these, the manifest warns that the model will be weak.
MIN_BOXES_PER_LABEL = 10
MIN_IMAGES = 50
#: CVAT shape kinds that have no box; counted, never trained on.
UNSUPPORTED_SHAPES = ("points", "polyline", "skeleton", "cuboid")
SPLITS = ("train", "val")


class TrainingSetError(Exception):
    """The export cannot become a training set; the message says why and what to do in CVAT."""


# --- small pure helpers ------------------------------------------------------------------------


def rotated_extent(x: float, y: float, w: float, h: float, degrees: float) -> tuple[float, float, float, float]:
    """Axis-aligned ``[x, y, w, h]`` of the ``w x h`` box at ``(x, y)`` rotated by ``degrees``
    about its centre (the direction does not change the extent)."""
    if not degrees % 180:
        return x, y, w, h
    angle = math.radians(degrees)
    cos, sin = abs(math.cos(angle)), abs(math.sin(angle))
    new_w, new_h = w * cos + h * sin, w * sin + h * cos
    cx, cy = x + w / 2, y + h / 2
    return cx - new_w / 2, cy - new_h / 2, new_w, new_h


def clip_box(box: Sequence[float], width: int, height: int) -> Optional[list[float]]:
    """``[x, y, w, h]`` clipped to the image; None when nothing of positive area is left."""
    x0, y0 = max(0.0, box[0]), max(0.0, box[1])
    x1, y1 = min(float(width), box[0] + box[2]), min(float(height), box[1] + box[3])
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return None
    return [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]


def count_unsupported(annotations: Mapping[str, Any], deleted_frames: Iterable[int] = ()) -> Counter:
    """Shapes without a box in CVAT ``LabeledData`` (tracks count once), outside deleted frames."""
    deleted = set(deleted_frames)
    counts: Counter = Counter()
    for shape in annotations.get("shapes", []):
        if shape.get("type") in UNSUPPORTED_SHAPES and shape.get("frame") not in deleted:
            counts[shape["type"]] += 1
    for track in annotations.get("tracks", []):
        kinds = {shape.get("type") for shape in track.get("shapes", [])} & set(UNSUPPORTED_SHAPES)
        for kind in kinds:
            counts[kind] += 1
    counts["tag"] += sum(1 for tag in annotations.get("tags", []) if tag.get("frame") not in deleted)
    return +counts


def deleted_frame_ids(data_meta: Optional[Mapping[str, Any]]) -> set[str]:
    """Export item ids (frame name without extension, folders kept) of the task's deleted frames."""
    if not data_meta or not data_meta.get("deleted_frames"):
        return set()
    frames = data_meta.get("frames", [])
    start = int(data_meta.get("start_frame") or 0)
    step = 1
    for part in str(data_meta.get("frame_filter") or "").split(","):
        if part.startswith("step="):
            step = int(part[len("step="):])
    ids = set()
    for number in data_meta["deleted_frames"]:
        index = (int(number) - start) // step
        if 0 <= index < len(frames):
            ids.add(os.path.splitext(frames[index]["name"])[0])
    return ids


# --- reading the export --------------------------------------------------------------------------


def _extract(export_zip: Path, dest: Path) -> None:
    """Unpack the zip, refusing absolute paths, ``..`` and links (a zip is untrusted input)."""
    try:
        with zipfile.ZipFile(export_zip) as archive:
            for member in archive.infolist():
                parts = PurePosixPath(member.filename.replace("\\", "/")).parts
                if member.filename.startswith(("/", "\\")) or ".." in parts or ":" in member.filename.split("/")[0]:
                    raise TrainingSetError(f"{export_zip.name}: entry {member.filename!r} points outside the archive; "
                                       f"refusing it. Export the task from CVAT again")
                if stat.S_ISLNK(member.external_attr >> 16):
                    raise TrainingSetError(f"{export_zip.name}: entry {member.filename!r} is a link; refusing it. "
                                       f"Export the task from CVAT again")
                archive.extract(member, dest)
    except zipfile.BadZipFile as e:
        raise TrainingSetError(f"{export_zip} is not a readable zip ({e}); the download may be incomplete: "
                           f"export the task again") from e


def _import(root: Path, export_name: str):
    try:
        from datumaro.components.dataset import StreamDataset
        from datumaro.util.image import IMAGE_BACKEND, ImageBackend
    except ImportError as e:
        raise TrainingSetError("reading CVAT exports needs Datumaro: pip install 'cvat-detr[cvat]'") from e
    # Datumaro sets its image backend at import, in the importing thread's context only;
    # a build in another thread (the gateway's workers) would fail on the first image decode.
    if IMAGE_BACKEND.get(None) is None:
        IMAGE_BACKEND.set(ImageBackend.cv2)  # what Datumaro picks when OpenCV (its dependency) is present

    if not any(path.is_file() for path in root.rglob("*")):
        raise TrainingSetError(f"{export_name} is empty: the task has no frames to export (or all were deleted); "
                           f"add frames to the task in CVAT")
    if not list(root.glob("annotations/instances_*.json")):
        raise TrainingSetError(f"{export_name} has no annotations/instances_<subset>.json: it is not a CVAT "
                           f"'COCO 1.0' export. Export the task with format 'COCO 1.0' and images")
    if not (root / "images").is_dir():
        raise TrainingSetError(f"{export_name} has no images/ folder: the export was made without images; export "
                           f"with images ('Save images' / save_images=true)")
    try:
        return StreamDataset.import_from(str(root), "coco_instances")
    except Exception as e:  # Datumaro raises many types for malformed input
        raise TrainingSetError(f"{export_name}: Datumaro cannot read the COCO annotations ({e}); "
                           f"export the task again with format 'COCO 1.0'") from e


def _item_boxes(item, classes: Sequence[int], width: int, height: int) -> tuple[list, Counter]:
    """One box per COCO annotation of ``item``: ``[class, x, y, w, h]``, and counts by source kind."""
    from datumaro.components.annotation import AnnotationType

    groups: dict[int, list] = defaultdict(list)
    for ann in item.annotations:
        groups[ann.id].append(ann)
    boxes, kinds = [], Counter()
    for anns in groups.values():
        bbox = next((a for a in anns if a.type == AnnotationType.bbox), None)
        if bbox is None or bbox.label is None:
            continue
        types = {a.type for a in anns}
        x, y, w, h = bbox.get_bbox()
        rotation = float(bbox.attributes.get("rotation", 0) or 0)
        if AnnotationType.polygon in types:
            kind = "polygon"
        elif AnnotationType.mask in types:
            kind = "mask"
        elif rotation % 180:
            kind = "rotated_rectangle"
            x, y, w, h = rotated_extent(x, y, w, h, rotation)
        else:
            kind = "rectangle"
        clipped = clip_box([x, y, w, h], width, height)
        if clipped is None:
            kinds["degenerate_box"] += 1
            continue
        kinds[kind] += 1
        boxes.append([classes[bbox.label], *clipped])
    return boxes, kinds


class _CocoWriter:
    """Streams one COCO instances file: images and annotations are spooled to temporary files
    and joined on ``close``, so nothing grows in memory."""

    def __init__(self, path: Path, categories: list[dict]) -> None:
        self.path = path
        self.categories = categories
        self._images = tempfile.TemporaryFile("w+", encoding="utf-8", dir=path.parent)
        self._annotations = tempfile.TemporaryFile("w+", encoding="utf-8", dir=path.parent)
        self.num_images = 0
        self.num_boxes = 0

    @staticmethod
    def _append(spool, entry: dict, first: bool) -> None:
        spool.write(("" if first else ",\n") + json.dumps(entry, ensure_ascii=False))

    def add(self, file_name: str, width: int, height: int, boxes: list[list[float]]) -> None:
        self.num_images += 1
        self._append(self._images, {"id": self.num_images, "file_name": file_name, "width": width,
                                    "height": height}, self.num_images == 1)
        for class_index, x, y, w, h in boxes:
            self.num_boxes += 1
            self._append(self._annotations, {
                "id": self.num_boxes, "image_id": self.num_images, "category_id": class_index + 1,
                "bbox": [x, y, w, h], "area": round(w * h, 2), "iscrowd": 0,
            }, self.num_boxes == 1)

    def close(self) -> None:
        with open(self.path, "w", encoding="utf-8") as out:
            for opening, spool in (('{"images": [\n', self._images), ('],\n"annotations": [\n', self._annotations)):
                out.write(opening)
                spool.seek(0)
                shutil.copyfileobj(spool, out)
                spool.close()
            out.write('],\n"categories": ' + json.dumps(self.categories, ensure_ascii=False) + "}\n")


def _image_size(path: Path, size: Optional[tuple[int, int]]) -> tuple[int, int]:
    """``(width, height)`` from the COCO entry, else from the image header."""
    if size:
        return int(size[1]), int(size[0])
    from PIL import Image

    with Image.open(path) as image:
        return image.size


# --- the builder ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportPart:
    """One task's "COCO 1.0" export (with images) and what CVAT says about that task."""

    export_zip: Path
    data_meta: Optional[Mapping[str, Any]] = None
    """``GET /api/tasks/{id}/data/meta``, for ``deleted_frames``."""
    annotations: Optional[Mapping[str, Any]] = None
    """The task's ``LabeledData``, to count shapes the export leaves out."""
    subset: Optional[str] = None
    """The task's CVAT subset, which places all its images (``cvat_plugin.cvat.split``); None: each image's
    subset in the export decides."""
    folder: str = ""
    """Where its images go under ``images/`` (``task_<id>/`` for a project's tasks, whose names may clash)."""


def build_training_set(
    export_zip: Union[str, os.PathLike],
    out_dir: Union[str, os.PathLike],
    *,
    labels: Optional[Sequence[Mapping[str, Any]]] = None,
    data_meta: Optional[Mapping[str, Any]] = None,
    annotations: Optional[Mapping[str, Any]] = None,
    source: Optional[Mapping[str, Any]] = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    overwrite: bool = False,
    pbar: Optional[ProgressReporter] = None,
) -> dict:
    """Build the training set in ``out_dir`` from a CVAT "COCO 1.0" export (with images).

    ``labels``: the task's labels in CVAT order (``[{"id", "name"}, ...]``, from
    ``CvatClient.get_labels``); without them the export's categories are used.
    ``data_meta`` and ``annotations``: see ``ExportPart``.
    ``source``: recorded in the manifest (``url``, ``task_id``, ``task_name``, ``server_version``,
    ``exported_at``). Returns the manifest. The folder appears whole or not at all.
    """
    part = ExportPart(Path(export_zip), data_meta=data_meta, annotations=annotations)
    return build_from_parts([part], out_dir, labels=labels, source=source, val_fraction=val_fraction, seed=seed,
                            overwrite=overwrite, pbar=pbar)


def build_from_parts(
    parts: Sequence[ExportPart],
    out_dir: Union[str, os.PathLike],
    *,
    labels: Optional[Sequence[Mapping[str, Any]]] = None,
    source: Optional[Mapping[str, Any]] = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    overwrite: bool = False,
    pbar: Optional[ProgressReporter] = None,
) -> dict:
    """One training set from the exports of one task or of a project's tasks, which share ``labels``;
    as ``build_training_set`` otherwise."""
    low, high = VAL_FRACTION_BOUNDS
    if not low <= val_fraction <= high:
        raise TrainingSetError(f"val_fraction={val_fraction!r} is invalid; use a fraction from {low:g} to {high:g} "
                               f"such as {DEFAULT_VAL_FRACTION:g}")
    out_dir = Path(out_dir)
    pbar = pbar or NullProgressReporter()
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise TrainingSetError(f"{out_dir} already exists and is not empty; choose another folder or overwrite it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".building", dir=out_dir.parent))
    try:
        manifest = _build(list(parts), staging, labels=labels, source=dict(source or {}), val_fraction=val_fraction,
                          seed=seed, pbar=pbar)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging / "dataset", out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Training set written to %s: %d train / %d val images", out_dir,
                manifest["images"]["train"], manifest["images"]["val"])
    return manifest


def require_images(task: Mapping[str, Any]) -> None:
    """Refuse a task created without data (``size`` null on CVAT 2.42) before asking for its annotations,
    which CVAT answers with an error page for such a task."""
    if not task.get("size"):
        raise TrainingSetError(f"task {task['id']} ({task.get('name')!r}) has no images: upload images or a video to "
                           f"it in CVAT (on the task's page), then try again")


def export_task(client: "CvatClient", task_id: int, out_dir: Union[str, os.PathLike], *,
                val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = 0, overwrite: bool = False,
                pbar: Optional[ProgressReporter] = None) -> dict:
    """Export task ``task_id`` as ``client``'s user and build its training set in ``out_dir``;
    returns the manifest. The export zip lives in a temporary folder beside ``out_dir``."""
    out_dir = Path(out_dir)
    task = client.get_task(task_id)
    require_images(task)
    labels = client.get_labels(task_id)
    data_meta = client.get_data_meta(task_id)
    annotations = client.get_annotations(task_id)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir.parent) as tmp:
        export_zip = client.export_dataset(task_id, Path(tmp) / f"task_{task_id}_coco.zip", pbar=pbar)
        source = {"url": client.url, "task_id": task_id, "task_name": task.get("name"),
                  "server_version": str(client.server_version),
                  "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        return build_training_set(export_zip, out_dir, labels=labels, data_meta=data_meta, annotations=annotations,
                                  source=source, val_fraction=val_fraction, seed=seed, overwrite=overwrite,
                                  pbar=pbar)


def _build(parts: list[ExportPart], staging: Path, *, labels, source: dict, val_fraction: float, seed: int,
           pbar: ProgressReporter) -> dict:
    out = staging / "dataset"
    (out / "images").mkdir(parents=True)
    (out / "annotations").mkdir()
    # Pass 1: boxes of every kept image to a spool file; only label sets stay in memory.
    spool_path = staging / "items.jsonl"
    records: list[tuple[Optional[str], frozenset]] = []
    kinds: Counter = Counter()
    dropped_deleted = 0
    with open(spool_path, "w", encoding="utf-8") as spool, pbar.task(None, desc="Reading export", unit="img"):
        for index, part in enumerate(parts):
            labels, dropped = _read_part(part, staging / f"export-{index}", labels, spool, records, kinds, pbar)
            dropped_deleted += dropped

    task = f"task {source['task_id']}" if source.get("task_id") is not None else (
        f"project {source['project_id']}" if source.get("project_id") is not None else parts[0].export_zip.name)
    if not records:
        raise TrainingSetError(f"{task} has no images to train on ({dropped_deleted} deleted frames dropped); "
                           f"add frames to the task in CVAT")
    if not any(label_set for _, label_set in records):
        raise TrainingSetError(f"{task} has no boxes to train on: none of its {len(records)} images has a rectangle, "
                           f"polygon, mask or ellipse; draw boxes (or polygons) around the objects in CVAT")

    roles = [subset_role(subset) for subset, _ in records]
    try:
        is_val, method = split_by_subsets(roles, [label_set for _, label_set in records], val_fraction, seed)
    except ValueError as e:
        raise TrainingSetError(f"{task}: {e}") from e
    split: dict[str, Any] = {"method": method}
    for name, role in (("train_subsets", "train"), ("val_subsets", "val"), ("held_out_subsets", "test")):
        named = sorted({subset for (subset, _), r in zip(records, roles) if r == role})
        if named:
            split[name] = named
    if method != "subsets":
        split.update(val_fraction=val_fraction, seed=seed)
    held_out = is_val.count(None)
    if held_out:
        split["held_out"] = held_out
    del records

    # Pass 2: move the images and write both COCO files.
    categories_json = [{"id": i + 1, "name": label["name"]} for i, label in enumerate(labels)]
    writers = {s: _CocoWriter(out / "annotations" / f"{s}.json", categories_json) for s in SPLITS}
    per_label = {s: Counter() for s in SPLITS}
    images_per_label: Counter = Counter()
    negatives = 0
    with open(spool_path, encoding="utf-8") as spool, pbar.task(len(is_val), desc="Writing training set",
                                                                unit="img"):
        for val, line in zip(is_val, spool):
            pbar.advance(1)
            if val is None:
                continue
            file_name, image_path, width, height, boxes = json.loads(line)
            target = out / "images" / file_name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(image_path, target)
            name = "val" if val else "train"
            writers[name].add(file_name, width, height, boxes)
            per_label[name].update(box[0] for box in boxes)
            images_per_label.update({box[0] for box in boxes})
            negatives += not boxes
    for writer in writers.values():
        writer.close()

    skipped = Counter({"degenerate_box": kinds.pop("degenerate_box", 0)})
    for part in parts:
        if part.annotations is not None:
            skipped.update(count_unsupported(part.annotations, _deleted_numbers(part.data_meta)))
    skipped = +skipped
    label_stats = [
        {"id": label["id"], "name": label["name"], "images": images_per_label[i],
         "boxes": {s: per_label[s][i] for s in SPLITS}}
        for i, label in enumerate(labels)
    ]
    counts = {s: writers[s].num_images for s in SPLITS}
    by_subsets = method == "subsets"
    warnings = training_warnings(
        [(stats["name"], sum(stats["boxes"].values()), stats["boxes"]["val"] if by_subsets else None)
         for stats in label_stats],
        images=counts["train"] + counts["val"], skipped=skipped)
    for warning in warnings:
        logger.warning("%s", warning)

    manifest = {
        "format": DATASET_FORMAT,
        "version": DATASET_FORMAT_VERSION,
        "source": {"url": source.get("url"), "task_id": source.get("task_id"), "task_name": source.get("task_name"),
                   "server_version": source.get("server_version"), "export_format": "COCO 1.0",
                   "export_file": parts[0].export_zip.name if len(parts) == 1 else None},
        "exported_at": source.get("exported_at"),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "split": split,
        "images": {**counts, "negative": negatives, "deleted_dropped": dropped_deleted},
        "boxes": {s: writers[s].num_boxes for s in SPLITS},
        "labels": label_stats,
        "converted": dict(sorted(kinds.items())),
        "skipped": dict(sorted(skipped.items())),
        "skipped_counted": all(part.annotations is not None for part in parts),
        "warnings": warnings,
    }
    if source.get("project_id") is not None:
        manifest["source"].update(project_id=source["project_id"], project_name=source.get("project_name"),
                                  tasks=source.get("tasks", []))
    write_json_atomic(out / "labels.json", labels)
    write_json_atomic(out / "manifest.json", manifest)
    return manifest


def _read_part(part: ExportPart, export_root: Path, labels: Optional[Sequence[Mapping[str, Any]]], spool,
               records: list, kinds: Counter, pbar: ProgressReporter) -> tuple[list[dict], int]:
    """Spool the boxes of one export's kept images (``[file_name, image path, width, height, boxes]`` per
    line) and append ``(subset, label set)`` to ``records``; returns the labels (the export's categories
    when none were given) and the number of deleted frames."""
    from datumaro.components.annotation import AnnotationType

    _extract(part.export_zip, export_root)
    dataset = _import(export_root, part.export_zip.name)
    images_root = (export_root / "images").resolve()
    categories = [c.name for c in dataset.categories()[AnnotationType.label].items]
    if labels is None:
        labels = [{"id": i + 1, "name": name} for i, name in enumerate(categories)]
    labels = [{"id": label["id"], "name": label["name"]} for label in labels]
    class_of_name = {label["name"]: i for i, label in enumerate(labels)}
    unknown = [name for name in categories if name not in class_of_name]
    if unknown:
        raise TrainingSetError(f"{part.export_zip.name}: label(s) {', '.join(map(repr, unknown))} of the export are "
                           f"not labels of the task ({', '.join(class_of_name)}); the labels changed during the "
                           f"export: export again")
    classes = [class_of_name[name] for name in categories]
    deleted = deleted_frame_ids(part.data_meta)
    dropped = 0
    for item in dataset:
        pbar.advance(1)
        if item.id in deleted:
            dropped += 1
            continue
        image_path = Path(item.media.path).resolve()
        if not image_path.is_file():
            raise TrainingSetError(f"{part.export_zip.name}: image of {item.id!r} is missing; the export was made "
                               f"without images: export with images ('Save images' / save_images=true)")
        file_name = part.folder + image_path.relative_to(images_root).as_posix()
        width, height = _image_size(image_path, item.media.size)
        boxes, item_kinds = _item_boxes(item, classes, width, height)
        kinds.update(item_kinds)
        spool.write(json.dumps([file_name, str(image_path), width, height, boxes], ensure_ascii=False) + "\n")
        records.append((part.subset if part.subset is not None else item.subset, frozenset(b[0] for b in boxes)))
    if part.data_meta is not None:  # CVAT from 2.18 leaves deleted frames out of the export: count them from the task
        dropped = len(set(_deleted_numbers(part.data_meta)))
    return labels, dropped


def _deleted_numbers(data_meta: Optional[Mapping[str, Any]]) -> list[int]:
    return [int(n) for n in (data_meta or {}).get("deleted_frames", [])]


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}{'es' if noun.endswith(('x', 's')) else 's'}"


def training_warnings(label_boxes: Sequence[tuple[str, int, Optional[int]]], *, images: int,
                      skipped: Mapping[str, int]) -> list[str]:
    """What will make the model weak, in words: labels with no or few boxes, few images, shapes left out.

    ``label_boxes``: ``(name, boxes, boxes in the validation subset)`` per label, the last None when
    the validation split is not fixed by CVAT subsets. ``images``: images kept (with or without boxes).
    ``skipped``: counts of shapes without a box by kind (``count_unsupported``), plus ``degenerate_box``.
    The gateway shows these before training, the manifest keeps them after."""
    warnings = []
    if label_boxes and not any(total for _, total, _ in label_boxes):  # one line, not one per label
        warnings.append("no label has boxes yet: draw boxes (or polygons, masks) around the objects in CVAT")
        label_boxes = ()
    for name, total, val in label_boxes:
        if total == 0:
            warnings.append(f"label {name!r} has no boxes: the model keeps a class for it but cannot "
                            f"learn it; annotate some, or remove the label from the task")
        elif total < MIN_BOXES_PER_LABEL:
            warnings.append(f"label {name!r} has only {_plural(total, 'box')} "
                            f"(fewer than {MIN_BOXES_PER_LABEL}): the model will rarely find it; annotate more")
        elif val == 0:
            warnings.append(f"label {name!r} has no boxes in the validation subset: its AP cannot be "
                            f"measured; move some of its frames to the validation subset")
    if images < MIN_IMAGES:
        warnings.append(f"only {images} images (fewer than {MIN_IMAGES}): expect a weak model and noisy "
                        f"validation metrics; annotate more frames")
    unsupported = {kind: n for kind, n in skipped.items() if kind != "degenerate_box" and n}
    if unsupported:
        listed = ", ".join(_plural(n, "tag") if kind == "tag" else f"{_plural(n, kind + ' shape')}"
                           for kind, n in sorted(unsupported.items()))
        warnings.append(f"skipped {listed}: DETR learns boxes only (rectangles, polygons, masks, ellipses)")
    if skipped.get("degenerate_box"):
        warnings.append(f"dropped {_plural(skipped['degenerate_box'], 'box')} with no area inside its image; "
                        f"fix them in CVAT")
    return warnings
