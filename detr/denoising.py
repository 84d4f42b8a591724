"""Denoising queries (DN-DETR, Li et al., 2022): training only.

Hungarian matching is unstable early in training: a query's target changes from step to step,
so its box regression has nothing steady to learn. DN-DETR adds queries built from the ground
truth with noise on the boxes (shifted centres, scaled sides) and on the labels, and asks the
decoder to reconstruct the true box and class. Their target is known, so they bypass the matcher
and give every object a stable, easy positive from the first step.

Here the noised label becomes the query's content (an embedding) and the noised box its
position (an MLP over a sine encoding), in place of the zero content and learnt position of
DETR's own queries. ``num_groups`` noisy copies of the ground truth are made per step;
self-attention is masked so that DETR's queries never see them and each copy sees only itself,
so inference is unchanged and the model file never contains these parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .layers import MLP
from .model import DETR
from .position_encoding import box_sine_embedding

#: DN-DETR's defaults: centres move by up to 0.4 of half a side, sides scale by 1 +- 0.4;
#: a fifth of the labels are replaced by a random class.
BOX_NOISE = 0.4
LABEL_NOISE = 0.2
_SINE_FEATURES = 32  # per box coordinate (sin and cos of 16 frequencies)


@dataclass
class DenoisingBatch:
    """One step's denoising queries: content [B, N, C], noised boxes [B, N, 4] (normalised
    cxcywh of each image), their position embedding [B, N, C] (None when the decoder embeds boxes
    itself), the self-attention mask over all queries [B * heads, M + N, M + N] (True = may not
    attend), and what they must reconstruct, with the groups folded into the batch (item ``g * B + b``)."""

    content: Tensor
    boxes: Tensor
    position: Tensor | None
    attention_mask: Tensor
    targets: list[dict]
    indices: list[list[tuple[np.ndarray, np.ndarray]]]
    per_group: int


class DenoisingQueries(nn.Module):
    """``position=False`` leaves the noised boxes' embedding to the decoder (the fast
    architecture embeds every query's reference box itself)."""

    def __init__(self, num_groups: int, num_classes: int, hidden_dim: int, *, position: bool = True):
        super().__init__()
        if num_groups < 1:
            raise ValueError(f"denoising needs at least 1 group, got {num_groups}")
        self.num_groups = num_groups
        self.num_classes = num_classes
        self.label_embed = nn.Embedding(num_classes, hidden_dim)
        self.box_embed = MLP(4 * _SINE_FEATURES, hidden_dim, hidden_dim, 2) if position else None

    def prepare(
        self, targets: list[dict], matching_queries: int, matching_mask: Tensor | None, nheads: int, num_layers: int
    ) -> DenoisingBatch:
        """Noisy queries for a batch whose targets are on the device; ``matching_mask`` is the
        [M, M] mask of DETR's own queries (Group DETR's) or None."""
        device = self.label_embed.weight.device
        batch, groups = len(targets), self.num_groups
        counts = [len(t["labels"]) for t in targets]
        per_group = max(1, max(counts, default=0))  # at least one (padding) query keeps every parameter in use
        labels = torch.zeros(batch, per_group, dtype=torch.long, device=device)
        boxes = torch.full((batch, per_group, 4), 0.5, device=device)
        valid = torch.zeros(batch, per_group, dtype=torch.bool, device=device)
        for b, t in enumerate(targets):
            labels[b, : counts[b]] = t["labels"]
            boxes[b, : counts[b]] = t["boxes"].to(boxes.dtype)
            valid[b, : counts[b]] = True
        labels = labels.repeat(1, groups)  # [B, G*T], group-major within the image
        boxes = boxes.repeat(1, groups, 1)
        valid = valid.repeat(1, groups)
        labels, boxes = self._noisy(labels, boxes)

        content = self.label_embed(labels)
        position = self.box_embed(box_sine_embedding(boxes, _SINE_FEATURES)) if self.box_embed is not None else None
        mask = self._attention_mask(matching_queries, matching_mask, valid, per_group).repeat_interleave(nheads, 0)
        indices_per_item = [(np.arange(n), np.arange(n)) for n in counts] * groups
        return DenoisingBatch(
            content, boxes, position, mask, targets * groups, [indices_per_item] * num_layers, per_group
        )

    def outputs(self, model: DETR, hs: Tensor, batch: DenoisingBatch) -> dict:
        """Heads over the denoising part of the decoder states [L, B, G*T, C], groups folded into the batch."""
        layers, size, _, dim = hs.shape
        hs = hs.view(layers, size, self.num_groups, batch.per_group, dim).transpose(1, 2)
        return model.heads(hs.reshape(layers, self.num_groups * size, batch.per_group, dim), with_aux=model.aux_loss)

    def _noisy(self, labels: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        flip = torch.rand(labels.shape, device=labels.device) < LABEL_NOISE
        labels = torch.where(flip, torch.randint_like(labels, self.num_classes), labels)
        centre, size = boxes[..., :2], boxes[..., 2:]
        centre = centre + (torch.rand_like(centre) * 2 - 1) * size / 2 * BOX_NOISE
        size = size * (1 + (torch.rand_like(size) * 2 - 1) * BOX_NOISE)
        return labels, torch.cat([centre, size], -1).clamp(0.0, 1.0)

    def _attention_mask(
        self, matching: int, matching_mask: Tensor | None, valid: Tensor, per_group: int
    ) -> Tensor:
        """[B, M + N, M + N]: DETR's queries keep their own mask and never see the noisy ones;
        a noisy query sees the real queries of its own group only (and always itself)."""
        batch, noisy = valid.shape
        device = valid.device
        total = matching + noisy
        mask = torch.ones(batch, total, total, dtype=torch.bool, device=device)
        mask[:, :matching, :matching] = matching_mask if matching_mask is not None else False
        group = torch.arange(noisy, device=device) // per_group
        same_group = group[:, None] == group[None, :]
        mask[:, matching:, matching:] = ~(same_group[None] & valid[:, None, :])
        diagonal = torch.arange(total, device=device)
        mask[:, diagonal, diagonal] = False
        return mask
