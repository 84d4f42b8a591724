"""Group DETR (Chen et al., 2022): extra query groups during training only.

One-to-one matching gives each object a single positive query per step, which is why DETR
learns slowly on small data. Group DETR adds G-1 more groups of queries that share the whole
model; self-attention is masked so groups cannot see each other, and each group is matched
one-to-one on its own. Every object then supervises G queries per step. Inference uses the
model's own queries (group 0) unchanged, and the model file never contains the extra groups.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .model import DETR


class QueryGroups(nn.Module):
    def __init__(self, num_groups: int, num_queries: int, hidden_dim: int):
        super().__init__()
        if num_groups < 2:
            raise ValueError(f"Group DETR needs at least 2 groups, got {num_groups}")
        self.num_groups = num_groups
        self.num_queries = num_queries
        self.extra_queries = nn.Embedding((num_groups - 1) * num_queries, hidden_dim)
        self._mask: Tensor | None = None

    def self_attention_mask(self, device: torch.device) -> Tensor:
        """Bool [G*Q, G*Q], True where a query may not attend (another group)."""
        if self._mask is None or self._mask.device != device:
            group = torch.arange(self.num_groups * self.num_queries, device=device) // self.num_queries
            self._mask = group[:, None] != group[None, :]
        return self._mask

    def queries(self, model: DETR) -> Tensor:
        """All groups' queries [G*Q, C], the model's own first."""
        return torch.cat([model.query_embed.weight, self.extra_queries.weight])

    def outputs(self, model: DETR, hs: Tensor) -> dict:
        """Heads over the decoder states [L, B, G*Q, C], with the groups folded into the batch,
        group-major: item ``g * B + b`` is group g on image b (pair it with ``expand_targets``)."""
        layers, batch, _, dim = hs.shape
        hs = hs.view(layers, batch, self.num_groups, self.num_queries, dim).transpose(1, 2)
        return model.heads(hs.reshape(layers, self.num_groups * batch, self.num_queries, dim), with_aux=model.aux_loss)

    def expand_targets(self, targets: list[dict]) -> list[dict]:
        return targets * self.num_groups


class SelectedQueryGroups(nn.Module):
    """Group DETR for the fast architecture's two-stage queries: every group starts from the same
    selected cells and boxes, and a learnt content offset per extra group tells them apart (the
    first group is the model's own queries, unchanged)."""

    def __init__(self, num_groups: int, hidden_dim: int):
        super().__init__()
        if num_groups < 2:
            raise ValueError(f"Group DETR needs at least 2 groups, got {num_groups}")
        self.num_groups = num_groups
        self.offsets = nn.Embedding(num_groups - 1, hidden_dim)

    def expand(self, content: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """content [B, Q, C], boxes [B, Q, 4] -> all groups' [B, G*Q, ...], group-major."""
        extra = content[:, None] + self.offsets.weight[None, :, None, :].to(content.dtype)
        content = torch.cat([content[:, None], extra], 1).flatten(1, 2)
        return content, boxes.repeat(1, self.num_groups, 1)

    def self_attention_mask(self, queries: int, device: torch.device) -> Tensor:
        """Bool [G*Q, G*Q], True where a query may not attend (another group)."""
        group = torch.arange(self.num_groups * queries, device=device) // queries
        return group[:, None] != group[None, :]

    def fold(self, x: Tensor) -> Tensor:
        """[L, B, G*Q, ...] -> [L, G*B, Q, ...]: item ``g * B + b`` is group g on image b."""
        layers, batch, total = x.shape[:3]
        x = x.view(layers, batch, self.num_groups, total // self.num_groups, *x.shape[3:]).transpose(1, 2)
        return x.flatten(1, 2)

    def expand_targets(self, targets: list[dict]) -> list[dict]:
        return targets * self.num_groups
