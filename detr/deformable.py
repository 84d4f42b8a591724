"""Multi-scale deformable attention (Deformable DETR, Zhu et al., 2021) in pure PyTorch.

Each query looks at a few points per head and feature level, placed around its reference box
(offsets are in units of the box's half-size), instead of at every token. That gives
cross-attention the locality DETR's global attention has to learn slowly, at a cost that does
not grow with the image. Sampling is ``F.grid_sample`` (bilinear, zeros outside), so it runs on
every device and exports to ONNX without a compiled operator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MSDeformableAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_levels: int, n_points: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be a multiple of n_heads={n_heads}")
        self.n_heads, self.n_levels, self.n_points = n_heads, n_levels, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Points start on rays in n_heads directions, at 1..n_points times the base distance,
        # with uniform attention over them (Deformable DETR's initialisation).
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid *= torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: Tensor,
        reference_boxes: Tensor,
        value: Tensor,
        shapes: list[tuple[int, int]],
        value_padding: Tensor | None = None,
    ) -> Tensor:
        """query [B, Q, C]; reference_boxes [B, Q, 4] normalised (cx, cy, w, h) of the feature
        maps' extent; value [B, N, C], the levels' tokens flattened in order, ``shapes`` their
        (H, W); value_padding [B, N] True on padding. Returns [B, Q, C]."""
        batch, queries, _ = query.shape
        heads, levels, points = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(value)
        if value_padding is not None:
            value = value.masked_fill(value_padding[..., None], 0.0)
        head_dim = value.shape[-1] // heads
        offsets = self.sampling_offsets(query).view(batch, queries, heads, levels, points, 2).float()
        weights = self.attention_weights(query).view(batch, queries, heads, levels * points).float().softmax(-1)
        ref = reference_boxes.float()[:, :, None, None, None]
        locations = ref[..., :2] + offsets / points * ref[..., 2:] * 0.5
        grids = (2 * locations - 1).permute(0, 2, 1, 3, 4, 5).flatten(0, 1)  # [B*h, Q, L, P, 2]
        sampled = []
        start = 0
        for level, (h, w) in enumerate(shapes):
            level_value = value[:, start : start + h * w].view(batch, h * w, heads, head_dim)
            level_value = level_value.permute(0, 2, 3, 1).reshape(batch * heads, head_dim, h, w)
            grid = grids[:, :, level].to(level_value.dtype)
            sampled.append(F.grid_sample(level_value, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
            start += h * w
        stacked = torch.stack(sampled, -2).flatten(-2)  # [B*h, head_dim, Q, L*P]
        weights = weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points).to(stacked.dtype)
        out = (stacked * weights).sum(-1).view(batch, heads * head_dim, queries).transpose(1, 2)
        return self.output_proj(out)
