"""The fake CVAT's dataset export: task state -> Datumaro items -> ``coco_instances`` zip,
converting shapes the way CVAT 2.42 does (``cvat/apps/dataset_manager/bindings.py``):
rectangles keep their unrotated box and carry ``rotation``/``occluded`` attributes,
ellipses and CVAT masks become full-frame masks, points/polylines/tags are passed to
Datumaro (whose COCO instances writer leaves them out), skeletons and cuboids are not
converted. Images go under ``images/<subset>/``, a task without subset uses ``default``.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

if TYPE_CHECKING:
    from tests.fakes.cvat_server import Frame, Shape, Tag, Task


def cvat_rle_decode(points: list[float], frame_height: int, frame_width: int) -> np.ndarray:
    """A CVAT mask shape (``points`` = run lengths over its box, starting with background,
    then ``[left, top, right, bottom]``) -> a full-frame boolean mask."""
    *runs, left, top, right, bottom = (int(v) for v in points)
    width, height = right - left + 1, bottom - top + 1
    flat = np.zeros(width * height, dtype=bool)
    position, value = 0, False
    for run in runs:
        flat[position:position + run] = value
        position += run
        value = not value
    mask = np.zeros((frame_height, frame_width), dtype=bool)
    mask[top:bottom + 1, left:right + 1] = flat.reshape(height, width)
    return mask


def cvat_rle_encode(mask: np.ndarray) -> list[float]:
    """The inverse of ``cvat_rle_decode`` for a mask with at least one pixel set."""
    ys, xs = np.nonzero(mask)
    left, top, right, bottom = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    flat = mask[top:bottom + 1, left:right + 1].reshape(-1)
    runs, value, count = [], False, 0
    for pixel in flat:
        if bool(pixel) != value:
            runs.append(count)
            value, count = not value, 0
        count += 1
    runs.append(count)
    return [float(v) for v in runs + [left, top, right, bottom]]


def _ellipse_mask(points: list[float], rotation: float, height: int, width: int) -> np.ndarray:
    """CVAT ellipse ``points`` = ``[cx, cy, right x, top y]``; rasterised like EllipsesToMasks."""
    cx, cy, rx_edge, ty_edge = points
    rx, ry = abs(rx_edge - cx), abs(cy - ty_edge)
    canvas = PILImage.new("L", (width, height), 0)
    if rotation:
        angle = np.deg2rad(rotation)
        t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        xs = cx + rx * np.cos(t) * np.cos(angle) - ry * np.sin(t) * np.sin(angle)
        ys = cy + rx * np.cos(t) * np.sin(angle) + ry * np.sin(t) * np.cos(angle)
        ImageDraw.Draw(canvas).polygon(list(zip(xs.tolist(), ys.tolist())), fill=1)
    else:
        ImageDraw.Draw(canvas).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=1)
    return np.asarray(canvas, dtype=bool)


def _convert_shape(shape: "Shape", label_index: int, frame: "Frame"):
    from datumaro.components.annotation import Bbox, Mask, Points, Polygon, PolyLine

    attributes = {a["name"]: a["value"] for a in shape.attributes}
    attributes["occluded"] = shape.occluded
    common = dict(label=label_index, attributes=attributes, group=shape.group, z_order=shape.z_order)
    if shape.type == "rectangle":
        x0, y0, x1, y1 = shape.points
        attributes["rotation"] = shape.rotation
        return Bbox(x0, y0, x1 - x0, y1 - y0, **common)
    if shape.type == "polygon":
        return Polygon(list(shape.points), **common)
    if shape.type == "polyline":
        return PolyLine(list(shape.points), **common)
    if shape.type == "points":
        return Points(list(shape.points), **common)
    if shape.type == "ellipse":
        return Mask(image=_ellipse_mask(shape.points, shape.rotation, frame.height, frame.width), **common)
    if shape.type == "mask":
        return Mask(image=cvat_rle_decode(shape.points, frame.height, frame.width), **common)
    return None  # skeletons and cuboids have no 2D COCO instance form


def _items(task: "Task", frames: Iterable[int], save_images: bool):
    from datumaro.components.annotation import Label
    from datumaro.components.dataset_base import DatasetItem
    from datumaro.components.media import Image

    label_index = {label.id: i for i, label in enumerate(task.top_labels())}
    shapes_by_frame: dict[int, list["Shape"]] = {}
    for shape in task.shapes:
        shapes_by_frame.setdefault(shape.frame, []).append(shape)
    tags_by_frame: dict[int, list["Tag"]] = {}
    for tag in task.tags:
        tags_by_frame.setdefault(tag.frame, []).append(tag)

    for number in frames:
        frame = task.frames[number]
        annotations = [
            converted for shape in shapes_by_frame.get(number, [])
            if (converted := _convert_shape(shape, label_index[shape.label_id], frame)) is not None
        ]
        annotations += [Label(label_index[tag.label_id], group=tag.group) for tag in tags_by_frame.get(number, [])]
        stem, ext = os.path.splitext(frame.name)
        if save_images:
            media = Image.from_bytes(data=frame.data, ext=ext, size=(frame.height, frame.width))
        else:
            media = Image.from_file(path=frame.name, size=(frame.height, frame.width))
        yield DatasetItem(id=stem, subset=task.subset or None, media=media,
                          annotations=annotations, attributes={"frame": number})


def export_task_zip(task: "Task", dest: Path, *, save_images: bool, include_deleted: bool) -> Path:
    """Write the task's "COCO 1.0" export zip to ``dest``, as CVAT's ``formats/coco.py`` does."""
    from datumaro.components.annotation import AnnotationType, LabelCategories
    from datumaro.components.dataset import Dataset
    from datumaro.components.media import Image
    from datumaro.util.image import IMAGE_BACKEND, ImageBackend

    # Datumaro sets its image backend at import, in the importing thread's context only;
    # the fake's request threads start with an empty one.
    if IMAGE_BACKEND.get(None) is None:
        IMAGE_BACKEND.set(ImageBackend.cv2)  # what Datumaro picks when OpenCV (its dependency) is present
    frames = [i for i in range(len(task.frames)) if include_deleted or i not in task.deleted_frames]
    categories = LabelCategories(attributes={"occluded"})
    for label in task.top_labels():
        categories.add(label.name)
    dataset = Dataset.from_iterable(
        list(_items(task, frames, save_images)), categories={AnnotationType.label: categories}, media_type=Image
    )
    with tempfile.TemporaryDirectory() as tmp:
        dataset.export(tmp, "coco_instances", save_media=save_images, merge_images=False)
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as archive:
            for root, _dirs, files in os.walk(tmp):
                for name in sorted(files):
                    path = Path(root, name)
                    archive.write(path, path.relative_to(tmp).as_posix())
    return dest
