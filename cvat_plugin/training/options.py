"""Validation of ``POST /jobs`` bodies.

Training options are the fields of :class:`detr.TrainConfig` (so names, defaults and bounds live
in one place, ``detr.config``) plus job-level options: ``weights`` (the starting point), ``recipe`` (auto,
default or small-data, see :mod:`detr.recipes`), ``model_preset`` and ``model`` (fields of
:class:`detr.ModelConfig` overriding the preset). Options given explicitly beat the recipe's.
Anything else is rejected by name before a job is created, and so is any number outside its
bounds, with the option and its range named; ``num_workers`` is capped by this machine's CPUs too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from cvat_plugin.responses import RequestError, json_type
from detr.config import ConfigError, ModelConfig, TrainConfig, cpu_count, parse_option
from detr.recipes import MODEL_PRESETS, RECIPES, check_settings, plan_training, resolve_preset

#: Starting points: the official COCO checkpoint, an ImageNet backbone, random init, or the
#: newest model trained on the same task.
WEIGHTS = ("coco", "imagenet", "scratch", "previous")
DEFAULT_WEIGHTS = "coco"

JOB_OPTIONS = ("weights", "recipe", "model_preset", "model")
REQUEST_KEYS = ("dataset_id", "task_id", "project_id", "options", "resume_from", "publish")
REQUEST_EXAMPLE = '{"dataset_id": "task-7", "task_id": 7, "options": {"epochs": 50}, "publish": true}'


@dataclass(frozen=True)
class JobRequest:
    dataset_id: str
    task_id: int | None
    options: dict[str, Any]
    resume_from: str | None
    publish: bool | None
    """None: the trainer's default (publish when it has a Nuclio dashboard)."""
    project_id: int | None = None
    """The CVAT project trained on (all its tasks), instead of ``task_id``."""


@dataclass(frozen=True)
class TrainingSetup:
    """What ``detr.fit`` is called with, derived from a job's options."""

    weights: str
    recipe: str
    model_preset: str
    train_options: dict[str, Any]
    """The TrainConfig fields the options set explicitly (they override the recipe's and a resumed run's)."""
    model_options: dict[str, Any]
    """The ModelConfig fields the options set explicitly (they override the preset's and the recipe's)."""

    @property
    def start(self) -> str:
        """What the starting weights give (``detr.recipes.STARTS``)."""
        return {"scratch": "scratch", "imagenet": "imagenet"}.get(self.weights, "checkpoint")

    @property
    def backbone(self) -> str:
        preset = resolve_preset(self.model_preset, self.start)
        return self.model_options.get("backbone", MODEL_PRESETS[preset].backbone)

    def plan(self, *, num_train_images: int, base_model: ModelConfig | None) -> tuple[ModelConfig, TrainConfig, str]:
        """The model and training settings for a new run on this many images, and why (one line);
        ``base_model``: the configuration stored in the model file the run starts from, if one of ours."""
        plan = plan_training(recipe=self.recipe, preset=self.model_preset, num_train_images=num_train_images,
                             start=self.start, base_model=base_model, model_overrides=self.model_options,
                             train_overrides=self.train_options)
        return plan.model, plan.train, plan.reason


def parse_job_request(body: Mapping[str, Any]) -> JobRequest:
    """Check a ``POST /jobs`` body; raises :class:`RequestError` (400) naming what is wrong."""
    unknown = [key for key in body if key not in REQUEST_KEYS]
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r}; a job request has {', '.join(REQUEST_KEYS)}")
    if "dataset_id" not in body:
        raise RequestError(f"missing field 'dataset_id'; send {REQUEST_EXAMPLE}")
    task_id, project_id = body.get("task_id"), body.get("project_id")
    for name, value in (("task_id", task_id), ("project_id", project_id)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise RequestError(f"field {name!r} must be an integer CVAT {name[:-3]} id, got a JSON {json_type(value)}")
    if task_id is not None and project_id is not None:
        raise RequestError("send either 'task_id' or 'project_id': a job trains on one task or one project")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise RequestError(f"field 'options' must be a JSON object, got a JSON {json_type(options)}")
    publish = body.get("publish")
    if publish is not None and not isinstance(publish, bool):
        raise RequestError(f"field 'publish' must be true or false, got a JSON {json_type(publish)}")
    resume_from = body.get("resume_from")
    if resume_from is not None and not isinstance(resume_from, str):
        raise RequestError(f"field 'resume_from' must be a job id, got a JSON {json_type(resume_from)}")
    training_setup(options)
    _check_workers(options.get("num_workers"))
    return JobRequest(
        dataset_id=body["dataset_id"], task_id=task_id, options=dict(options),
        resume_from=resume_from, publish=publish, project_id=project_id,
    )


def training_setup(options: Mapping[str, Any]) -> TrainingSetup:
    """Turn job options into engine configs; raises :class:`RequestError` (400) on bad options."""
    train_fields = _fields(TrainConfig)
    known = list(JOB_OPTIONS) + list(train_fields)
    for key in options:
        if key not in known:
            raise RequestError(f"unknown option {key!r}; known options: {', '.join(known)}")
    weights = options.get("weights", DEFAULT_WEIGHTS)
    if weights not in WEIGHTS:
        raise RequestError(f"option 'weights' must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    recipe = options.get("recipe", "auto")
    if recipe not in RECIPES:
        raise RequestError(f"option 'recipe' must be one of {', '.join(RECIPES)}, got {recipe!r}")
    preset = options.get("model_preset", "auto")
    if preset != "auto" and preset not in MODEL_PRESETS:
        raise RequestError(
            f"option 'model_preset' must be one of auto, {', '.join(MODEL_PRESETS)}, got {preset!r}"
        )
    train = _parse(TrainConfig, {key: value for key, value in options.items() if key in train_fields},
                   prefix="option")
    model = options.get("model") or {}
    if model:
        if not isinstance(model, dict):
            raise RequestError(f"option 'model' must be a JSON object of model settings, got {json_type(model)}")
        model_fields = _fields(ModelConfig)
        unknown = [key for key in model if key not in model_fields]
        if unknown:
            raise RequestError(
                f"unknown model option {unknown[0]!r}; known model options: {', '.join(model_fields)}"
            )
        model = _parse(ModelConfig, model, prefix="model option")
    setup = TrainingSetup(weights=weights, recipe=recipe, model_preset=preset, train_options=train,
                          model_options=model)
    try:
        check_settings(recipe=recipe, preset=preset, model_overrides=model, train_overrides=train)
    except ConfigError as e:
        raise RequestError(f"invalid option: {e}") from e
    return setup


def _fields(config_class: type) -> dict[str, Any]:
    """Field name -> default value of a config dataclass."""
    return {f.name: f.default for f in dataclasses.fields(config_class)}


def _parse(config_class: type, values: Mapping[str, Any], *, prefix: str) -> dict[str, Any]:
    """Each value checked against its config field's type and bounds (``detr.config.parse_option``)."""
    try:
        return {key: parse_option(config_class, key, value) for key, value in values.items()}
    except ConfigError as e:
        raise RequestError(f"{prefix} {e}") from None


def _check_workers(num_workers: int | None) -> None:
    """More data-loading processes than CPUs only slow training down, and a huge number forks the machine
    to a halt; the engine caps them too, this tells the caller."""
    cpus = cpu_count()
    if num_workers is not None and num_workers > cpus:
        raise RequestError(f"option 'num_workers' must be a whole number from 0 to {cpus} (this trainer's CPUs), "
                           f"got {num_workers!r}")
