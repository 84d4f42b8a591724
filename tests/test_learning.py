"""Training really learns: it overfits a handful of images, and generalises to held-out ones."""

import json
import shutil

from detr import fit
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
