"""The fast architecture's neck: RT-DETR's hybrid encoder, made light for CPUs.

Self-attention runs on the stride-32 tokens only (few, and where global context pays); the
levels are then fused by convolutions, top-down (FPN) and bottom-up (PAN), down to stride 8,
where small objects still cover a cell (Lv et al., 2023, "DETRs Beat YOLOs on Real-time Object
Detection"; Lin et al., 2017; Liu et al., 2018).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConvNormAct
from .position_encoding import PositionEmbeddingSine
from .transformer import TransformerEncoderLayer


class Fusion(nn.Module):
    """Two maps of one size, concatenated, squeezed to ``dim`` channels and refined by a residual 3x3."""

    def __init__(self, dim: int):
        super().__init__()
        self.squeeze = ConvNormAct(2 * dim, dim, 1)
        self.refine = ConvNormAct(dim, dim, 3)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        x = self.squeeze(torch.cat([a, b], 1))
        return x + self.refine(x)


class HybridEncoder(nn.Module):
    def __init__(
        self,
        in_channels: tuple[int, ...],
        dim: int,
        *,
        nheads: int,
        attention_layers: int,
        dim_feedforward: int,
        dropout: float,
    ):
        super().__init__()
        levels = len(in_channels)
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 1, bias=False), nn.BatchNorm2d(dim)) for c in in_channels
        )
        self.attention = nn.ModuleList(
            TransformerEncoderLayer(dim, nheads, dim_feedforward, dropout, normalize_before=False)
            for _ in range(attention_layers)
        )
        self.position = PositionEmbeddingSine(dim // 2)
        self.lateral = nn.ModuleList(ConvNormAct(dim, dim, 1) for _ in range(levels - 1))
        self.top_down = nn.ModuleList(Fusion(dim) for _ in range(levels - 1))
        self.downsample = nn.ModuleList(ConvNormAct(dim, dim, 3, stride=2) for _ in range(levels - 1))
        self.bottom_up = nn.ModuleList(Fusion(dim) for _ in range(levels - 1))

    def forward(self, features: list[Tensor], mask: Tensor | None) -> list[Tensor]:
        """features: backbone maps, finest first; mask [B, H, W] True on padding, or None.
        Returns fused maps [B, dim, H_l, W_l] for the same levels."""
        maps = [proj(f) for proj, f in zip(self.input_proj, features)]
        if self.attention:
            top = maps[-1]
            batch, dim, h, w = top.shape
            small = level_mask(mask, (h, w), batch, top.device)
            pos = self.position(small, dtype=top.dtype).flatten(2).permute(2, 0, 1)
            tokens = top.flatten(2).permute(2, 0, 1)
            padding = small.flatten(1) if mask is not None else None
            for layer in self.attention:
                tokens = layer(tokens, key_padding_mask=padding, pos=pos)
            maps[-1] = tokens.permute(1, 2, 0).reshape(batch, dim, h, w)
        # top-down: coarse context into the finer maps
        inner = [maps[-1]]
        for i in range(len(maps) - 2, -1, -1):
            coarse = self.lateral[i](inner[0])
            inner[0] = coarse
            up = F.interpolate(coarse, size=maps[i].shape[-2:], mode="nearest")
            inner.insert(0, self.top_down[i](up, maps[i]))
        # bottom-up: fine detail back into the coarser maps
        outs = [inner[0]]
        for i in range(len(maps) - 1):
            down = self.downsample[i](outs[-1])
            if down.shape[-2:] != inner[i + 1].shape[-2:]:
                down = F.interpolate(down, size=inner[i + 1].shape[-2:], mode="nearest")
            outs.append(self.bottom_up[i](down, inner[i + 1]))
        return outs


def level_mask(mask: Tensor | None, size: tuple[int, int], batch: int, device: torch.device) -> Tensor:
    """The padding mask at a feature map's size (all False without padding)."""
    if mask is None:
        return torch.zeros(batch, *size, dtype=torch.bool, device=device)
    return F.interpolate(mask[None].float(), size=size)[0].to(torch.bool)
