"""Training recipes: which model and training settings suit the data at hand.

``default`` is the official DETR recipe. ``small-data`` is for the few hundred images a CVAT
task typically has; it keeps only what measured better on such data (``bench/convergence.py``,
and memorising 16 generated images, 240 steps: AP50 0.36 at lr 2e-4 against 0.04 at 1e-3):

- trainable batch norm in a randomly initialised backbone (frozen statistics suit only
  pretrained weights; this applies to every recipe);
- warm-up and a cosine schedule, with the backbone learning as fast as the rest when it
  starts from random init;
- one fixed input scale and no random crops: at a few thousand steps the model underfits,
  and multi-scale training only slows it down.

Group DETR, denoising queries and the sigmoid focal classifier are available as options
(``query_groups``, ``denoising_groups``, ``classifier``) but are not in the recipe: alone or
together they did not learn faster in those measurements (focal: AP50 0.14 against 0.36).

``auto`` picks ``small-data`` below ``SMALL_DATA_IMAGES`` training images. Settings passed
explicitly always win over a recipe's.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .config import TINY_MODEL, ConfigError, ModelConfig, TrainConfig
from .data import VAL_SUBSETS

RECIPES = ("auto", "default", "small-data")
MODEL_PRESETS = {"detr-r50": ModelConfig(), "tiny": TINY_MODEL}
#: Below this many training images, ``auto`` chooses the small-data recipe.
SMALL_DATA_IMAGES = 2000

#: What the small-data recipe changes, by starting point ("scratch" or "pretrained").
_SMALL_DATA_MODEL: dict[str, Any] = {}
_SMALL_DATA_TRAIN = {
    "scratch": {
        "lr": 2e-4,
        "lr_backbone": 2e-4,
        "warmup_steps": 100,
        "schedule": "cosine",
        "multi_scale": False,
        "random_crop": False,
    },
    "pretrained": {
        "lr": 1e-4,
        "lr_backbone": 1e-5,
        "warmup_steps": 100,
        "schedule": "cosine",
        "multi_scale": False,
        "random_crop": False,
    },
}


@dataclass(frozen=True)
class TrainingPlan:
    model: ModelConfig
    train: TrainConfig
    recipe: str  # the recipe applied: "default" or "small-data"
    reason: str  # one line for the user: what was chosen and how to override it


def plan_training(
    *,
    recipe: str = "auto",
    preset: str = "detr-r50",
    num_train_images: int,
    pretrained: bool = False,
    model_overrides: Mapping[str, Any] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
) -> TrainingPlan:
    """Model and training configuration for a run; explicit overrides beat the recipe.

    ``pretrained``: the whole DETR starts from a checkpoint (or at least the backbone from
    ImageNet weights), so normalisation stays frozen and learning rates stay low.
    """
    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    if preset not in MODEL_PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}; choose one of {', '.join(MODEL_PRESETS)}")
    model_overrides, train_overrides = dict(model_overrides or {}), dict(train_overrides or {})
    start = "pretrained" if pretrained else "scratch"
    if recipe == "auto":
        recipe = "small-data" if num_train_images < SMALL_DATA_IMAGES else "default"
        size = "small" if recipe == "small-data" else "large"
        reason = (
            f"{size} dataset: {num_train_images} training images, using the {recipe} recipe; "
            f"pass --recipe {'default' if recipe == 'small-data' else 'small-data'} to override"
        )
    else:
        reason = f"using the {recipe} recipe (--recipe {recipe}) on {num_train_images} training images"

    model_values: dict[str, Any] = {}
    train_values: dict[str, Any] = {}
    if start == "scratch":
        model_values["backbone_norm"] = "batch"
    if recipe == "small-data":
        model_values.update(_SMALL_DATA_MODEL)
        train_values.update(_SMALL_DATA_TRAIN[start])
    model = MODEL_PRESETS[preset].replace(**{**model_values, **model_overrides})
    train = TrainConfig.from_dict({**train_values, **train_overrides})
    return TrainingPlan(model, train, recipe, reason)


def check_settings(
    *,
    recipe: str = "auto",
    preset: str = "detr-r50",
    model_overrides: Mapping[str, Any] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
) -> None:
    """Raise :class:`ConfigError` unless the settings make a valid configuration under every recipe
    ``recipe`` may turn into and from either starting point: checked before any export or training."""
    recipes = ("default", "small-data") if recipe == "auto" else (recipe,)
    for concrete in recipes:
        for pretrained in (False, True):
            plan_training(recipe=concrete, preset=preset, num_train_images=0, pretrained=pretrained,
                          model_overrides=model_overrides, train_overrides=train_overrides)


def count_training_images(data: str | Path, val_fraction: float = 0.15) -> int:
    """Training images a dataset will give, from its annotation files alone (no image is read)."""
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
                counts[f.stem] = len(json.loads(f.read_text(encoding="utf-8")).get("images", []))
    except (OSError, ValueError, AttributeError, zipfile.BadZipFile):
        return 0  # unreadable: loading the dataset reports the problem properly
    if "train" in counts:
        return counts["train"]
    val = sum(n for name, n in counts.items() if name.removeprefix("instances_").lower() in VAL_SUBSETS)
    total = sum(counts.values())
    return total - val if val else round(total * (1 - val_fraction))
