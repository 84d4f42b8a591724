"""Sine position encoding of the feature map, as in DETR (Attention Is All You Need, generalised to 2-D)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class PositionEmbeddingSine(nn.Module):
    """Normalised sine/cosine encoding over (y, x) -> ``2 * num_pos_feats`` channels.

    Positions are cumulative sums over the *valid* pixels of the padding mask, so padding
    never shifts the encoding of real pixels. Has no parameters (the official key set has none).
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = scale

    def forward(self, mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """mask: bool [B, H, W], True on padding. Returns [B, 2 * num_pos_feats, H, W]."""
        not_mask = (~mask).to(torch.float32)
        y_embed = not_mask.cumsum(1)
        x_embed = not_mask.cumsum(2)
        eps = 1e-6
        y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
        x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale

        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2).to(dtype)


def box_sine_embedding(boxes: Tensor, num_feats: int = 32, temperature: float = 10000.0) -> Tensor:
    """Sine/cosine encoding of normalised boxes [..., 4] (cx, cy, w, h) -> [..., 4 * num_feats].

    The decoder's query positions and DN-DETR's noised boxes are embedded through this (Conditional
    DETR, DAB-DETR): each coordinate gets ``num_feats // 2`` frequencies of sine and cosine.
    """
    dim_t = torch.arange(num_feats // 2, dtype=torch.float32, device=boxes.device)
    inverse_freqs = 2 * math.pi / temperature ** (2 * dim_t / num_feats)
    angles = boxes.float()[..., None] * inverse_freqs
    return torch.cat([angles.sin(), angles.cos()], -1).flatten(-2)
