"""``detr quickstart``: the whole loop on generated data, with no server and no downloads.

Generates shapes in CVAT's "COCO 1.0" export layout, trains the tiny configuration on the
CPU for a few minutes, evaluates it on held-out images and draws its predictions.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .config import TINY_MODEL, TrainConfig
from .data import load_detection_data
from .progress import TrainProgressBar
from .synthetic import make_shapes_dataset
from .tasks import predict_images
from .train import fit

logger = logging.getLogger(__name__)

VAL_FRACTION = 0.2

#: Tiny images and a high learning rate: a few minutes on two CPU cores.
QUICKSTART_TRAIN = TrainConfig(
    epochs=30,
    batch_size=8,
    image_size=160,
    max_size=256,
    lr=1e-3,
    lr_backbone=1e-3,
    schedule="cosine",
    warmup_steps=50,
    num_workers=1,
    eval_every=5,
    random_crop=False,
)


def run_quickstart(out: Path, *, images: int = 240, epochs: int | None = None) -> int:
    out.mkdir(parents=True, exist_ok=True)
    data = make_shapes_dataset(
        out / "shapes-task.zip",
        num_images=images,
        objects=(1, 3),
        image_size=(128, 192),
        object_size=(0.2, 0.5),
        seed=0,
    )
    print(f"Generated {images} images of circles, squares and triangles in CVAT's COCO export layout: {data}")
    config = QUICKSTART_TRAIN if epochs is None else QUICKSTART_TRAIN.replace(epochs=epochs)
    with TrainProgressBar() as bar:
        result = fit(
            data, out / "run", model_config=TINY_MODEL, train_config=config, val_fraction=VAL_FRACTION, callbacks=[bar]
        )
    metrics = result.best_metrics
    held_out = load_detection_data(data, val_fraction=VAL_FRACTION, seed=config.seed, work_dir=out / "run" / "data").val
    samples = [r.path for r in held_out[:8]]
    predictions = predict_images(result.model_path, samples, out / "predictions", device="cpu")
    print(
        f"\nValidation AP {metrics.get('AP') or 0:.3f}, AP50 {metrics.get('AP50') or 0:.3f} "
        f"(best epoch {metrics.get('epoch')})"
    )
    print(f"model:       {result.model_path}")
    print(f"report:      {result.out_dir / 'report'} (curves, PR curves, confusion matrix, samples)")
    print(f"predictions: {predictions['json'].parent} ({predictions['detections']} boxes on {len(samples)} images)")
    print(f"next:        detr predict --model {result.model_path} --out preds <your images>")
    return 0
