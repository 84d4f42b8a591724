"""``detr quickstart``: the whole loop on generated data, with no server and no downloads.

Generates shapes in CVAT's "COCO 1.0" export layout, trains from random init with the recipe a
CVAT task of that size gets (the fast architecture, small-data recipe) for a few minutes on the
CPU, evaluates it on held-out images and draws its predictions.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .data import load_detection_data
from .predict import predict_images
from .progress import TrainProgressBar
from .recipes import count_training_images, plan_training
from .synthetic import make_shapes_dataset
from .train import fit

logger = logging.getLogger(__name__)

VAL_FRACTION = 0.2

#: Small images and a short schedule: a few minutes on two CPU cores. The rest is the recipe's.
QUICKSTART_TRAIN = {
    "epochs": 20, "batch_size": 8, "image_size": 160, "max_size": 256, "num_workers": 1, "eval_every": 5
}


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
    overrides = QUICKSTART_TRAIN if epochs is None else {**QUICKSTART_TRAIN, "epochs": epochs}
    plan = plan_training(num_train_images=count_training_images(data, VAL_FRACTION), train_overrides=overrides)
    print(plan.reason)
    config = plan.train
    with TrainProgressBar() as bar:
        result = fit(
            data, out / "run", model_config=plan.model, train_config=config, val_fraction=VAL_FRACTION, callbacks=[bar]
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
