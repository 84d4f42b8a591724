"""The fast architecture's dense head: a class score and a box at every cell of every level.

Trained one-to-many (``detr.assigner``), it gives the backbone and neck many positives per
object from the first step, which the decoder's one-to-one matching cannot (Co-DETR: sparse
one-to-one supervision starves the encoder's feature learning). Its best cells also become the
decoder's queries (two-stage, as in Deformable DETR and RT-DETR). Boxes are distances from the
cell centre to the four sides, in strides (FCOS); everything is in normalised coordinates of
the padded batch ("canvas").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvNormAct

#: Score every class starts at, so the many background cells do not swamp the first steps (RetinaNet).
PRIOR_PROBABILITY = 0.01


@dataclass
class DenseOutputs:
    """All cells of all levels, flattened finest level first (N cells).

    ``logits`` [B, N, K]; ``boxes`` [B, N, 4] canvas-normalised (cx, cy, w, h); ``points`` [N, 2]
    cell centres and ``strides`` [N, 2] cell sizes, canvas-normalised (x, y); ``padding`` [B, N]
    True for cells on padding; ``shapes``: (H, W) per level."""

    logits: Tensor
    boxes: Tensor
    points: Tensor
    strides: Tensor
    padding: Tensor
    shapes: list[tuple[int, int]]


class DenseHead(nn.Module):
    def __init__(self, dim: int, num_classes: int, levels: int):
        super().__init__()
        self.class_convs = nn.ModuleList(ConvNormAct(dim, dim, 3) for _ in range(levels))
        self.box_convs = nn.ModuleList(ConvNormAct(dim, dim, 3) for _ in range(levels))
        self.class_pred = nn.ModuleList(nn.Conv2d(dim, num_classes, 1) for _ in range(levels))
        self.box_pred = nn.ModuleList(nn.Conv2d(dim, 4, 1) for _ in range(levels))
        for conv in self.class_pred:
            nn.init.constant_(conv.bias, -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY))
        for conv in self.box_pred:
            nn.init.zeros_(conv.weight)
            nn.init.constant_(conv.bias, 0.5)

    def forward(self, maps: list[Tensor], padding_masks: list[Tensor]) -> DenseOutputs:
        """maps: fused levels [B, C, H_l, W_l]; padding_masks: [B, H_l, W_l] per level."""
        logits, distances, points, strides, shapes = [], [], [], [], []
        for level, x in enumerate(maps):
            h, w = x.shape[-2:]
            logits.append(self.class_pred[level](self.class_convs[level](x)).flatten(2).transpose(1, 2))
            distances.append(self.box_pred[level](self.box_convs[level](x)).flatten(2).transpose(1, 2))
            ys, xs = torch.meshgrid(
                (torch.arange(h, device=x.device, dtype=torch.float32) + 0.5) / h,
                (torch.arange(w, device=x.device, dtype=torch.float32) + 0.5) / w,
                indexing="ij",
            )
            points.append(torch.stack([xs, ys], -1).flatten(0, 1))
            strides.append(torch.tensor([1.0 / w, 1.0 / h], device=x.device).expand(h * w, 2))
            shapes.append((h, w))
        point = torch.cat(points)
        stride = torch.cat(strides)
        ltrb = F.softplus(torch.cat(distances, 1).float()) * stride.repeat(1, 2)
        x0y0 = point - ltrb[..., :2]
        x1y1 = point + ltrb[..., 2:]
        boxes = torch.cat([(x0y0 + x1y1) / 2, x1y1 - x0y0], -1)
        padding = torch.cat([m.flatten(1) for m in padding_masks], 1)
        return DenseOutputs(torch.cat(logits, 1), boxes, point, stride, padding, shapes)
