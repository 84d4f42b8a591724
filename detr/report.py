"""PNG report of a run: loss and mAP curves, per-class PR curves, confusion matrix, and sample
validation predictions next to the ground truth. Reads ``metrics.jsonl`` like DETR's
``plot_utils`` reads ``log.txt``."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from .data import ImageRecord  # noqa: E402
from .evaluate import EvalResult, Prediction  # noqa: E402
from .images import read_image  # noqa: E402

#: How many validation images the sample sheet shows.
SAMPLE_IMAGES = 8


def write_report(
    report_dir: str | Path,
    *,
    result: EvalResult,
    records: list[ImageRecord],
    predictions: dict[int, Prediction],
    metrics_path: str | Path | None = None,
) -> list[Path]:
    """Write every plot and ``metrics.json``; returns the files written. Training curves need
    the run's ``metrics.jsonl``."""
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [plot_curves(metrics_path, out / "curves.png")] if metrics_path else []
    written += [
        plot_pr_curves(result, out / "pr_curves.png"),
        plot_confusion(result, out / "confusion_matrix.png"),
        plot_samples(records[:SAMPLE_IMAGES], predictions, result.labels, result.threshold, out / "samples.png"),
    ]
    (out / "metrics.json").write_text(json.dumps(result.summary(), indent=2))
    return written + [out / "metrics.json"]


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(metrics_path: str | Path, target: Path) -> Path:
    rows = read_metrics(metrics_path)
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [r["epoch"] for r in rows]
    for key, name in (
        ("train_loss", "total"),
        ("train_loss_ce", "class"),
        ("train_loss_bbox", "L1"),
        ("train_loss_giou", "GIoU"),
        ("train_loss_dense_cls", "dense class"),
    ):
        if any(key in r for r in rows):
            ax_loss.plot(epochs, [r.get(key, np.nan) for r in rows], label=name)
    ax_loss.set(title="Training loss", xlabel="epoch")
    if ax_loss.lines:
        ax_loss.legend()
    evaluated = [r for r in rows if "AP" in r]
    for key in ("AP", "AP50", "AP75", "dense_AP50"):
        if key.startswith("dense") and not any(key in r for r in evaluated):
            continue  # only the fast architecture has a dense head
        label = "AP50 dense head (NMS)" if key == "dense_AP50" else key
        ax_map.plot([r["epoch"] for r in evaluated], [r.get(key) or 0.0 for r in evaluated], marker="o", label=label)
    ax_map.set(title="Validation mAP", xlabel="epoch", ylim=(0, 1))
    ax_map.legend()
    return _save(fig, target)


def plot_pr_curves(result: EvalResult, target: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 5))
    recall = np.linspace(0, 1, 101)
    for k, name in enumerate(result.labels):
        precision = result.precision_at_50[k]
        if (precision > -1).any():
            ap = result.per_class[name]["AP50"]
            ax.plot(recall, np.where(precision > -1, precision, np.nan), label=f"{name} (AP50 {ap:.2f})")
    ax.set(title="Precision-recall at IoU 0.5", xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    if ax.lines:
        ax.legend(fontsize="small")
    return _save(fig, target)


def plot_confusion(result: EvalResult, target: Path) -> Path:
    names = result.labels + ["background"]
    cm = result.confusion
    size = max(4.0, 0.6 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black",
                    fontsize="small",
                )
    ax.set(title=f"Confusion at score >= {result.threshold:.2f}, IoU 0.5", xlabel="predicted", ylabel="true")
    return _save(fig, target)


def plot_samples(
    records: list[ImageRecord], predictions: dict[int, Prediction], labels: list[str], threshold: float, target: Path
) -> Path:
    """Left: ground truth; right: predictions at the threshold, one row per image."""
    rows = max(1, len(records))
    fig, axes = plt.subplots(rows, 2, figsize=(8, 3.2 * rows), squeeze=False)
    colors = plt.get_cmap("tab10")
    for row, record in zip(axes, records):
        image = read_image(record.path).permute(1, 2, 0).numpy()
        pred = predictions.get(record.image_id)
        keep = pred.scores >= threshold if pred is not None else np.zeros(0, bool)
        panels = [
            ("ground truth", record.boxes, record.labels, None),
            (
                "prediction",
                pred.boxes[keep] if pred is not None else np.zeros((0, 4)),
                pred.labels[keep] if pred is not None else np.zeros(0, int),
                pred.scores[keep] if pred is not None else None,
            ),
        ]
        for ax, (title, boxes, classes, scores) in zip(row, panels):
            ax.imshow(image)
            ax.set_title(f"{record.file_name}: {title}", fontsize="small")
            ax.axis("off")
            for i, (box, cls) in enumerate(zip(boxes, classes)):
                color = colors(int(cls) % 10)
                ax.add_patch(
                    Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False, color=color, lw=1.5)
                )
                text = labels[int(cls)] + (f" {scores[i]:.2f}" if scores is not None else "")
                ax.text(
                    box[0],
                    box[1],
                    text,
                    color="white",
                    fontsize=6,
                    va="bottom",
                    bbox={"facecolor": color, "alpha": 0.7, "pad": 1, "lw": 0},
                )
    return _save(fig, target)


def _save(fig: plt.Figure, target: Path) -> Path:
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target
