"""Training recipes: which architecture, model size and training settings suit the data at hand.

The architecture follows the starting point:

- a whole DETR checkpoint (the official COCO one) starts the official ``detr`` architecture,
  the only one it loads into;
- random init or an ImageNet backbone starts the ``fast`` architecture (``detr.fast_detr``),
  which converges in minutes where the official one learns almost nothing from a few hundred
  images (``bench/convergence.py``: held-out AP50 0.86 against 0.00 after 10 CPU minutes);
- one of our own model files starts the architecture it holds.

``default`` is each architecture's recipe for large datasets (the official DETR recipe for
``detr``). ``small-data`` is for the few hundred images a CVAT task usually has; it keeps what
measured better on such data (``bench/convergence.py``): warm-up and a cosine schedule, one
fixed input scale and no random crops (at a few thousand steps the model underfits, and
multi-scale training only slows it down), and for random init a backbone that learns as fast
as the rest with trainable batch norm. From random init the fast architecture trains at lr 1e-3
(5e-4 reached AP50 0.45 instead of 0.60 after two epochs) with a short warm-up. ``auto`` picks ``small-data`` below
``SMALL_DATA_IMAGES`` training images. Settings passed explicitly always win over a recipe's.

This module loads no torch (the gateway and ``cvat-detr`` check options with it before any training);
reading a dataset's or a model file's contents imports what it needs when called.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .config import FAST_MODEL, TINY_MODEL, ConfigError, ModelConfig, TrainConfig

RECIPES = ("auto", "default", "small-data")
#: What the starting weights give: nothing, an ImageNet backbone, or a whole detector.
STARTS = ("scratch", "imagenet", "checkpoint")
MODEL_PRESETS = {
    "detr-r50": ModelConfig(),
    "tiny": TINY_MODEL,
    "fast": FAST_MODEL,
    "fast-light": FAST_MODEL.replace(backbone="regnet_x_400mf"),
    "fast-r50": FAST_MODEL.replace(backbone="resnet50", hidden_dim=256, dim_feedforward=1024),
}
PRESET_HELP = {
    "auto": "by starting point: detr-r50 from a DETR checkpoint, fast-r50 from ImageNet weights, fast from scratch",
    "detr-r50": "the official DETR-R50 (loads the COCO checkpoint)",
    "tiny": "the official architecture at ResNet-18, d=128, 2+2 layers, 20 queries (tests)",
    "fast": "fast-converging DETR, ResNet-18, d=128, 3 decoder layers, 100 queries; trains in CPU minutes",
    "fast-light": "fast with a RegNetX-400MF backbone: cheaper per image on CPUs",
    "fast-r50": "fast with a ResNet-50 backbone at d=256, for ImageNet starts on a GPU",
}
#: The preset ``auto`` resolves to, by starting point.
DEFAULT_PRESETS = {"scratch": "fast", "imagenet": "fast-r50", "checkpoint": "detr-r50"}
#: Below this many training images, ``auto`` chooses the small-data recipe.
SMALL_DATA_IMAGES = 2000

#: The fast architecture in every recipe: costs as RT-DETR's (class 2, L1 5, GIoU 2), a warmed-up cosine schedule.
_FAST_TRAIN: dict[str, Any] = {"set_cost_class": 2.0, "schedule": "cosine"}
#: Warm-up steps by architecture (small-data recipe, and the fast architecture always): the fast one
#: is stable at once, and on 200 images 100 steps would be 4 of its 10 epochs.
_WARMUP_STEPS = {"detr": 100, "fast": 50}
#: Learning rates by architecture and start: (transformer and heads, backbone).
_LEARNING_RATES = {
    ("detr", "scratch"): (2e-4, 2e-4),
    ("detr", "imagenet"): (1e-4, 1e-5),
    ("detr", "checkpoint"): (1e-4, 1e-5),
    ("fast", "scratch"): (1e-3, 1e-3),
    ("fast", "imagenet"): (2e-4, 2e-5),
    ("fast", "checkpoint"): (1e-4, 1e-5),
}
#: What the small-data recipe changes besides the learning rates.
_SMALL_DATA_TRAIN: dict[str, Any] = {
    "schedule": "cosine",
    "multi_scale": False,
    "random_crop": False,
}


@dataclass(frozen=True)
class TrainingPlan:
    model: ModelConfig
    train: TrainConfig
    recipe: str  # the recipe applied: "default" or "small-data"
    preset: str  # the model preset used ("" when the model came from a starting model file)
    reason: str  # one line for the user: what was chosen and how to override it


def resolve_preset(preset: str, start: str) -> str:
    """``auto`` -> the preset for this starting point; any other preset is checked and kept."""
    if start not in STARTS:
        raise ConfigError(f"unknown starting point {start!r}; choose one of {', '.join(STARTS)}")
    if preset == "auto":
        return DEFAULT_PRESETS[start]
    if preset not in MODEL_PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}; choose one of auto, {', '.join(MODEL_PRESETS)}")
    return preset


def plan_training(
    *,
    recipe: str = "auto",
    preset: str = "auto",
    num_train_images: int,
    start: str = "scratch",
    base_model: ModelConfig | None = None,
    model_overrides: Mapping[str, Any] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
) -> TrainingPlan:
    """Model and training configuration for a run; explicit overrides beat the recipe.

    ``start``: what the starting weights give (``STARTS``). ``base_model``: the configuration
    stored in the model file training starts from, if it is one of ours; with preset ``auto``
    the run keeps that model's architecture and size.
    """
    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    model_overrides, train_overrides = dict(model_overrides or {}), dict(train_overrides or {})
    if preset == "auto" and base_model is not None:
        preset, base = "", base_model
        chosen = f"the {base.architecture} architecture of the model it starts from"
    else:
        preset = resolve_preset(preset, start)
        base = MODEL_PRESETS[preset]
        chosen = f"model preset {preset}"
    if recipe == "auto":
        recipe = "small-data" if num_train_images < SMALL_DATA_IMAGES else "default"
        other = "default" if recipe == "small-data" else "small-data"
        size = "small" if recipe == "small-data" else "large"
        reason = (
            f"{size} dataset: {num_train_images} training images, using the {recipe} recipe "
            f"(--recipe {other} to override)"
        )
    else:
        reason = f"using the {recipe} recipe (--recipe {recipe}) on {num_train_images} training images"
    why = {"scratch": "random init", "imagenet": "an ImageNet backbone", "checkpoint": "a trained detector"}[start]
    reason += f"; starting from {why}: {chosen} (--model-preset to override)"

    architecture = model_overrides.get("architecture", base.architecture)
    model_values: dict[str, Any] = {}
    train_values: dict[str, Any] = {}
    if start == "scratch":
        model_values["backbone_norm"] = "batch"
    elif "backbone_norm" not in model_overrides and base.backbone_norm == "batch" and start == "imagenet":
        model_values["backbone_norm"] = "frozen"  # ImageNet statistics stay as they are
    if architecture == "fast":
        train_values.update(_FAST_TRAIN)
    if recipe == "small-data" or architecture == "fast":
        lr, lr_backbone = _LEARNING_RATES[(architecture, start)]
        train_values.update({"lr": lr, "lr_backbone": lr_backbone})
    if recipe == "small-data":
        train_values.update(_SMALL_DATA_TRAIN)
    if recipe == "small-data" or architecture == "fast":
        train_values["warmup_steps"] = _WARMUP_STEPS[architecture]
    model = base.replace(**{**model_values, **model_overrides})
    train = TrainConfig.from_dict({**train_values, **train_overrides})
    return TrainingPlan(model, train, recipe, preset, reason)


def check_settings(
    *,
    recipe: str = "auto",
    preset: str = "auto",
    model_overrides: Mapping[str, Any] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
) -> None:
    """Raise :class:`ConfigError` unless the settings make a valid configuration under every recipe
    ``recipe`` may turn into and from every starting point: checked before any export or training."""
    recipes = ("default", "small-data") if recipe == "auto" else (recipe,)
    for concrete in recipes:
        for start in STARTS:
            plan_training(recipe=concrete, preset=preset, num_train_images=0, start=start,
                          model_overrides=model_overrides, train_overrides=train_overrides)


def count_training_images(data: str | Path, val_fraction: float = 0.15) -> int:
    """Training images a dataset will give, from its annotation files alone (no image is read)."""
    from .data import VAL_SUBSETS

    path = Path(data)
    counts: dict[str, int] = {}
    try:
        if path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                for name in zf.namelist():
                    if name.startswith("annotations/") and name.endswith(".json"):
                        counts[Path(name).stem] = len(json.loads(zf.read(name)).get("images", []))
        elif (path / "annotations").is_dir():
            for f in (path / "annotations").glob("*.json"):
                counts[Path(f).stem] = len(json.loads(f.read_text(encoding="utf-8")).get("images", []))
    except (OSError, ValueError, AttributeError, zipfile.BadZipFile):
        return 0  # unreadable: loading the dataset reports the problem properly
    if "train" in counts:
        return counts["train"]
    val = sum(n for name, n in counts.items() if name.removeprefix("instances_").lower() in VAL_SUBSETS)
    total = sum(counts.values())
    return total - val if val else round(total * (1 - val_fraction))


def starting_point(pretrained: str | None, backbone_weights: str | None) -> tuple[str, ModelConfig | None]:
    """The kind of start (``STARTS``) that ``fit``'s weight arguments make, and the model
    configuration stored in ``pretrained`` when it is one of our model files."""
    from .checkpoint import model_config_of

    if pretrained:
        return "checkpoint", model_config_of(pretrained)
    return ("imagenet" if backbone_weights else "scratch"), None
