"""Typed, validated configuration for the model and the training recipe.

Every file the project writes stores these as plain JSON dicts (``to_dict``), and
``from_dict`` rejects unknown keys by name, so a typo never passes silently.
CLI flags and trainer job options map onto the same fields: defaults live here only, and so do
the bounds of every numeric field and the choices of every closed string field (``bounds`` and
``choices`` in a field's metadata). :func:`config_options` describes each field as an
:class:`Option`, whose ``parse`` is the one check of a value that the engine, the trainer, the
gateway and ``cvat-detr`` all apply (``cvat_plugin.training.schema`` builds the whole vocabulary
from it). Bounds are closed intervals wide enough for any sensible run and tight enough that no
request can exhaust the machine.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, TypeVar

ARCHITECTURES = ("detr", "fast")
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
#: Extra backbones of the fast architecture: torchvision ImageNet networks far cheaper than a ResNet-18.
LIGHT_BACKBONES = ("regnet_x_400mf", "regnet_x_800mf")
BACKBONE_NORMS = ("frozen", "batch")
SCHEDULES = ("step", "cosine")
CLASSIFIERS = ("softmax", "sigmoid")
CROSS_ATTENTIONS = ("deformable", "global")
#: Numeric precision of training and inference (``detr.precision``).
PRECISIONS = ("auto", "fp32", "bf16")

#: ImageNet statistics used by torchvision backbones and the official DETR checkpoints.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Official DETR checkpoint, for fine-tuning (`--pretrained`) and the default detector function.
DETR_R50_URL = "https://dl.fbaipublicfiles.com/detr/detr-r50-e632da11.pth"

_C = TypeVar("_C", bound="_ConfigBase")


Bounds = tuple[float, float]


def _field(default: Any, help: str = "", bounds: Optional[Bounds] = None,
           choices: Optional[tuple[str, ...]] = None) -> Any:
    """A dataclass field whose help text also serves the CLI flag generated from it; a numeric field
    gives its ``bounds`` (lowest, highest), both allowed, and a closed string field its ``choices``."""
    metadata: dict[str, Any] = {"help": help}
    if bounds is not None:
        metadata["bounds"] = bounds
    if choices is not None:
        metadata["choices"] = choices
    return field(default=default, metadata=metadata)


class ConfigError(ValueError):
    """A configuration value is invalid or unknown."""


class OptionError(ConfigError):
    """An option's value is not one it takes, or no option has that name. The message names the
    option, the value and what the option takes (``option 'epochs' must be a whole number from 1 to
    10000, got 0``); every entry point shows it unchanged."""


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


@dataclass(frozen=True)
class Option:
    """One option: its JSON ``kind`` (integer, number, boolean or string), its default, the closed
    ``bounds`` of a number or the ``choices`` of a string, and one line of help. ``section`` says
    where it belongs (``train`` and ``model`` for the config fields; other vocabularies add theirs)."""

    name: str
    kind: str
    default: Any
    help: str = ""
    section: str = "train"
    bounds: Optional[Bounds] = None
    choices: Optional[tuple[str, ...]] = None

    @property
    def label(self) -> str:
        """How messages name it: model options travel in the job's ``model`` object."""
        return f"model option {self.name!r}" if self.section == "model" else f"option {self.name!r}"

    @property
    def rule(self) -> str:
        """What it takes, in words: ``a whole number from 1 to 10000``, ``one of step, cosine``..."""
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        if self.kind == "boolean":
            return "true or false"
        if self.kind in ("integer", "number") and self.bounds is not None:
            what = "a whole number" if self.kind == "integer" else "a finite number"
            return f"{what} from {_number(self.bounds[0])} to {_number(self.bounds[1])}"
        return f"a {self.kind}"

    def parse(self, value: Any) -> Any:
        """``value`` checked against the kind, bounds and choices (whole floats become ints where ints
        are due). Raises :class:`OptionError` ``<label> must be <rule>, got <value>``."""
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind == "boolean":
            ok = isinstance(value, bool)
        elif self.kind in ("integer", "number"):
            low, high = self.bounds if self.bounds is not None else (-math.inf, math.inf)
            # Python compares ints of any size with floats exactly; ``float(10**400)`` would overflow.
            ok = number and (isinstance(value, int) or math.isfinite(value)) and low <= value <= high
            if ok and self.kind == "integer":
                ok = isinstance(value, int) or float(value).is_integer()
                value = int(value) if ok else value
        else:
            ok = isinstance(value, str) and (self.choices is None or value in self.choices)
        if not ok:
            raise OptionError(f"{self.label} must be {self.rule}, got {value!r}")
        return value


def value_kind(default: Any) -> str:
    """The JSON kind of a field's values, from its default."""
    if isinstance(default, bool):
        return "boolean"
    if isinstance(default, int):
        return "integer"
    return "number" if isinstance(default, float) else "string"


@functools.cache
def config_options(config_class: type) -> tuple[Option, ...]:
    """Each field of a config dataclass as an :class:`Option` (in field order)."""
    return tuple(
        Option(f.name, value_kind(f.default), f.default, f.metadata.get("help", ""), config_class._section,
               f.metadata.get("bounds"), f.metadata.get("choices"))
        for f in dataclasses.fields(config_class)
    )


def option_rule(config_class: type, name: str) -> str:
    """What a field takes, in words: ``a whole number from 1 to 10000``, ``true or false``..."""
    return {option.name: option for option in config_options(config_class)}[name].rule


def cpu_count() -> int:
    """The CPUs this process may run on: the most data-loading workers worth starting."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_option(config_class: type, name: str, value: Any) -> Any:
    """A JSON value for a config field, checked by its :class:`Option`; raises :class:`OptionError`."""
    return {option.name: option for option in config_options(config_class)}[name].parse(value)


class _ConfigBase:
    _section = "config"

    def _check_fields(self) -> None:
        """Every field of its kind, numbers within their bounds (and finite), closed strings one of
        their choices: the first check of ``__post_init__``."""
        for option in config_options(type(self)):
            value = getattr(self, option.name)
            try:
                option.parse(value)
            except OptionError:
                rule = f"choose one of {', '.join(option.choices)}" if option.choices else f"must be {option.rule}"
                _check(False, self._section, option.name, value, rule)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[_C], data: Mapping[str, Any]) -> _C:
        known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        for key in data:
            if key not in known:
                raise ConfigError(f"unknown key {key!r} in {cls._section} config; known keys: {', '.join(known)}")
        values = dict(data)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in values and isinstance(values[f.name], list):
                values[f.name] = tuple(values[f.name])
        return cls(**values)

    def replace(self: _C, **changes: Any) -> _C:
        return type(self).from_dict({**self.to_dict(), **changes})


def _check(condition: bool, section: str, name: str, value: Any, rule: str) -> None:
    if not condition:
        raise ConfigError(f"{section} config: {name}={value!r} is invalid; {rule}")


@dataclass(frozen=True)
class ModelConfig(_ConfigBase):
    """Architecture of a DETR model. Defaults are the official DETR-R50 ones."""

    _section = "model"

    num_classes: int = _field(
        91, "Number of object classes K; the class head has K+1 outputs (last = no-object).", bounds=(1, 5000)
    )
    architecture: str = _field(
        "detr",
        "'detr': the official DETR (loads the COCO checkpoints); 'fast': the fast-converging DETR for "
        "random-init and ImageNet-backbone starts on small data (multi-scale, dense auxiliary head, "
        "two-stage queries, deformable decoder with box refinement).",
        choices=ARCHITECTURES,
    )
    backbone: str = _field(
        "resnet50",
        "torchvision backbone: resnet18, resnet34, resnet50 or resnet101; the fast architecture also "
        "takes regnet_x_400mf and regnet_x_800mf.",
        choices=BACKBONES + LIGHT_BACKBONES,
    )
    dilation: bool = _field(False, "DC5 variant: dilate the last ResNet stage instead of striding it.")
    backbone_norm: str = _field(
        "frozen",
        "'frozen' batch norm (right for pretrained backbones) or trainable 'batch' norm (random init).",
        choices=BACKBONE_NORMS,
    )
    hidden_dim: int = _field(256, "Transformer width d.", bounds=(8, 2048))
    nheads: int = _field(8, "Attention heads.", bounds=(1, 64))
    enc_layers: int = _field(6, "Encoder layers.", bounds=(0, 24))
    dec_layers: int = _field(6, "Decoder layers.", bounds=(1, 24))
    dim_feedforward: int = _field(2048, "Feed-forward width in each transformer layer.", bounds=(8, 16384))
    dropout: float = _field(0.1, "Dropout in the transformer.", bounds=(0.0, 0.9))
    num_queries: int = _field(
        100,
        "Object queries: the most objects one image can get; keep 100 to fine-tune official checkpoints.",
        bounds=(1, 3000),
    )
    pre_norm: bool = _field(False, "LayerNorm before (not after) attention and feed-forward (detr).")
    dec_points: int = _field(
        4, "Sampling points per head and feature level in the decoder's cross-attention (fast).", bounds=(1, 16)
    )
    feature_levels: int = _field(
        3,
        "Feature levels of the fast architecture, coarsest kept: 3 = strides 8, 16 and 32; 1 = stride 32 only.",
        bounds=(1, 3),
    )
    two_stage: bool = _field(
        True, "Fast: queries start from the dense head's best cells; off: learnt queries and reference boxes."
    )
    cross_attention: str = _field(
        "deformable",
        "Fast: the decoder's cross-attention, 'deformable' (a few points around each query's box) or 'global'.",
        choices=CROSS_ATTENTIONS,
    )
    aux_loss: bool = _field(True, "Predict boxes after every decoder layer during training (deep supervision).")
    classifier: str = _field(
        "softmax",
        "'softmax' over K classes + no-object (official DETR; the head has K+1 "
        "outputs) or 'sigmoid' per class with focal loss (K outputs; needs a new class head).",
        choices=CLASSIFIERS,
    )

    def __post_init__(self) -> None:
        self._check_fields()
        s = self._section
        fast = self.architecture == "fast"
        _check(
            fast or self.backbone not in LIGHT_BACKBONES,
            s,
            "backbone",
            self.backbone,
            f"{', '.join(LIGHT_BACKBONES)} need architecture='fast'; with 'detr' choose one of {', '.join(BACKBONES)}",
        )
        _check(
            self.hidden_dim > 0 and self.nheads > 0 and self.hidden_dim % self.nheads == 0,
            s,
            "hidden_dim",
            self.hidden_dim,
            f"must be a positive multiple of nheads={self.nheads}",
        )
        _check(
            not self.dilation or self.backbone_channels == 2048,
            s,
            "dilation",
            self.dilation,
            f"needs a bottleneck ResNet (resnet50 or resnet101); torchvision's {self.backbone} cannot dilate",
        )
        _check(self.hidden_dim % 2 == 0, s, "hidden_dim", self.hidden_dim, "must be even (sine position encoding)")
        if fast:
            rule = "the fast architecture's scores are IoU-aware sigmoids; use 'sigmoid'"
            _check(self.classifier == "sigmoid", s, "classifier", self.classifier, rule)
            rule = "the fast architecture is multi-scale; leave it off"
            _check(not self.dilation, s, "dilation", self.dilation, rule)
            _check(not self.pre_norm, s, "pre_norm", self.pre_norm, "the fast architecture is post-norm; leave it off")

    @property
    def backbone_channels(self) -> int:
        """Channels of a ResNet's last stage (the official DETR's input)."""
        return 512 if self.backbone in ("resnet18", "resnet34") else 2048

    @property
    def class_outputs(self) -> int:
        """Width of the class head: K+1 with the softmax no-object column, K with sigmoid."""
        return self.num_classes + (1 if self.classifier == "softmax" else 0)


@dataclass(frozen=True)
class TrainConfig(_ConfigBase):
    """The training recipe: optimisation, schedule, losses, input size and bookkeeping."""

    _section = "train"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """As ``_ConfigBase.from_dict``; files written before ``precision`` existed say ``amp``
        (true: bf16 where native, i.e. 'auto'; false: 'fp32')."""
        if "amp" in data and "precision" not in data:
            data = {k: v for k, v in data.items() if k != "amp"} | {"precision": "auto" if data["amp"] else "fp32"}
        return super().from_dict(data)

    epochs: int = _field(50, "Passes over the training images.", bounds=(1, 10000))
    batch_size: int = _field(2, "Images per step.", bounds=(1, 256))
    lr: float = _field(1e-4, "AdamW learning rate of the transformer and heads.", bounds=(1e-07, 1.0))
    lr_backbone: float = _field(
        1e-5, "Learning rate of ResNet stages 2-4; 0 freezes the whole backbone.", bounds=(0.0, 1.0)
    )
    weight_decay: float = _field(1e-4, "AdamW weight decay.", bounds=(0.0, 1.0))
    schedule: str = _field("step", "'step' (x0.1 at lr_drop of the epochs) or 'cosine'.", choices=SCHEDULES)
    lr_drop: float = _field(
        2 / 3, "Fraction of the epochs after which the 'step' schedule drops the learning rate.", bounds=(0.01, 1.0)
    )
    warmup_steps: int = _field(0, "Steps of linear learning-rate warm-up.", bounds=(0, 100000))
    clip_max_norm: float = _field(0.1, "Gradient norm clipping; 0 turns it off.", bounds=(0.0, 1000.0))
    precision: str = _field(
        "auto",
        "'auto' (bf16 where the hardware runs it natively: CUDA, or a CPU with AVX512-BF16/AMX; else fp32), "
        "'fp32' or 'bf16'.",
        choices=PRECISIONS,
    )
    ema_decay: float = _field(
        0.0, "Exponential moving average of the weights; 0 turns it off, 0.9998 is typical.", bounds=(0.0, 0.99999)
    )
    seed: int = _field(42, "Seed of shuffling, augmentation and initialisation.", bounds=(0, 2**32 - 1))
    num_workers: int = _field(2, "Data loading processes.", bounds=(0, 64))
    image_size: int = _field(800, "Shortest side at evaluation; training samples sizes up to this.", bounds=(32, 4096))
    max_size: int = _field(1333, "Longest side cap.", bounds=(33, 8192))
    random_crop: bool = _field(True, "Random crops during training, as in DETR.")
    multi_scale: bool = _field(
        True,
        "Train at shortest sides drawn from multiples of 32 in [0.6, 1] x image_size, as in DETR; off = image_size.",
    )
    hflip: bool = _field(True, "Random horizontal flips during training.")
    set_cost_class: float = _field(1.0, "Matcher weight of the class probability.", bounds=(0.0, 100.0))
    set_cost_bbox: float = _field(5.0, "Matcher weight of the L1 box distance.", bounds=(0.0, 100.0))
    set_cost_giou: float = _field(2.0, "Matcher weight of the GIoU.", bounds=(0.0, 100.0))
    ce_loss_coef: float = _field(1.0, "Loss weight of the classification.", bounds=(0.0, 100.0))
    bbox_loss_coef: float = _field(5.0, "Loss weight of the L1 box loss.", bounds=(0.0, 100.0))
    giou_loss_coef: float = _field(2.0, "Loss weight of the GIoU loss.", bounds=(0.0, 100.0))
    eos_coef: float = _field(
        0.1, "Weight of the no-object class in the softmax classification loss.", bounds=(0.001, 10.0)
    )
    focal_alpha: float = _field(0.25, "Focal loss alpha (sigmoid classifier).", bounds=(0.01, 0.99))
    focal_gamma: float = _field(2.0, "Focal loss gamma (sigmoid classifier).", bounds=(0.0, 10.0))
    varifocal: bool = _field(
        True,
        "Sigmoid classifiers learn IoU-aware scores (varifocal loss: a match's target is its box's IoU); off: focal.",
    )
    dense_loss_coef: float = _field(
        1.0,
        "Fast architecture: weight of the dense head's one-to-many losses against the set loss's; 0 = off.",
        bounds=(0.0, 100.0),
    )
    query_groups: int = _field(
        1,
        "Group DETR: train with this many independent query groups, each matched "
        "one-to-one (more positive samples per step); inference uses the first. 1 = off.",
        bounds=(1, 32),
    )
    denoising_groups: int = _field(
        0,
        "DN-DETR: train with this many groups of noised ground-truth queries that learn to reconstruct "
        "the true boxes and classes (no matching); inference is unchanged. 0 = off.",
        bounds=(0, 32),
    )
    eval_every: int = _field(1, "Evaluate (and maybe keep the model) every N epochs.", bounds=(1, 10000))
    patience: int = _field(
        0, "Stop after this many evaluations without a better mAP; 0 never stops early.", bounds=(0, 10000)
    )
    device: str = _field("auto", "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'.")

    def __post_init__(self) -> None:
        self._check_fields()
        s = self._section
        _check(
            self.max_size > self.image_size,
            s,
            "max_size",
            self.max_size,
            f"must be > image_size={self.image_size} (the longer side's cap; e.g. {self.image_size * 5 // 3})",
        )
        _check(
            self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"),
            s,
            "device",
            self.device,
            "use 'auto', 'cpu', 'cuda' or 'cuda:N'",
        )


#: The tiny configuration used by the quickstart and the tests: learns shapes in minutes on a CPU.
TINY_MODEL = ModelConfig(
    backbone="resnet18",
    backbone_norm="batch",
    hidden_dim=128,
    nheads=8,
    enc_layers=2,
    dec_layers=2,
    dim_feedforward=512,
    num_queries=20,
    dropout=0.0,
)


#: The fast architecture at the size that trains in CPU minutes: ResNet-18, d=128, 1 attention
#: layer over the stride-32 tokens, 3 decoder layers, 100 queries.
FAST_MODEL = ModelConfig(
    architecture="fast",
    backbone="resnet18",
    backbone_norm="batch",
    hidden_dim=128,
    nheads=8,
    enc_layers=1,
    dec_layers=3,
    dim_feedforward=512,
    num_queries=100,
    dropout=0.0,
    classifier="sigmoid",
)
