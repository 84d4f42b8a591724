"""The training options: one vocabulary, with a type, a default, a range or a list of choices and a
line of help each, for every entry point: the trainer's job options (``cvat_plugin.training.options``),
the gateway's train requests, its ``DETR_TRAIN_DEFAULTS`` and ``GET /detr/api/options``, the flags of
``cvat-detr train`` and the UI dialog (which reads ``GET /options``).

Sections, in the order the options are listed:

``job``
    How a job starts: ``weights``, ``recipe``, ``model_preset``.
``model``
    The fields of ``detr.ModelConfig``, sent in the job's ``model`` object; unset, the preset decides.
``train``
    The fields of ``detr.TrainConfig``; unset, the recipe decides, else TrainConfig's default.
``gateway``
    What the gateway and ``cvat-detr`` do around a job: ``val_fraction`` (the split), ``publish``.

Nothing here restates a number: bounds, choices and defaults come from ``detr.config``,
``detr.recipes`` and ``cvat_plugin.cvat.dataset``, which own them. A wrong name or value raises
``detr.config.OptionError`` (a ``ValueError``) naming the option, the value and what it takes; the
trainer and the gateway answer 400 with its message, ``cvat-detr`` exits 2 with it. Loads no torch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

from cvat_plugin.cvat.dataset import DEFAULT_VAL_FRACTION, VAL_FRACTION_BOUNDS
from cvat_plugin.responses import json_type
from detr.config import ModelConfig, Option, OptionError, TrainConfig, config_options
from detr.recipes import MODEL_PRESETS, PRESET_HELP, RECIPES, SMALL_DATA_IMAGES

#: Starting points: the official COCO checkpoint, an ImageNet backbone, random init, or the
#: newest model trained on the same task or project.
WEIGHTS = ("coco", "imagenet", "scratch", "previous")
DEFAULT_WEIGHTS = "coco"
#: The key of the model options in a job's options.
MODEL = "model"
SECTIONS = ("job", "model", "train", "gateway")
#: What the trainer takes in a job's ``options`` (the gateway's options are the gateway's own).
TRAINER_SECTIONS = ("job", "model", "train")

_JOB = (
    Option("weights", "string", DEFAULT_WEIGHTS,
           "Starting point: coco (the official DETR-R50 COCO checkpoint; fine-tunes fastest), imagenet (an ImageNet "
           "backbone), scratch (random init) or previous (the newest model of the task or project).",
           section="job", choices=WEIGHTS),
    Option("recipe", "string", "auto",
           f"default: the official DETR recipe; small-data: trainable norms, warm-up + cosine, one input scale; "
           f"auto: small-data below {SMALL_DATA_IMAGES} training images.",
           section="job", choices=RECIPES),
    Option("model_preset", "string", "auto", "; ".join(f"{name}: {text}" for name, text in PRESET_HELP.items()) + ".",
           section="job", choices=("auto", *MODEL_PRESETS)),
)
_GATEWAY = (
    Option("val_fraction", "number", DEFAULT_VAL_FRACTION,
           "Share of the annotated images held out for validation where no Train/Validation subsets decide.",
           section="gateway", bounds=VAL_FRACTION_BOUNDS),
    Option("publish", "boolean", True,
           "Serve the best model as a CVAT detector (a Nuclio function) when training succeeds; needs a trainer "
           "with a Nuclio dashboard.", section="gateway"),
)
#: Every option, by section in ``SECTIONS`` order. A model option's default is None: the preset's.
OPTIONS: tuple[Option, ...] = (
    *_JOB,
    *(dataclasses.replace(option, default=None) for option in config_options(ModelConfig)),
    *config_options(TrainConfig),
    *_GATEWAY,
)


def options_in(*sections: str) -> tuple[Option, ...]:
    return tuple(option for option in OPTIONS if option.section in sections)


def option(name: str) -> Option:
    """The option called ``name`` outside the model section (``model`` options go by ``options_in``)."""
    return next(o for o in OPTIONS if o.name == name and o.section != "model")


def parse_options(options: Mapping[str, Any], *, sections: Iterable[str] = SECTIONS) -> dict[str, Any]:
    """Every option of ``options`` checked by name and value (model options in a ``model`` object);
    returns them with whole numbers as ints where ints are due. Raises :class:`OptionError` for the first
    wrong one, naming it, the value and what it takes (or the known options)."""
    sections = tuple(sections)
    flat = {o.name: o for o in options_in(*sections) if o.section != "model"}
    known = [MODEL if o.section == "model" else o.name for o in options_in(*sections)]
    known = list(dict.fromkeys(known))
    parsed: dict[str, Any] = {}
    for key, value in options.items():
        if key == MODEL and "model" in sections:
            parsed[MODEL] = _parse_model(value)
        elif key in flat:
            parsed[key] = flat[key].parse(value)
        else:
            raise OptionError(f"unknown option {key!r}; known options: {', '.join(known)}")
    return parsed


def _parse_model(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise OptionError(f"option {MODEL!r} must be a JSON object of model options such as "
                          f'{{"backbone": "resnet18"}}, got a JSON {json_type(value)}')
    fields = {o.name: o for o in options_in("model")}
    parsed = {}
    for key, item in value.items():
        if key not in fields:
            raise OptionError(f"unknown model option {key!r}; known model options: {', '.join(fields)}")
        parsed[key] = fields[key].parse(item)
    return parsed


def options_json(defaults: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The schema as JSON (``GET /detr/api/options``): each option's name, section, type, default
    (``defaults``' where it sets one, model options under ``model``), range or choices, and help."""
    model_defaults = defaults.get(MODEL) or {}
    described = []
    for o in OPTIONS:
        default = model_defaults.get(o.name, o.default) if o.section == "model" else defaults.get(o.name, o.default)
        item: dict[str, Any] = {"name": o.name, "section": o.section, "type": o.kind, "default": default,
                                "help": o.help}
        if o.bounds is not None:
            item["minimum"], item["maximum"] = o.bounds
        if o.choices is not None:
            item["choices"] = list(o.choices)
        described.append(item)
    return described
