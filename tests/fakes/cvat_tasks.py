"""Generated task content for the fake CVAT: small images of coloured shapes and the
CVAT shapes that annotate them, in every shape kind the dataset builder must handle."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image, ImageDraw

from tests.fakes.cvat_export import cvat_rle_encode
from tests.fakes.cvat_server import Frame, Shape

if TYPE_CHECKING:
    from tests.fakes.cvat_server import FakeCvat, Task, User

#: One colour per label index; the generated objects of label k are drawn in COLORS[k].
COLORS = [(230, 40, 40), (40, 200, 40), (40, 80, 230), (230, 200, 40), (200, 40, 200), (40, 200, 200)]


def encode_image(image: Image.Image, ext: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG" if ext.lower() == ".png" else "JPEG", quality=95)
    return buffer.getvalue()


def make_frames(
    num_frames: int,
    num_labels: int,
    *,
    seed: int = 0,
    size: tuple[int, int] = (64, 48),
    kinds: Sequence[str] = ("rectangle",),
    negatives_every: int = 0,
    names: Sequence[str] = (),
) -> tuple[list[Frame], list[Shape]]:
    """``num_frames`` frames with one or two filled boxes each (label k drawn in ``COLORS[k]``),
    annotated with shapes cycling through ``kinds`` ("rectangle", "rotated", "polygon", "mask",
    "ellipse"). Every ``negatives_every``-th frame is left empty. Shapes use ``label_id=-(k+1)``,
    which ``FakeCvat.add_task`` resolves to the k-th label."""
    rng = random.Random(seed)
    width, height = size
    frames: list[Frame] = []
    shapes: list[Shape] = []
    kind_cycle = 0
    for index in range(num_frames):
        name = names[index] if index < len(names) else f"frame_{index:04d}.jpg"
        background = tuple(rng.randint(0, 60) for _ in range(3))
        image = Image.new("RGB", size, background)
        draw = ImageDraw.Draw(image)
        empty = negatives_every and index % negatives_every == negatives_every - 1
        for _ in range(0 if empty else rng.randint(1, 2)):
            label = rng.randrange(num_labels)
            w, h = rng.randint(width // 5, width // 2), rng.randint(height // 5, height // 2)
            x0, y0 = rng.randint(0, width - w - 1), rng.randint(0, height - h - 1)
            box = [float(x0), float(y0), float(x0 + w), float(y0 + h)]
            draw.rectangle([x0, y0, x0 + w - 1, y0 + h - 1], fill=COLORS[label % len(COLORS)])
            kind = kinds[kind_cycle % len(kinds)]
            kind_cycle += 1
            shapes.append(_shape(kind, index, -(label + 1), box, width, height))
        ext = "." + name.rsplit(".", 1)[-1]
        frames.append(Frame(name=name, width=width, height=height, data=encode_image(image, ext)))
    return frames, shapes


def _shape(kind: str, frame: int, label_id: int, box: list[float], width: int, height: int) -> Shape:
    x0, y0, x1, y1 = box
    if kind == "rectangle":
        return Shape("rectangle", frame, label_id, box)
    if kind == "rotated":
        return Shape("rectangle", frame, label_id, box, rotation=30.0)
    if kind == "polygon":
        return Shape("polygon", frame, label_id, [x0, y0, x1, y0, x1, y1, x0, y1])
    if kind == "ellipse":
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        return Shape("ellipse", frame, label_id, [cx, cy, x1, y0])
    if kind == "mask":
        mask = np.zeros((height, width), dtype=bool)
        mask[int(y0):int(y1), int(x0):int(x1)] = True
        return Shape("mask", frame, label_id, cvat_rle_encode(mask))
    raise ValueError(f"unknown shape kind {kind!r}")


def add_shapes_task(
    fake: "FakeCvat",
    owner: "User",
    *,
    name: str = "shapes",
    num_frames: int = 12,
    labels: Sequence = ("car", "person", "bike"),
    kinds: Sequence[str] = ("rectangle",),
    seed: int = 0,
    size: tuple[int, int] = (64, 48),
    negatives_every: int = 0,
    **task_options,
) -> "Task":
    """A task of generated frames (see ``make_frames``) with one label per entry of ``labels``, or
    with the labels of ``project=`` when given."""
    project = task_options.get("project")
    if project is not None:
        labels = ()
    frames, shapes = make_frames(num_frames, len(project.labels if project else labels), seed=seed, size=size,
                                 kinds=kinds, negatives_every=negatives_every)
    return fake.add_task(name, owner=owner, labels=list(labels), frames=frames, shapes=shapes, **task_options)


def add_synthetic_task(
    fake: "FakeCvat",
    owner: "User",
    workdir: Path,
    *,
    name: str = "synthetic",
    labels: Sequence = ("circle", "square"),
    num_images: int = 16,
    seed: int = 0,
    image_size: tuple[int, int] = (64, 96),
    **task_options,
) -> "Task":
    """A task whose frames and rectangles come from ``detr.synthetic`` (learnable shapes).

    ``labels`` are label names (each a ``detr.synthetic`` shape) or dicts with ``name``/``id``."""
    from detr.synthetic import make_shapes_dataset

    project = task_options.get("project")
    if project is not None:  # a project's task has the project's labels
        labels = [label.name for label in project.labels]
    specs = [{"name": label} if isinstance(label, str) else dict(label) for label in labels]
    root = make_shapes_dataset(workdir / f"{name}-{seed}", num_images=num_images, seed=seed,
                               classes=tuple(spec["name"] for spec in specs), image_size=image_size,
                               objects=(1, 2), layout="cvat-folder")
    coco = json.loads((root / "annotations" / "instances_default.json").read_text())
    frame_of = {image["id"]: index for index, image in enumerate(coco["images"])}
    frames = [Frame(name=image["file_name"], width=image["width"], height=image["height"],
                    data=(root / "images" / "default" / image["file_name"]).read_bytes()) for image in coco["images"]]
    shapes = [Shape("rectangle", frame_of[ann["image_id"]], -ann["category_id"],
                    [ann["bbox"][0], ann["bbox"][1], ann["bbox"][0] + ann["bbox"][2], ann["bbox"][1] + ann["bbox"][3]])
              for ann in coco["annotations"]]
    return fake.add_task(name, owner=owner, labels=[] if project else specs, frames=frames, shapes=shapes,
                         **task_options)
