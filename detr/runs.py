"""What a training run is: a new run planned by a recipe, or the continuation of one from its checkpoint.

:func:`plan_run` is the one place that decides the settings of a run, for ``detr train``, ``cvat-detr
train --local`` and the trainer function alike. What it gives, a :class:`RunSpec`, holds everything
``detr.fit`` needs and nothing about how it is launched, so the same spec runs in this process
(:meth:`RunSpec.fit`) or wherever a launcher sends it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .config import ConfigError, ModelConfig, TrainConfig
from .recipes import count_training_images, plan_training, starting_point
from .train import Callback, FitResult, fit, read_run_config


@dataclass(frozen=True)
class RunSpec:
    """One training run to launch: ``detr.fit``'s arguments but the callbacks and the stop check."""

    data: Path
    """The dataset: a COCO folder, a training-set folder or a CVAT export zip."""
    out_dir: Path
    """The run folder: model.pt, checkpoint.pt, metrics.jsonl, config.json, report/."""
    model_config: ModelConfig
    train_config: TrainConfig
    pretrained: str | None = None
    """A whole detector to start from (official DETR checkpoint or one of our model files)."""
    backbone_weights: str | None = None
    """ImageNet weights of the backbone to start from."""
    resume: bool = False
    """Continue ``out_dir``'s checkpoint (its weights, optimiser, schedule and position)."""
    val_fraction: float = 0.15
    reason: str | None = None
    """A new run's recipe and model, and how to override them (one line); None when resuming."""

    def to_dict(self) -> dict[str, Any]:
        """As JSON, for a run launched in other processes (``from_dict`` reads it back)."""
        return {"data": str(self.data), "out_dir": str(self.out_dir), "model_config": self.model_config.to_dict(),
                "train_config": self.train_config.to_dict(), "pretrained": self.pretrained,
                "backbone_weights": self.backbone_weights, "resume": self.resume, "val_fraction": self.val_fraction,
                "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        return cls(**{**data, "data": Path(data["data"]), "out_dir": Path(data["out_dir"]),
                      "model_config": ModelConfig.from_dict(data["model_config"]),
                      "train_config": TrainConfig.from_dict(data["train_config"])})

    def fit(self, *, callbacks: Sequence[Callback] = (), should_stop: Callable[[], bool] | None = None) -> FitResult:
        """Run it in this process."""
        return fit(self.data, self.out_dir, model_config=self.model_config, train_config=self.train_config,
                   pretrained=self.pretrained, backbone_weights=self.backbone_weights, resume=self.resume,
                   val_fraction=self.val_fraction, callbacks=callbacks, should_stop=should_stop)


def plan_run(
    data: str | Path,
    out_dir: str | Path,
    *,
    resume: bool,
    pretrained: str | None = None,
    backbone_weights: str | None = None,
    recipe: str = "auto",
    preset: str = "auto",
    model_overrides: Mapping[str, Any] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    val_fraction: float = 0.15,
) -> RunSpec:
    """The run to launch on ``data`` into ``out_dir``.

    Resuming, the settings are those saved in ``out_dir``'s checkpoint with ``train_overrides`` applied
    (a larger ``epochs`` extends the run); model settings cannot change, so ``model_overrides`` must agree
    with the checkpoint's. A new run takes the recipe's settings for its starting weights and data size,
    overrides winning (``detr.recipes.plan_training``). Raises :class:`ConfigError` naming what to change.
    """
    data, out_dir = Path(data), Path(out_dir)
    model_overrides, train_overrides = dict(model_overrides or {}), dict(train_overrides or {})
    if resume:
        saved_model, saved_train = read_run_config(out_dir)
        # The number of classes always comes from the data, so it is never a change.
        changed = [key for key, value in model_overrides.items()
                   if key != "num_classes" and getattr(saved_model, key) != value]
        if changed:
            flags = ", ".join("--" + key.replace("_", "-") for key in changed)
            raise ConfigError(f"model options cannot change on --resume; drop {flags}")
        return RunSpec(data, out_dir, saved_model, saved_train.replace(**train_overrides), pretrained=pretrained,
                       backbone_weights=backbone_weights, resume=True, val_fraction=val_fraction)
    start, base_model = starting_point(pretrained, backbone_weights)
    plan = plan_training(recipe=recipe, preset=preset, num_train_images=count_training_images(data, val_fraction),
                         start=start, base_model=base_model, model_overrides=model_overrides,
                         train_overrides=train_overrides)
    return RunSpec(data, out_dir, plan.model, plan.train, pretrained=pretrained, backbone_weights=backbone_weights,
                   val_fraction=val_fraction, reason=plan.reason)
