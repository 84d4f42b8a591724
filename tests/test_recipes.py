"""Recipe choice: automatic by dataset size, explicit settings always win."""

import json

import pytest

from detr.config import ConfigError
from detr.recipes import SMALL_DATA_IMAGES, count_training_images, plan_training


def test_auto_picks_small_data_for_small_sets_and_says_how_to_override():
    plan = plan_training(num_train_images=212)
    assert plan.recipe == "small-data"
    assert plan.reason == (
        "small dataset: 212 training images, using the small-data recipe; pass --recipe default to override"
    )
    assert plan.train.schedule == "cosine" and plan.train.warmup_steps > 0 and not plan.train.multi_scale
    large = plan_training(num_train_images=SMALL_DATA_IMAGES)
    assert large.recipe == "default" and large.train.schedule == "step" and large.train.multi_scale


def test_explicit_settings_beat_the_recipe():
    plan = plan_training(
        num_train_images=50, train_overrides={"multi_scale": True, "lr": 3e-4},
        model_overrides={"classifier": "sigmoid"},
    )
    assert plan.train.multi_scale and plan.train.lr == 3e-4 and plan.model.classifier == "sigmoid"


def test_random_init_trains_the_norms_and_pretrained_keeps_them_frozen():
    assert plan_training(num_train_images=50, recipe="default").model.backbone_norm == "batch"
    pretrained = plan_training(num_train_images=50, pretrained=True)
    assert pretrained.model.backbone_norm == "frozen" and pretrained.train.lr_backbone < pretrained.train.lr


def test_presets_and_unknown_names():
    assert plan_training(num_train_images=10, preset="tiny").model.backbone == "resnet18"
    with pytest.raises(ConfigError, match="unknown recipe 'fast'; choose one of auto, default, small-data"):
        plan_training(num_train_images=10, recipe="fast")
    with pytest.raises(ConfigError, match="unknown model preset"):
        plan_training(num_train_images=10, preset="huge")


def test_counting_training_images_reads_only_annotations(shapes_zip, tmp_path):
    assert count_training_images(shapes_zip, val_fraction=0.25) == 18
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "train.json").write_text(json.dumps({"images": [{}] * 7}))
    (tmp_path / "annotations" / "val.json").write_text(json.dumps({"images": [{}] * 3}))
    assert count_training_images(tmp_path) == 7
    assert count_training_images(tmp_path / "missing") == 0
