"""The fast-converging DETR: for random-init and ImageNet-backbone starts on small data.

The official DETR learns its features through a handful of one-to-one matches per image,
which is far too sparse a signal to train a backbone from scratch on a few hundred images
(``../shared/reference/fast-convergence.md``). This architecture keeps DETR's set prediction
(Hungarian matching, no NMS) and adds what converges fast, after RT-DETR, Deformable DETR
and Co-DETR:

- multi-scale features: backbone C3-C5, self-attention over the stride-32 tokens only, then
  convolutional fusion down to stride 8 (``detr.neck``);
- a dense head trained one-to-many (``detr.dense_head``, ``detr.assigner``), whose best cells,
  one per 3x3 peak, become the queries: content from the features, reference box from the
  head (two-stage);
- a decoder with multi-scale deformable cross-attention around each query's box
  (``detr.deformable``) that refines the box layer by layer;
- IoU-aware classification (varifocal loss) with a sigmoid head.

``forward`` returns the contract of ``DETR``: ``pred_logits`` [B, Q, K] (sigmoid),
``pred_boxes`` [B, Q, 4] normalised (cx, cy, w, h) of each unpadded image, ``aux_outputs`` in
training; plus ``dense`` (the head's cells, for its loss and its own AP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import MultiScaleBackbone
from .config import ModelConfig
from .deformable import MSDeformableAttention
from .dense_head import PRIOR_PROBABILITY, DenseHead, DenseOutputs
from .layers import MLP
from .neck import HybridEncoder, level_mask
from .position_encoding import PositionEmbeddingSine, box_sine_embedding
from .precision import full_precision

#: Sine features per box coordinate in the query position embedding.
_BOX_SINE_FEATURES = 32


@dataclass
class Encoded:
    """What the decoder attends to: ``tokens`` [B, N, C] (all levels, finest first), the dense
    head's outputs over the same cells, and each image's share of the canvas ``valid_ratio``
    [B, 2] (x, y), which maps canvas-normalised boxes to image-normalised ones; ``padding`` [B, N]
    True on padding tokens (None without padding)."""

    tokens: Tensor
    dense: DenseOutputs
    valid_ratio: Tensor
    padding: Tensor | None
    token_pos: Tensor | None = None  # position of every token, for global cross-attention


class FastDETR(nn.Module):
    def __init__(self, config: ModelConfig, *, train_backbone: bool = True):
        super().__init__()
        self.config = config
        self.num_queries = config.num_queries
        dim, classes = config.hidden_dim, config.num_classes
        self.backbone = MultiScaleBackbone(config.backbone, norm=config.backbone_norm, train=train_backbone)
        levels = config.feature_levels
        self.encoder = HybridEncoder(
            self.backbone.channels[-levels:],
            dim,
            nheads=config.nheads,
            attention_layers=config.enc_layers,
            dim_feedforward=config.dim_feedforward,
            dropout=config.dropout,
        )
        self.dense_head = DenseHead(dim, classes, levels)
        if config.two_stage:
            self.query_proj = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim))
        else:
            self.query_embed = nn.Embedding(config.num_queries, dim)
            self.reference_embed = nn.Embedding(config.num_queries, 4)
            with torch.no_grad():  # reference boxes spread over the image, a tenth of its size
                self.reference_embed.weight[:, :2].uniform_(-2.0, 2.0)
                self.reference_embed.weight[:, 2:].fill_(-2.2)
        self.query_pos = MLP(4 * _BOX_SINE_FEATURES, dim, dim, 2)
        if config.cross_attention == "global":
            self.level_embed = nn.Embedding(levels, dim)
            self.token_position = PositionEmbeddingSine(dim // 2)
        self.decoder = nn.ModuleList(
            DecoderLayer(dim, config.nheads, config.dim_feedforward, config.dropout, config.dec_points, levels,
                         config.cross_attention)
            for _ in range(config.dec_layers)
        )
        self.class_embed = nn.ModuleList(nn.Linear(dim, classes) for _ in range(config.dec_layers))
        self.bbox_embed = nn.ModuleList(MLP(dim, dim, 4, 3) for _ in range(config.dec_layers))
        prior = -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
        for head in self.class_embed:
            nn.init.constant_(head.bias, prior)
        for head in self.bbox_embed:  # layers start by keeping the box they were given
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)

    @property
    def aux_loss(self) -> bool:
        return self.config.aux_loss

    def forward(self, images: Tensor, mask: Tensor | None = None) -> dict:
        """images: float [B, 3, H, W], normalised; mask: bool [B, H, W], True on padding (None = no padding)."""
        encoded = self.encode(images, mask)
        content, boxes = self.select_queries(encoded)
        logits, boxes = self.decode(encoded, content, boxes)
        out = set_outputs(logits, boxes, encoded.valid_ratio, with_aux=self.training and self.aux_loss)
        out["dense"] = encoded
        return out

    def encode(self, images: Tensor, mask: Tensor | None) -> Encoded:
        features = self.encoder(self.backbone(images)[-self.config.feature_levels :], mask)
        batch = images.shape[0]
        masks = [level_mask(mask, f.shape[-2:], batch, images.device) for f in features]
        dense = self.dense_head(features, masks)
        tokens = torch.cat([f.flatten(2).transpose(1, 2) for f in features], 1)
        token_pos = None
        if self.config.cross_attention == "global":
            token_pos = torch.cat(
                [
                    (self.token_position(m, dtype=f.dtype) + self.level_embed.weight[i, :, None, None].to(f.dtype))
                    .flatten(2)
                    .transpose(1, 2)
                    for i, (f, m) in enumerate(zip(features, masks))
                ],
                1,
            )
        if mask is None:
            valid_ratio = torch.ones(batch, 2, device=images.device)
            padding = None
        else:
            valid = ~mask
            valid_ratio = torch.stack(
                [valid[:, 0, :].sum(-1) / mask.shape[-1], valid[:, :, 0].sum(-1) / mask.shape[-2]], -1
            ).float()
            padding = dense.padding
        return Encoded(tokens, dense, valid_ratio, padding, token_pos)

    def select_queries(self, encoded: Encoded) -> tuple[Tensor, Tensor]:
        """The decoder's queries: the best cells of their 3x3 neighbourhoods, top ``num_queries`` by
        the dense head's class score (then other cells, when there are fewer peaks than queries).
        Returns content [B, Q, C] and reference boxes [B, Q, 4] (canvas-normalised, no gradient:
        each decoder layer refines them). Without ``two_stage``:
        the learnt queries and reference boxes, the same for every image."""
        if not self.config.two_stage:
            batch = encoded.tokens.shape[0]
            content = self.query_embed.weight.to(encoded.tokens.dtype).expand(batch, -1, -1)
            return content, self.reference_embed.weight.sigmoid().expand(batch, -1, -1)
        dense = encoded.dense
        scores = dense.logits.detach().float().amax(-1)
        peaks, start = [], 0
        for h, w in dense.shapes:
            level = scores[:, start : start + h * w].view(-1, 1, h, w)
            peaks.append((level == F.max_pool2d(level, 3, 1, 1)).flatten(1))
            start += h * w
        # Peaks first, then (small images have fewer peaks than queries) the other cells by score;
        # padding never. Scores are probabilities' logits, so 1e4 orders every peak first.
        scores = torch.where(torch.cat(peaks, 1), scores, scores - 1e4).masked_fill(dense.padding, float("-inf"))
        index = scores.topk(min(self.num_queries, scores.shape[1]), dim=1).indices
        boxes = dense.boxes.detach().gather(1, index[..., None].expand(-1, -1, 4))
        tokens = encoded.tokens.gather(1, index[..., None].expand(-1, -1, encoded.tokens.shape[-1]))
        return self.query_proj(tokens), boxes

    def decode(
        self, encoded: Encoded, content: Tensor, boxes: Tensor, self_attn_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Run the decoder from queries (content [B, M, C], canvas boxes [B, M, 4]); returns class
        logits [L, B, M, K] and refined canvas boxes [L, B, M, 4] of every layer."""
        reference = boxes.float().clamp(1e-4, 1 - 1e-4)
        target = content
        all_logits, all_boxes = [], []
        for layer, class_head, box_head in zip(self.decoder, self.class_embed, self.bbox_embed):
            position = self.query_pos(box_sine_embedding(reference, _BOX_SINE_FEATURES).to(target.dtype))
            target = layer(target, position, reference, encoded, self_attn_mask)
            with full_precision(target.device):
                refined = (box_head(target.float()) + inverse_sigmoid(reference)).sigmoid()
                all_logits.append(class_head(target.float()))
            all_boxes.append(refined)
            reference = refined.detach()
        return torch.stack(all_logits), torch.stack(all_boxes)

class DecoderLayer(nn.Module):
    """Self-attention among the queries, cross-attention into the tokens, feed-forward (post-norm).

    Cross-attention is deformable (a few points around each query's box) or global (every token,
    with sine positions; the ablation of the locality the deformable one brings)."""

    def __init__(
        self, dim: int, nheads: int, dim_feedforward: int, dropout: float, points: int, levels: int, cross: str
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        if cross == "deformable":
            self.cross_attn: nn.Module = MSDeformableAttention(dim, nheads, levels, points)
        else:
            self.cross_attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, target: Tensor, position: Tensor, reference: Tensor, encoded: Encoded, self_attn_mask: Tensor | None
    ) -> Tensor:
        q = k = target + position
        attended = self.self_attn(q, k, target, attn_mask=self_attn_mask, need_weights=False)[0]
        target = self.norm1(target + self.dropout(attended))
        if isinstance(self.cross_attn, MSDeformableAttention):
            attended = self.cross_attn(
                target + position, reference, encoded.tokens, encoded.dense.shapes, encoded.padding
            )
        else:
            attended = self.cross_attn(
                target + position, encoded.tokens + encoded.token_pos, encoded.tokens,
                key_padding_mask=encoded.padding, need_weights=False,
            )[0]
        target = self.norm2(target + self.dropout(attended))
        return self.norm3(target + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(target))))))


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


def set_outputs(logits: Tensor, boxes: Tensor, valid_ratio: Tensor, *, with_aux: bool) -> dict:
    """Per-layer logits [L, B, M, K] and canvas boxes [L, B, M, 4] -> ``pred_logits``/``pred_boxes``
    of the last layer (boxes normalised by each unpadded image) and ``aux_outputs`` of the others."""
    boxes = boxes / valid_ratio.repeat(1, 2)[:, None, :]
    out: dict = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
    if with_aux:
        out["aux_outputs"] = [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])]
    return out
