"""Validation of ``POST /jobs`` bodies.

Training options are the fields of :class:`detr.TrainConfig` (so names and defaults live
in one place) plus two job-level options: ``weights`` (the starting point) and ``model``
(fields of :class:`detr.ModelConfig`). Anything else is rejected by name before a job
is created.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from detr import ModelConfig, TrainConfig
from detr.config import ConfigError
from serverless.responses import RequestError, json_type

#: Starting points: the official COCO checkpoint, an ImageNet backbone, random init, or the
#: newest model trained on the same task.
WEIGHTS = ("coco", "imagenet", "scratch", "previous")
DEFAULT_WEIGHTS = "coco"

JOB_OPTIONS = ("weights", "model")
REQUEST_KEYS = ("dataset_id", "task_id", "options", "resume_from", "publish")
REQUEST_EXAMPLE = '{"dataset_id": "task-7", "task_id": 7, "options": {"epochs": 50}, "publish": true}'


@dataclass(frozen=True)
class JobRequest:
    dataset_id: str
    task_id: int | None
    options: dict[str, Any]
    resume_from: str | None
    publish: bool | None
    """None: the trainer's default (publish when it has a Nuclio dashboard)."""


@dataclass(frozen=True)
class TrainingSetup:
    """What ``detr.fit`` is called with, derived from a job's options."""

    weights: str
    train_options: dict[str, Any]
    """The TrainConfig fields the options set explicitly (they override a resumed run's recipe)."""
    train_config: TrainConfig
    model_config: ModelConfig | None
    """None = the engine's default architecture (DETR-R50)."""


def parse_job_request(body: Mapping[str, Any]) -> JobRequest:
    """Check a ``POST /jobs`` body; raises :class:`RequestError` (400) naming what is wrong."""
    unknown = [key for key in body if key not in REQUEST_KEYS]
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r}; a job request has {', '.join(REQUEST_KEYS)}")
    if "dataset_id" not in body:
        raise RequestError(f"missing field 'dataset_id'; send {REQUEST_EXAMPLE}")
    task_id = body.get("task_id")
    if task_id is not None and (isinstance(task_id, bool) or not isinstance(task_id, int)):
        raise RequestError(f"field 'task_id' must be an integer CVAT task id, got a JSON {json_type(task_id)}")
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
    return JobRequest(
        dataset_id=body["dataset_id"], task_id=task_id, options=dict(options),
        resume_from=resume_from, publish=publish,
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
    train = {key: value for key, value in options.items() if key in train_fields}
    train = _coerce(train, train_fields, prefix="option")
    model = options.get("model")
    model_config = None
    if model is not None:
        if not isinstance(model, dict):
            raise RequestError(f"option 'model' must be a JSON object of model settings, got {json_type(model)}")
        model_fields = _fields(ModelConfig)
        unknown = [key for key in model if key not in model_fields]
        if unknown:
            raise RequestError(
                f"unknown model option {unknown[0]!r}; known model options: {', '.join(model_fields)}"
            )
        model = _coerce(model, model_fields, prefix="model option")
    try:
        train_config = TrainConfig.from_dict(train)
        if model is not None:
            model_config = ModelConfig.from_dict(model)
    except ConfigError as e:
        raise RequestError(f"invalid option: {e}") from e
    return TrainingSetup(weights=weights, train_options=train, train_config=train_config, model_config=model_config)


def _fields(config_class: type) -> dict[str, Any]:
    """Field name -> default value of a config dataclass."""
    return {f.name: f.default for f in dataclasses.fields(config_class)}


def _coerce(values: Mapping[str, Any], defaults: Mapping[str, Any], *, prefix: str) -> dict[str, Any]:
    """Check JSON types against the defaults' types; whole floats become ints where ints are due."""
    expected_names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    coerced = dict(values)
    for key, value in values.items():
        default = defaults[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = number and float(value).is_integer()
            if ok:
                coerced[key] = int(value)
        elif isinstance(default, float):
            ok = number
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok:
            raise RequestError(f"{prefix} {key!r} must be {expected_names[type(default)]}, got {value!r}")
    return coerced
