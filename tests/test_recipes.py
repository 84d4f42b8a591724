"""Recipe choice: automatic by dataset size, explicit settings always win."""

import json

import pytest

from detr.config import FAST_MODEL, ConfigError, ModelConfig
from detr.recipes import MODEL_PRESETS, SMALL_DATA_IMAGES, check_settings, count_training_images, plan_training


def test_auto_picks_small_data_for_small_sets_and_says_how_to_override():
    plan = plan_training(num_train_images=212)
    assert plan.recipe == "small-data"
    assert plan.reason == (
        "small dataset: 212 training images, using the small-data recipe (--recipe default to override); "
        "starting from random init: model preset fast (--model-preset to override)"
    )
    assert plan.train.schedule == "cosine" and plan.train.warmup_steps > 0 and not plan.train.multi_scale
    large = plan_training(num_train_images=SMALL_DATA_IMAGES, preset="detr-r50")
    assert large.recipe == "default" and large.train.schedule == "step" and large.train.multi_scale


def test_the_starting_point_picks_the_architecture():
    scratch = plan_training(num_train_images=212)
    assert scratch.preset == "fast" and scratch.model.architecture == "fast"
    assert scratch.model.backbone_norm == "batch" and scratch.train.lr_backbone == scratch.train.lr
    imagenet = plan_training(num_train_images=212, start="imagenet")
    assert imagenet.preset == "fast-r50" and imagenet.model.architecture == "fast"
    assert imagenet.model.backbone_norm == "frozen" and imagenet.train.lr_backbone < imagenet.train.lr
    assert "starting from an ImageNet backbone: model preset fast-r50" in imagenet.reason
    coco = plan_training(num_train_images=212, start="checkpoint")
    assert coco.preset == "detr-r50" and coco.model == ModelConfig().replace(backbone_norm="frozen")
    # one of our own model files keeps its architecture and size
    ours = plan_training(num_train_images=212, start="checkpoint", base_model=FAST_MODEL.replace(num_classes=3))
    assert ours.preset == "" and ours.model.architecture == "fast" and ours.model.num_classes == 3
    assert "the fast architecture of the model it starts from" in ours.reason


def test_explicit_settings_beat_the_recipe():
    plan = plan_training(
        num_train_images=50, preset="detr-r50", train_overrides={"multi_scale": True, "lr": 3e-4},
        model_overrides={"classifier": "sigmoid"},
    )
    assert plan.train.multi_scale and plan.train.lr == 3e-4 and plan.model.classifier == "sigmoid"
    assert plan_training(num_train_images=50, start="imagenet", preset="fast").model.backbone == "resnet18"


def test_random_init_trains_the_norms_and_pretrained_keeps_them_frozen():
    assert plan_training(num_train_images=50, recipe="default", preset="detr-r50").model.backbone_norm == "batch"
    pretrained = plan_training(num_train_images=50, start="checkpoint")
    assert pretrained.model.backbone_norm == "frozen" and pretrained.train.lr_backbone < pretrained.train.lr


def test_presets_and_unknown_names():
    assert plan_training(num_train_images=10, preset="tiny").model.backbone == "resnet18"
    assert plan_training(num_train_images=10, preset="fast-light").model.backbone == "regnet_x_400mf"
    with pytest.raises(ConfigError, match="unknown recipe 'fast'; choose one of auto, default, small-data"):
        plan_training(num_train_images=10, recipe="fast")
    with pytest.raises(ConfigError, match="unknown model preset 'huge'; choose one of auto, detr-r50"):
        plan_training(num_train_images=10, preset="huge")
    with pytest.raises(ConfigError, match="unknown starting point 'coco'"):
        plan_training(num_train_images=10, start="coco")


def test_every_preset_is_a_valid_configuration_under_every_recipe_and_start():
    for preset in ("auto", *MODEL_PRESETS):
        check_settings(preset=preset)
    with pytest.raises(ConfigError, match="classifier='softmax'.*use 'sigmoid'"):
        check_settings(preset="fast", model_overrides={"classifier": "softmax"})


def test_counting_training_images_reads_only_annotations(shapes_zip, tmp_path):
    assert count_training_images(shapes_zip, val_fraction=0.25) == 18
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "train.json").write_text(json.dumps({"images": [{}] * 7}))
    (tmp_path / "annotations" / "val.json").write_text(json.dumps({"images": [{}] * 3}))
    assert count_training_images(tmp_path) == 7
    assert count_training_images(tmp_path / "missing") == 0
