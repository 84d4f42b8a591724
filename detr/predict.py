"""A model file run on files: predictions on image files, or predictions scored on a dataset (evaluation)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader

from .checkpoint import atomic_write_json
from .data import DatasetError, DetectionDataset, ImageRecord, collate, load_detection_data
from .engine import predict
from .evaluate import EvalResult, evaluate_predictions
from .images import ImageError
from .inference import Detections, Detector
from .report import write_report
from .transforms import eval_transforms

PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
)


def evaluate_model_file(
    model: str | Path,
    data: str | Path,
    *,
    split: str = "auto",
    device: str | None = None,
    precision: str = "auto",
    batch_size: int = 4,
    report_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
) -> EvalResult:
    """COCO metrics of a model on a dataset whose label names are a subset of the model's."""
    detector = Detector.from_file(model, device=device, precision=precision)
    with tempfile.TemporaryDirectory(prefix="detr-eval-") as tmp:
        dataset = load_detection_data(data, work_dir=work_dir or tmp, split=False)
        records = {
            "val": dataset.val,
            "train": dataset.train,
            "all": dataset.train + dataset.val,
            "auto": dataset.val or dataset.train,
        }[split]
        if not records:
            raise DatasetError(f"{data}: no images in the {split!r} split; use --split all")
        records = remap_labels(records, dataset.labels, detector.labels, source=str(data))
        loader = DataLoader(
            DetectionDataset(records, eval_transforms(detector.image_size, detector.max_size)),
            batch_size=batch_size,
            collate_fn=collate,
        )
        predictions = predict(detector.model, loader, detector.device, precision=detector.precision)
        result = evaluate_predictions(records, predictions, detector.labels)
        if report_dir is not None:
            write_report(report_dir, result=result, records=records, predictions=predictions)
    return result


def remap_labels(
    records: list[ImageRecord], data_labels: list[str], model_labels: list[str], *, source: str
) -> list[ImageRecord]:
    """Express the dataset's class indices in the model's, matching labels by name."""
    unknown = [name for name in data_labels if name not in model_labels]
    if unknown:
        raise DatasetError(
            f"{source}: label(s) {unknown} are not known to the model (its labels: {model_labels}); "
            "evaluate on data with the model's labels"
        )
    mapping = np.array([model_labels.index(name) for name in data_labels], dtype=np.int64)
    return [
        ImageRecord(r.image_id, r.path, r.file_name, r.width, r.height, r.boxes, mapping[r.labels]) for r in records
    ]


def predict_images(
    model: str | Path,
    files: Sequence[Path],
    out_dir: str | Path,
    *,
    threshold: float | None = None,
    device: str | None = None,
    precision: str = "auto",
    batch_size: int = 4,
) -> dict:
    """Write ``<out>/<image>.jpg`` with boxes drawn, and ``<out>/predictions.json``."""
    detector = Detector.from_file(model, device=device, precision=precision)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries, total, used_names = [], 0, set()
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images = [_open(f) for f in chunk]
        for path, image, dets in zip(chunk, images, detector.predict(images, threshold=threshold)):
            name = _unique(path.stem, used_names) + ".jpg"
            draw_detections(image, dets).save(out / name, quality=92)
            entries.append(
                {
                    "file": str(path),
                    "annotated": name,
                    "width": image.width,
                    "height": image.height,
                    "detections": dets.to_list(),
                }
            )
            total += len(dets)
    used = detector.threshold if threshold is None else threshold
    atomic_write_json(
        {"model": str(model), "labels": detector.labels, "threshold": used, "images": entries}, out / "predictions.json"
    )
    return {"json": out / "predictions.json", "detections": total}


def draw_detections(image: Image.Image, detections: Detections) -> Image.Image:
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    for box, cls, name, score in zip(detections.boxes, detections.labels, detections.label_names, detections.scores):
        color = PALETTE[int(cls) % len(PALETTE)]
        draw.rectangle([float(v) for v in box], outline=color, width=max(1, round(min(canvas.size) / 200)))
        text = f"{name} {score:.2f}"
        x0, y0 = float(box[0]), float(box[1])
        tb = draw.textbbox((x0, y0), text)
        draw.rectangle([tb[0], y0 - (tb[3] - tb[1]) - 2, tb[2] + 2, y0], fill=color)
        draw.text((x0 + 1, y0 - (tb[3] - tb[1]) - 2), text, fill=(255, 255, 255))
    return canvas


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except (OSError, Image.DecompressionBombError) as e:
        raise ImageError(f"{path}: cannot decode the image ({e})") from e


def _unique(stem: str, used: set[str]) -> str:
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}-{n}"
    used.add(name)
    return name
