"""Detection data: COCO folders, training sets and CVAT "COCO 1.0" export zips.

Accepted layouts (``load_detection_data``):

- a training set built from a CVAT task: ``annotations/train.json``, ``annotations/val.json``,
  ``labels.json``, ``images/``;
- a COCO folder or a CVAT export (folder or ``.zip``): ``annotations/instances_<subset>.json``
  with images under ``images/``, ``images/<subset>/`` or the folder itself, ``file_name``
  possibly containing sub-folders.

Class indices come from ``labels.json`` when present (matched to COCO categories by name),
else from the categories sorted by id. Crowd and degenerate boxes are dropped, boxes are
clipped to the image, and images without boxes stay as negatives.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors

from .box_ops import xyxy_to_cxcywh
from .images import ImageError, read_image, upright_size

logger = logging.getLogger(__name__)

TRAIN_SUBSETS = ("train", "training")
VAL_SUBSETS = ("val", "validation", "valid")


class DatasetError(ValueError):
    """The dataset cannot be used as given; the message names the file and the fix."""


@dataclass
class ImageRecord:
    image_id: int
    path: Path
    file_name: str
    width: int
    height: int
    boxes: np.ndarray  # float32 [N, 4], absolute xyxy in pixels
    labels: np.ndarray  # int64 [N], class indices


@dataclass
class DetectionData:
    labels: list[str]
    train: list[ImageRecord]
    val: list[ImageRecord]
    source: str
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Images left out because their file is missing or unreadable (names as the annotations give them)."""


def load_detection_data(
    path: str | Path,
    *,
    val_fraction: float = 0.15,
    seed: int = 42,
    work_dir: str | Path | None = None,
    split: bool = True,
) -> DetectionData:
    """Load a dataset in any accepted layout; zips are extracted into ``work_dir``.

    Without a validation subset, ``split`` holds out a seeded ``val_fraction`` of the images;
    with ``split=False`` every image stays in ``train`` (for evaluating on a whole dataset).
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder; pass a COCO folder, a training set or a CVAT export zip")
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise DatasetError(
                f"{path}: not a folder or a zip archive; pass a COCO folder or a CVAT 'COCO 1.0' export zip"
            )
        if work_dir is None:
            raise DatasetError(f"{path}: a zip archive needs a folder to extract into (work_dir)")
        root = extract_zip(path, Path(work_dir) / "extracted")
    else:
        root = path

    warnings: list[str] = []
    train_json, val_json = root / "annotations" / "train.json", root / "annotations" / "val.json"
    labels = _read_labels_json(root / "labels.json")
    if train_json.is_file():
        subsets = {"train": [train_json]}
        if val_json.is_file():
            subsets["val"] = [val_json]
    else:
        subsets = _find_subsets(root)

    documents = {f: _read_json(f) for files in subsets.values() for f in files}
    if labels is None:
        labels = _labels_from_categories(documents)
    train: list[ImageRecord] = []
    val: list[ImageRecord] = []
    skipped: list[str] = []
    listed_in: dict[Path, Path] = {}  # image file -> the annotation file that lists it
    next_id = 1
    for subset_split, files in subsets.items():
        for f in files:
            records = _parse_coco(f, documents[f], root, labels, warnings, skipped, first_id=next_id)
            next_id += len(documents[f].get("images", []))
            counts = Counter(r.path for r in records)
            twice = next((r for r in records if counts[r.path] > 1), None)
            if twice is not None:  # the split could put one copy in train and the other in val: a silent leak
                raise DatasetError(f"{f.name}: image {twice.file_name!r} is listed twice; keep one entry per "
                                   "picture (re-export the task, or remove the duplicate from the annotations)")
            shared = [r for r in records if listed_in.setdefault(r.path, f) != f]
            if shared:  # explicit subsets that share pictures: the caller's choice, said aloud
                warnings.append(f"{len(shared)} image(s) of {f.name} are also in {listed_in[shared[0].path].name} "
                                f"(e.g. {shared[0].file_name!r}): validation on them measures memorisation")
            (val if subset_split == "val" else train).extend(records)

    if not train and not val:
        raise DatasetError(f"{root}: the annotation files list no usable images; export the task with images")
    if not val and split:
        train, val = split_records(train, val_fraction=val_fraction, seed=seed)
    if not train and split:
        raise DatasetError(
            f"{root}: no training images left after the validation split; add images or lower the validation share"
        )
    for w in warnings:
        logger.warning(w)
    return DetectionData(labels=labels, train=train, val=val, source=str(path), warnings=warnings, skipped=skipped)


def extract_zip(archive: Path, dest: Path) -> Path:
    """Extract safely (no absolute paths or '..'); reuses a previous extraction of the same archive."""
    stamp = f"{archive.resolve()}:{archive.stat().st_size}:{archive.stat().st_mtime_ns}"
    marker = dest / ".extracted-from"
    if marker.is_file() and marker.read_text() == stamp:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    root = dest.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                target = (dest / member.filename).resolve()
                if not target.is_relative_to(root):
                    raise DatasetError(
                        f"{archive}: entry {member.filename!r} points outside the archive; refusing to extract"
                    )
            zf.extractall(dest)
    except zipfile.BadZipFile as e:
        raise DatasetError(f"{archive}: the zip archive is damaged ({e}); download or export it again") from e
    marker.write_text(stamp)
    return dest


def split_records(
    records: list[ImageRecord], *, val_fraction: float, seed: int
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Seeded split: at least one validation image, never the same image in both."""
    if not 0 < val_fraction < 1:
        raise DatasetError(f"validation share {val_fraction} must be between 0 and 1")
    if len(records) < 2:
        raise DatasetError(
            f"only {len(records)} image(s): need at least 2 to hold one out for validation; annotate more frames"
        )
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_val = min(len(records) - 1, max(1, round(val_fraction * len(records))))
    val_ids = set(order[:n_val])
    return ([r for i, r in enumerate(records) if i not in val_ids], [r for i, r in enumerate(records) if i in val_ids])


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: cannot read JSON ({e}); export the dataset again") from e


def _read_labels_json(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    data = _read_json(path)
    if isinstance(data, dict):
        data = data.get("labels")
    if not isinstance(data, list) or not data:
        raise DatasetError(f'{path}: expected a non-empty list of labels like [{{"id": 1, "name": "car"}}]')
    names = [d["name"] if isinstance(d, dict) else d for d in data]
    if not all(isinstance(n, str) and n for n in names):
        raise DatasetError(f"{path}: every label needs a non-empty 'name'")
    if len(set(names)) != len(names):
        raise DatasetError(f"{path}: label names must be unique; found duplicates in {names}")
    return names


def _find_subsets(root: Path) -> dict[str, list[Path]]:
    ann_dir = root / "annotations"
    files = sorted(ann_dir.glob("instances_*.json")) if ann_dir.is_dir() else []
    if not files:
        files = sorted(ann_dir.glob("*.json")) if ann_dir.is_dir() else []
    if not files:
        files = sorted(root.glob("*.json"))
        files = [f for f in files if f.name not in ("labels.json", "manifest.json")]
    if not files:
        raise DatasetError(
            f"{root}: no COCO annotation file found (looked for annotations/instances_*.json); "
            "export the CVAT task in the 'COCO 1.0' format"
        )
    subsets: dict[str, list[Path]] = {}
    for f in files:
        subset = f.stem.removeprefix("instances_").lower()
        split = "val" if subset in VAL_SUBSETS else "train"
        subsets.setdefault(split, []).append(f)
    return subsets


def _labels_from_categories(documents: dict[Path, Any]) -> list[str]:
    by_id: dict[int, str] = {}
    for f, doc in documents.items():
        for cat in doc.get("categories", []) if isinstance(doc, dict) else []:
            name = by_id.setdefault(int(cat["id"]), cat["name"])
            if name != cat["name"]:
                raise DatasetError(f"{f}: category id {cat['id']} is {cat['name']!r} here but {name!r} in another file")
    if not by_id:
        raise DatasetError(f"{', '.join(map(str, documents))}: no categories; the export has no labels")
    names = [by_id[i] for i in sorted(by_id)]
    if len(set(names)) != len(names):
        raise DatasetError(f"category names must be unique; found duplicates in {names}")
    return names


def _parse_coco(
    path: Path, doc: Any, root: Path, labels: list[str], warnings: list[str], skipped: list[str], *, first_id: int
) -> list[ImageRecord]:
    """The usable images of one COCO file; ``warnings`` and ``skipped`` (image names) collect what was left out."""
    if not isinstance(doc, dict) or "images" not in doc:
        raise DatasetError(f"{path}: not a COCO instances file (no 'images' list)")
    class_of_name = {name: i for i, name in enumerate(labels)}
    class_of_cat: dict[int, int] = {}
    for cat in doc.get("categories", []):
        if cat["name"] in class_of_name:
            class_of_cat[int(cat["id"])] = class_of_name[cat["name"]]
        else:
            warnings.append(
                f"{path.name}: category {cat['name']!r} (id {cat['id']}) is not in the label list {labels}; "
                "its boxes are skipped (add the label to labels.json to train on it)"
            )
    boxes_of: dict[int, list[tuple[list[float], int]]] = {}
    unknown, dropped = 0, 0
    for ann in doc.get("annotations", []):
        if ann.get("iscrowd", 0):
            continue
        cls = class_of_cat.get(int(ann["category_id"]))
        if cls is None:
            unknown += 1
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        boxes_of.setdefault(int(ann["image_id"]), []).append(([x, y, x + w, y + h], cls))
    if unknown:
        warnings.append(f"{path.name}: {unknown} box(es) have a category id missing from the label list; skipped")

    subset = path.stem.removeprefix("instances_")
    resolver = _ImageResolver(root, subset)
    records = []
    missing: list[str] = []
    for offset, img in enumerate(doc["images"]):
        file_name = str(img["file_name"])
        image_path = resolver.resolve(file_name)
        if image_path is None:
            missing.append(file_name)
            skipped.append(file_name)
            continue
        width, height = int(img.get("width") or 0), int(img.get("height") or 0)
        try:
            actual = upright_size(image_path)  # reads the header only
        except (OSError, Image.DecompressionBombError) as e:
            warnings.append(f"{image_path}: cannot read the image ({e}); skipped (re-export or delete the frame)")
            skipped.append(file_name)
            continue
        if (width, height) != actual:
            if width and height:
                warnings.append(
                    f"{image_path}: size {actual[0]}x{actual[1]} differs from the annotation's "
                    f"{width}x{height}; using the file's"
                )
            width, height = actual
        entries = boxes_of.get(int(img["id"]), [])
        boxes = np.array([b for b, _ in entries], dtype=np.float32).reshape(-1, 4)
        classes = np.array([c for _, c in entries], dtype=np.int64)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        dropped += int((~keep).sum())
        records.append(ImageRecord(first_id + offset, image_path, file_name, width, height, boxes[keep], classes[keep]))
    if missing:
        msg = f"{path.name}: {len(missing)} image file(s) not found (e.g. {missing[0]!r}); skipped"
        if not records:
            raise DatasetError(f"{msg}, and none are left; export the task with images (save_images=true)")
        warnings.append(msg)
    if dropped:
        warnings.append(f"{path.name}: {dropped} box(es) with zero area (or outside the image) dropped")
    return records


class _ImageResolver:
    """Finds ``file_name`` under ``images/<subset>/``, ``images/`` or the root, remembering what worked."""

    def __init__(self, root: Path, subset: str):
        self.candidates = [root / "images" / subset, root / "images", root]
        self.hit = 0

    def resolve(self, file_name: str) -> Path | None:
        relative = Path(file_name)
        if relative.is_absolute() or ".." in relative.parts:
            return None
        order = [self.hit] + [i for i in range(len(self.candidates)) if i != self.hit]
        for i in order:
            p = self.candidates[i] / relative
            if p.is_file():
                self.hit = i
                return p
        return None


class DetectionDataset(Dataset):
    """Images and targets for training and evaluation.

    Items are ``(image, target)``: image float [3, H, W] normalised; target ``boxes`` [N, 4]
    normalised cxcywh of the transformed image, ``labels`` [N], ``image_id``, ``orig_size``
    and ``size`` as (h, w).
    """

    def __init__(self, records: list[ImageRecord], transforms: Callable):
        self.records = records
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        r = self.records[index]
        try:
            image = read_image(r.path)
        except ImageError as e:
            raise DatasetError(f"{e}; re-export the task or delete this frame") from e
        height, width = image.shape[-2:]
        boxes = tv_tensors.BoundingBoxes(torch.from_numpy(r.boxes), format="XYXY", canvas_size=(height, width))
        image, target = self.transforms(tv_tensors.Image(image), {"boxes": boxes, "labels": torch.from_numpy(r.labels)})
        h, w = image.shape[-2:]
        norm = torch.tensor([w, h, w, h], dtype=torch.float32)
        return image.as_subclass(Tensor), {
            "boxes": xyxy_to_cxcywh(target["boxes"].as_subclass(Tensor)) / norm,
            "labels": target["labels"],
            "image_id": r.image_id,
            "orig_size": torch.tensor([r.height, r.width]),
            "size": torch.tensor([h, w]),
        }


def collate(batch: list[tuple[Tensor, dict]]) -> tuple[Tensor, Tensor, list[dict]]:
    """Batch (image, target) pairs: padded images, their padding mask, and the targets."""
    images, mask = pad_images([b[0] for b in batch])
    return images, mask, [b[1] for b in batch]


def pad_images(images: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Zero-pad images bottom/right to the largest size; mask [B, H, W] is True on padding."""
    height = max(i.shape[1] for i in images)
    width = max(i.shape[2] for i in images)
    tensor = images[0].new_zeros(len(images), images[0].shape[0], height, width)
    mask = torch.ones(len(images), height, width, dtype=torch.bool, device=tensor.device)
    for i, img in enumerate(images):
        tensor[i, :, : img.shape[1], : img.shape[2]].copy_(img)
        mask[i, : img.shape[1], : img.shape[2]] = False
    return tensor, mask
