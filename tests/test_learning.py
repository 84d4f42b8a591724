"""Training really learns: it overfits a handful of images, and generalises to held-out ones."""

import json
import shutil

import pytest

from detr import fit
from detr.recipes import plan_training
from detr.synthetic import make_shapes_dataset


def _train_equals_val(tmp_path, num_images):
    """A training set whose validation split is its training split (to measure memorisation)."""
    src = make_shapes_dataset(
        tmp_path / "src", num_images=num_images, objects=(1, 3), image_size=(128, 160), layout="cvat-folder", seed=1
    )
    root = tmp_path / "set"
    (root / "annotations").mkdir(parents=True)
    shutil.copytree(src / "images" / "default", root / "images")
    doc = (src / "annotations" / "instances_default.json").read_text()
    for split in ("train", "val"):
        (root / "annotations" / f"{split}.json").write_text(doc)
    labels = [{"id": c["id"], "name": c["name"]} for c in json.loads(doc)["categories"]]
    (root / "labels.json").write_text(json.dumps(labels))
    return root


def test_overfits_a_handful_of_images(tmp_path, tiny_model, tiny_train):
    data = _train_equals_val(tmp_path, 4)
    config = tiny_train.replace(epochs=120, eval_every=40, hflip=False, random_crop=False, lr_drop=1.0, max_size=160)
    result = fit(data, tmp_path / "run", model_config=tiny_model, train_config=config)
    assert result.best_metrics["AP50"] >= 0.9


@pytest.mark.slow
def test_generalises_to_held_out_images(tmp_path, tiny_model):
    """A fixed budget (9 epochs of 192 images, ~3 CPU minutes) lifts held-out AP50 far above an untrained
    model's: untrained 0.001-0.003 on this data (3 seeds); measured trained 0.034-0.047 after 3-9 epochs.
    The threshold keeps a 2x margin below that and stays 7x above the untrained model."""
    data = make_shapes_dataset(tmp_path / "task.zip", num_images=240, classes=("square",), objects=(1, 2),
                               image_size=(128, 192), object_size=(0.25, 0.5), seed=0)
    plan = plan_training(
        recipe="small-data", preset="tiny", num_train_images=192, model_overrides={"num_queries": 10},
        train_overrides={"epochs": 9, "eval_every": 3, "batch_size": 8, "image_size": 160, "max_size": 256,
                         "warmup_steps": 50, "num_workers": 0, "device": "cpu"},
    )
    result = fit(data, tmp_path / "run", model_config=plan.model, train_config=plan.train, val_fraction=0.2)
    assert result.best_metrics["AP50"] >= 0.02
