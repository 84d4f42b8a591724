"""Typed, validated configuration for the model and the training recipe.

Every file the project writes stores these as plain JSON dicts (``to_dict``), and
``from_dict`` rejects unknown keys by name, so a typo never passes silently.
CLI flags and trainer job options map onto the same fields: defaults live here only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, TypeVar

ARCHITECTURES = ("detr", "fast")
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
#: Extra backbones of the fast architecture: torchvision ImageNet networks far cheaper than a ResNet-18.
LIGHT_BACKBONES = ("regnet_x_400mf", "regnet_x_800mf")
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


def _field(default: Any, help: str = "") -> Any:
    """A dataclass field whose help text also serves the CLI flag generated from it."""
    return field(default=default, metadata={"help": help})


class ConfigError(ValueError):
    """A configuration value is invalid or unknown."""


class _ConfigBase:
    _section = "config"

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

    num_classes: int = _field(91, "Number of object classes K; the class head has K+1 outputs (last = no-object).")
    architecture: str = _field(
        "detr",
        "'detr': the official DETR (loads the COCO checkpoints); 'fast': the fast-converging DETR for "
        "random-init and ImageNet-backbone starts on small data (multi-scale, dense auxiliary head, "
        "two-stage queries, deformable decoder with box refinement).",
    )
    backbone: str = _field(
        "resnet50",
        "torchvision backbone: resnet18, resnet34, resnet50 or resnet101; the fast architecture also "
        "takes regnet_x_400mf and regnet_x_800mf.",
    )
    dilation: bool = _field(False, "DC5 variant: dilate the last ResNet stage instead of striding it.")
    backbone_norm: str = _field(
        "frozen", "'frozen' batch norm (right for pretrained backbones) or trainable 'batch' norm (random init)."
    )
    hidden_dim: int = _field(256, "Transformer width d.")
    nheads: int = _field(8, "Attention heads.")
    enc_layers: int = _field(6, "Encoder layers.")
    dec_layers: int = _field(6, "Decoder layers.")
    dim_feedforward: int = _field(2048, "Feed-forward width in each transformer layer.")
    dropout: float = _field(0.1, "Dropout in the transformer.")
    num_queries: int = _field(
        100, "Object queries: the most objects one image can get; keep 100 to fine-tune official checkpoints."
    )
    pre_norm: bool = _field(False, "LayerNorm before (not after) attention and feed-forward (detr).")
    dec_points: int = _field(4, "Sampling points per head and feature level in the decoder's cross-attention (fast).")
    feature_levels: int = _field(
        3, "Feature levels of the fast architecture, coarsest kept: 3 = strides 8, 16 and 32; 1 = stride 32 only."
    )
    two_stage: bool = _field(
        True, "Fast: queries start from the dense head's best cells; off: learnt queries and reference boxes."
    )
    cross_attention: str = _field(
        "deformable",
        "Fast: the decoder's cross-attention, 'deformable' (a few points around each query's box) or 'global'.",
    )
    aux_loss: bool = _field(True, "Predict boxes after every decoder layer during training (deep supervision).")
    classifier: str = _field(
        "softmax",
        "'softmax' over K classes + no-object (official DETR; the head has K+1 "
        "outputs) or 'sigmoid' per class with focal loss (K outputs; needs a new class head).",
    )

    def __post_init__(self) -> None:
        s = self._section
        _check(self.num_classes >= 1, s, "num_classes", self.num_classes, "need at least one class")
        _check(
            self.architecture in ARCHITECTURES,
            s,
            "architecture",
            self.architecture,
            f"choose one of {', '.join(ARCHITECTURES)}",
        )
        fast = self.architecture == "fast"
        backbones = BACKBONES + LIGHT_BACKBONES if fast else BACKBONES
        _check(
            self.backbone in backbones,
            s,
            "backbone",
            self.backbone,
            f"choose one of {', '.join(backbones)}"
            + ("" if fast else f" ({', '.join(LIGHT_BACKBONES)} need architecture='fast')"),
        )
        _check(
            self.backbone_norm in ("frozen", "batch"),
            s,
            "backbone_norm",
            self.backbone_norm,
            "choose 'frozen' or 'batch'",
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
        _check(self.enc_layers >= 0, s, "enc_layers", self.enc_layers, "must be >= 0")
        _check(self.dec_layers >= 1, s, "dec_layers", self.dec_layers, "must be >= 1")
        _check(self.dim_feedforward > 0, s, "dim_feedforward", self.dim_feedforward, "must be > 0")
        _check(0.0 <= self.dropout < 1.0, s, "dropout", self.dropout, "must be in [0, 1)")
        _check(self.num_queries >= 1, s, "num_queries", self.num_queries, "must be >= 1")
        _check(
            self.classifier in CLASSIFIERS, s, "classifier", self.classifier, f"choose one of {', '.join(CLASSIFIERS)}"
        )
        _check(1 <= self.dec_points <= 16, s, "dec_points", self.dec_points, "must be in [1, 16]")
        _check(1 <= self.feature_levels <= 3, s, "feature_levels", self.feature_levels, "must be 1, 2 or 3")
        _check(
            self.cross_attention in CROSS_ATTENTIONS,
            s,
            "cross_attention",
            self.cross_attention,
            f"choose one of {', '.join(CROSS_ATTENTIONS)}",
        )
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

    epochs: int = _field(50, "Passes over the training images.")
    batch_size: int = _field(2, "Images per step.")
    lr: float = _field(1e-4, "AdamW learning rate of the transformer and heads.")
    lr_backbone: float = _field(1e-5, "Learning rate of ResNet stages 2-4; 0 freezes the whole backbone.")
    weight_decay: float = _field(1e-4, "AdamW weight decay.")
    schedule: str = _field("step", "'step' (x0.1 at lr_drop of the epochs) or 'cosine'.")
    lr_drop: float = _field(2 / 3, "Fraction of the epochs after which the 'step' schedule drops the learning rate.")
    warmup_steps: int = _field(0, "Steps of linear learning-rate warm-up.")
    clip_max_norm: float = _field(0.1, "Gradient norm clipping; 0 turns it off.")
    precision: str = _field(
        "auto",
        "'auto' (bf16 where the hardware runs it natively: CUDA, or a CPU with AVX512-BF16/AMX; else fp32), "
        "'fp32' or 'bf16'.",
    )
    ema_decay: float = _field(0.0, "Exponential moving average of the weights; 0 turns it off, 0.9998 is typical.")
    seed: int = _field(42, "Seed of shuffling, augmentation and initialisation.")
    num_workers: int = _field(2, "Data loading processes.")
    image_size: int = _field(800, "Shortest side at evaluation; training samples sizes up to this.")
    max_size: int = _field(1333, "Longest side cap.")
    random_crop: bool = _field(True, "Random crops during training, as in DETR.")
    multi_scale: bool = _field(
        True,
        "Train at shortest sides drawn from multiples of 32 in [0.6, 1] x image_size, as in DETR; off = image_size.",
    )
    hflip: bool = _field(True, "Random horizontal flips during training.")
    set_cost_class: float = _field(1.0, "Matcher weight of the class probability.")
    set_cost_bbox: float = _field(5.0, "Matcher weight of the L1 box distance.")
    set_cost_giou: float = _field(2.0, "Matcher weight of the GIoU.")
    ce_loss_coef: float = _field(1.0, "Loss weight of the classification.")
    bbox_loss_coef: float = _field(5.0, "Loss weight of the L1 box loss.")
    giou_loss_coef: float = _field(2.0, "Loss weight of the GIoU loss.")
    eos_coef: float = _field(0.1, "Weight of the no-object class in the softmax classification loss.")
    focal_alpha: float = _field(0.25, "Focal loss alpha (sigmoid classifier).")
    focal_gamma: float = _field(2.0, "Focal loss gamma (sigmoid classifier).")
    varifocal: bool = _field(
        True,
        "Sigmoid classifiers learn IoU-aware scores (varifocal loss: a match's target is its box's IoU); off: focal.",
    )
    dense_loss_coef: float = _field(
        1.0, "Fast architecture: weight of the dense head's one-to-many losses against the set loss's; 0 = off."
    )
    query_groups: int = _field(
        1,
        "Group DETR: train with this many independent query groups, each matched "
        "one-to-one (more positive samples per step); inference uses the first. 1 = off.",
    )
    denoising_groups: int = _field(
        0,
        "DN-DETR: train with this many groups of noised ground-truth queries that learn to reconstruct "
        "the true boxes and classes (no matching); inference is unchanged. 0 = off.",
    )
    eval_every: int = _field(1, "Evaluate (and maybe keep the model) every N epochs.")
    patience: int = _field(0, "Stop after this many evaluations without a better mAP; 0 never stops early.")
    device: str = _field("auto", "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'.")

    def __post_init__(self) -> None:
        s = self._section
        _check(self.epochs >= 1, s, "epochs", self.epochs, "must be >= 1")
        _check(self.batch_size >= 1, s, "batch_size", self.batch_size, "must be >= 1")
        _check(self.lr > 0, s, "lr", self.lr, "must be > 0")
        _check(self.lr_backbone >= 0, s, "lr_backbone", self.lr_backbone, "must be >= 0")
        _check(self.weight_decay >= 0, s, "weight_decay", self.weight_decay, "must be >= 0")
        _check(self.schedule in SCHEDULES, s, "schedule", self.schedule, f"choose one of {', '.join(SCHEDULES)}")
        _check(0 < self.lr_drop <= 1, s, "lr_drop", self.lr_drop, "must be a fraction in (0, 1]")
        _check(self.warmup_steps >= 0, s, "warmup_steps", self.warmup_steps, "must be >= 0")
        _check(self.clip_max_norm >= 0, s, "clip_max_norm", self.clip_max_norm, "must be >= 0 (0 = off)")
        _check(0 <= self.ema_decay < 1, s, "ema_decay", self.ema_decay, "must be in [0, 1)")
        _check(self.num_workers >= 0, s, "num_workers", self.num_workers, "must be >= 0")
        _check(self.precision in PRECISIONS, s, "precision", self.precision, f"choose one of {', '.join(PRECISIONS)}")
        _check(32 <= self.image_size <= 4096, s, "image_size", self.image_size, "must be in [32, 4096] pixels")
        _check(
            self.max_size > self.image_size,
            s,
            "max_size",
            self.max_size,
            f"must be > image_size={self.image_size} (the longer side's cap; e.g. {self.image_size * 5 // 3})",
        )
        _check(self.eos_coef > 0, s, "eos_coef", self.eos_coef, "must be > 0")
        _check(0 < self.focal_alpha < 1, s, "focal_alpha", self.focal_alpha, "must be in (0, 1)")
        _check(self.focal_gamma >= 0, s, "focal_gamma", self.focal_gamma, "must be >= 0")
        _check(self.dense_loss_coef >= 0, s, "dense_loss_coef", self.dense_loss_coef, "must be >= 0 (0 = off)")
        _check(1 <= self.query_groups <= 32, s, "query_groups", self.query_groups, "must be in [1, 32]")
        _check(0 <= self.denoising_groups <= 32, s, "denoising_groups", self.denoising_groups, "must be in [0, 32]")
        _check(self.eval_every >= 1, s, "eval_every", self.eval_every, "must be >= 1")
        _check(self.patience >= 0, s, "patience", self.patience, "must be >= 0")
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
