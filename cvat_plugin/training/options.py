"""Validation of ``POST /jobs`` bodies, and the engine settings a job's options make.

A job's options are the ``job``, ``model`` and ``train`` options of the one option schema
(``cvat_plugin.training.schema``): ``weights`` (the starting point), ``recipe`` (auto, default or
small-data, see :mod:`detr.recipes`), ``model_preset``, ``model`` (fields of :class:`detr.ModelConfig`
overriding the preset) and the fields of :class:`detr.TrainConfig`. Options given explicitly beat
the recipe's. A wrong option raises :class:`detr.config.OptionError` naming it, its value and what it
takes, before a job is created; ``num_workers`` is capped by this machine's CPUs too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from cvat_plugin.responses import RequestError, json_type
from cvat_plugin.training.schema import MODEL, TRAINER_SECTIONS, WEIGHTS, option, options_in, parse_options
from detr.config import ConfigError, OptionError, TrainConfig, cpu_count
from detr.recipes import MODEL_PRESETS, check_settings, resolve_preset

__all__ = ["WEIGHTS", "JobRequest", "TrainingSetup", "parse_job_request", "training_setup"]

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
    """The TrainConfig fields the options set explicitly, and the ``max_size`` a large ``image_size`` brings
    (they override the recipe's and a resumed run's)."""
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


def parse_job_request(body: Mapping[str, Any]) -> JobRequest:
    """Check a ``POST /jobs`` body; raises :class:`RequestError` (400) naming a wrong field, and
    :class:`OptionError` (the trainer answers 400 with it too) naming a wrong option."""
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
    setup = training_setup(options)
    _check_workers(setup.train_options.get("num_workers"))
    return JobRequest(
        dataset_id=body["dataset_id"], task_id=task_id, options=dict(options),
        resume_from=resume_from, publish=publish, project_id=project_id,
    )


def training_setup(options: Mapping[str, Any]) -> TrainingSetup:
    """Turn job options into engine settings; raises :class:`OptionError` naming the first wrong option,
    or the setting that the options together make invalid."""
    parsed = parse_options(options, sections=TRAINER_SECTIONS)
    train = {o.name: parsed[o.name] for o in options_in("train") if o.name in parsed}
    setup = TrainingSetup(
        weights=parsed.get("weights", option("weights").default),
        recipe=parsed.get("recipe", option("recipe").default),
        model_preset=parsed.get("model_preset", option("model_preset").default),
        train_options=_with_max_size(train),
        model_options=parsed.get(MODEL, {}),
    )
    try:
        check_settings(recipe=setup.recipe, preset=setup.model_preset, model_overrides=setup.model_options,
                       train_overrides=setup.train_options)
    except ConfigError as e:
        raise OptionError(str(e)) from e
    return setup


def _with_max_size(train: dict[str, Any]) -> dict[str, Any]:
    """``max_size`` must exceed ``image_size`` (``detr.TrainConfig``): an ``image_size`` that reaches
    the default cap, given without a ``max_size``, brings its own, in the default proportion (1333 to
    800), so that choosing a large image size alone is enough."""
    image_size = train.get("image_size")
    if image_size is None or "max_size" in train or image_size < TrainConfig.max_size:
        return train
    return {**train, "max_size": math.ceil(image_size * TrainConfig.max_size / TrainConfig.image_size)}


def _check_workers(num_workers: int | None) -> None:
    """More data-loading processes than CPUs only slow training down, and a huge number forks the machine
    to a halt; the engine caps them too, this tells the caller."""
    cpus = cpu_count()
    if num_workers is not None and num_workers > cpus:
        raise OptionError(f"option 'num_workers' must be a whole number from 0 to {cpus} (this trainer's CPUs), "
                          f"got {num_workers!r}")
