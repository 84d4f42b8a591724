"""Models with known outputs, for testing what is built around a model."""

from __future__ import annotations

from typing import Sequence

import torch

from detr.config import TINY_MODEL
from detr.model import DETR, build_model_from_config


def constant_model(box_cxcywh: Sequence[float], class_logits: Sequence[float]) -> DETR:
    """A tiny model with one query that predicts one box (normalised cx, cy, w, h) and fixed class
    logits (the last one is no-object), whatever the image is."""
    model = build_model_from_config(TINY_MODEL.replace(num_classes=len(class_logits) - 1, num_queries=1))
    with torch.no_grad():
        model.class_embed.weight.zero_()
        model.class_embed.bias.copy_(torch.tensor(class_logits))
        last = model.bbox_embed.layers[-1]
        last.weight.zero_()
        last.bias.copy_(torch.logit(torch.tensor(box_cxcywh)))
    return model
