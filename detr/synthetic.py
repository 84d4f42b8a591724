"""Generated shape images in CVAT's "COCO 1.0" export layout, for the quickstart, tests and benchmarks.

Objects are drawn with PIL on plain, gradient or noisy backgrounds; several classes, a
controllable number and size of objects per image, partial overlaps, and varied image sizes.
The annotation is each shape's exact bounding box.
"""

from __future__ import annotations

import io
import json
import random
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "cross", "diamond")
LAYOUTS = ("cvat-zip", "cvat-folder")


def make_shapes_dataset(
    out: str | Path,
    *,
    num_images: int = 60,
    seed: int = 0,
    classes: tuple[str, ...] = ("circle", "square", "triangle"),
    image_size: tuple[int, int] = (160, 320),
    objects: tuple[int, int] = (1, 4),
    object_size: tuple[float, float] = (0.15, 0.45),
    max_overlap: float = 0.3,
    background: str = "mixed",
    layout: str = "cvat-zip",
    subset: str = "default",
) -> Path:
    """Write ``num_images`` images and ``annotations/instances_<subset>.json``; returns ``out``.

    ``image_size`` bounds each side in pixels, ``objects`` the count per image and
    ``object_size`` each object's side as a fraction of the shorter image side.
    ``max_overlap`` caps the IoU between any two objects (partial occlusion).
    """
    unknown = [c for c in classes if c not in SHAPES]
    if unknown:
        raise ValueError(f"unknown shape(s) {unknown}; choose from {', '.join(SHAPES)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    out = Path(out)
    files: dict[str, bytes] = {}
    images, annotations = [], []
    for index in range(num_images):
        width, height = rng.randint(*image_size), rng.randint(*image_size)
        img = _background(width, height, background, rng, np_rng)
        draw = ImageDraw.Draw(img)
        placed: list[list[float]] = []
        for _ in range(rng.randint(*objects)):
            box = _place(width, height, object_size, placed, max_overlap, rng)
            if box is None:
                continue
            cls = rng.randrange(len(classes))
            _draw_shape(draw, classes[cls], box, _contrasting_color(img, box, rng))
            placed.append(box)
            x0, y0, x1, y1 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": cls + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                    "segmentation": [],
                    "attributes": {"occluded": False},
                }
            )
        name = f"frame_{index:06d}.jpg"
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=92)
        files[f"images/{subset}/{name}"] = buf.getvalue()
        images.append({"id": index + 1, "file_name": name, "width": width, "height": height})
    doc = {
        "licenses": [{"name": "", "id": 0, "url": ""}],
        "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "", "year": ""},
        "categories": [{"id": i + 1, "name": c, "supercategory": ""} for i, c in enumerate(classes)],
        "images": images,
        "annotations": annotations,
    }
    files[f"annotations/instances_{subset}.json"] = json.dumps(doc).encode()
    _write(out, files, layout)
    return out


def _write(out: Path, files: dict[str, bytes], layout: str) -> None:
    if layout == "cvat-zip":
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, data in files.items():
                zf.writestr(name, data)
        return
    for name, data in files.items():
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _background(width: int, height: int, kind: str, rng: random.Random, np_rng: np.random.Generator) -> Image.Image:
    if kind == "mixed":
        kind = rng.choice(("plain", "gradient", "noise"))
    base = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
    if kind == "plain":
        arr = np.broadcast_to(base, (height, width, 3))
    elif kind == "gradient":
        other = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
        t = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
        arr = np.broadcast_to(base * (1 - t) + other * t, (height, width, 3))
    elif kind == "noise":
        arr = base + np_rng.normal(0, 30, size=(height, width, 3))
    else:
        raise ValueError(f"unknown background {kind!r}; use plain, gradient, noise or mixed")
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _place(
    width: int,
    height: int,
    size: tuple[float, float],
    placed: list[list[float]],
    max_overlap: float,
    rng: random.Random,
) -> list[float] | None:
    short = min(width, height)
    for _ in range(20):
        side = max(6, int(short * rng.uniform(*size)))
        w = min(width - 1, int(side * rng.uniform(0.8, 1.25)))
        h = min(height - 1, side)
        x0, y0 = rng.randint(0, width - w - 1), rng.randint(0, height - h - 1)
        box = [float(x0), float(y0), float(x0 + w), float(y0 + h)]
        if all(_iou(box, other) <= max_overlap for other in placed):
            return box
    return None


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _contrasting_color(img: Image.Image, box: list[float], rng: random.Random) -> tuple[int, int, int]:
    crop = np.asarray(img.crop(tuple(int(v) for v in box)), dtype=np.float32)
    mean = crop.reshape(-1, 3).mean(0) if crop.size else np.zeros(3)
    for _ in range(50):
        color = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
        if np.abs(color - mean).sum() > 200:
            break
    return tuple(int(c) for c in color)  # type: ignore[return-value]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: list[float], color: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=color)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=color)
    elif shape == "cross":
        tw, th = (x1 - x0) / 3, (y1 - y0) / 3
        draw.rectangle([x0, y0 + th, x1, y1 - th], fill=color)
        draw.rectangle([x0 + tw, y0, x1 - tw, y1], fill=color)
