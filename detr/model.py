"""The DETR detector: backbone -> transformer -> class and box heads.

State-dict keys and shapes equal the official checkpoints
(https://github.com/facebookresearch/detr, ``models/detr.py``), so
``detr-r50-e632da11.pth`` loads with ``strict=True`` into ``build_model(91)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .backbone import Backbone, Joiner
from .config import ModelConfig
from .fast_detr import FastDETR
from .layers import MLP
from .position_encoding import PositionEmbeddingSine
from .precision import full_precision
from .transformer import Transformer


class DETR(nn.Module):
    def __init__(self, backbone: Joiner, transformer: Transformer, config: ModelConfig):
        super().__init__()
        hidden_dim = transformer.d_model
        self.config = config
        self.num_queries = config.num_queries
        self.transformer = transformer
        self.class_embed = nn.Linear(hidden_dim, config.class_outputs)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self.query_embed = nn.Embedding(config.num_queries, hidden_dim)
        self.input_proj = nn.Conv2d(backbone.num_channels, hidden_dim, kernel_size=1)
        self.backbone = backbone
        self.aux_loss = config.aux_loss
        if config.classifier == "sigmoid":
            # Focal-loss prior: every class starts at p = 0.01 so the many negatives do not
            # swamp the first steps (RetinaNet, Deformable DETR).
            nn.init.constant_(self.class_embed.bias, -math.log((1 - 0.01) / 0.01))

    def forward(self, images: Tensor, mask: Tensor | None = None) -> dict:
        """images: float [B, 3, H, W], normalised; mask: bool [B, H, W], True on padding (None = no padding).

        Returns ``pred_logits`` [B, Q, K+1] (softmax: last = no-object; sigmoid: [B, Q, K]), ``pred_boxes`` [B, Q, 4] as
        normalised (cx, cy, w, h) of the unpadded image, and in training with ``aux_loss`` the
        same for every earlier decoder layer under ``aux_outputs``.
        """
        hs = self.decode(images, mask)
        return self.heads(hs, with_aux=self.training and self.aux_loss)

    def decode(
        self,
        images: Tensor,
        mask: Tensor | None,
        tgt: Tensor | None = None,
        query_embed: Tensor | None = None,
        tgt_mask: Tensor | None = None,
    ) -> Tensor:
        """Decoder states [L, B, Q, C] for every layer; training extensions pass extra queries."""
        if mask is None:
            mask = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool, device=images.device)
            has_padding = False
        else:
            has_padding = True
        features, small_mask, pos = self.backbone(images, mask)
        src = self.input_proj(features)
        queries = self.query_embed.weight if query_embed is None else query_embed
        return self.transformer(src, small_mask if has_padding else None, queries, pos, tgt=tgt, tgt_mask=tgt_mask)

    def heads(self, hs: Tensor, *, with_aux: bool) -> dict:
        """Class logits and boxes for the last decoder layer (and earlier ones when ``with_aux``)."""
        if not with_aux:
            hs = hs[-1:]
        with full_precision(hs.device):
            logits = self.class_embed(hs.float())
            boxes = self.bbox_embed(hs.float()).sigmoid()
        out: dict = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if with_aux:
            out["aux_outputs"] = [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])]
        return out


def build_model(
    num_classes: int = ModelConfig.num_classes,
    *,
    backbone: str = ModelConfig.backbone,
    dilation: bool = ModelConfig.dilation,
    backbone_norm: str = ModelConfig.backbone_norm,
    hidden_dim: int = ModelConfig.hidden_dim,
    nheads: int = ModelConfig.nheads,
    enc_layers: int = ModelConfig.enc_layers,
    dec_layers: int = ModelConfig.dec_layers,
    dim_feedforward: int = ModelConfig.dim_feedforward,
    dropout: float = ModelConfig.dropout,
    num_queries: int = ModelConfig.num_queries,
    pre_norm: bool = ModelConfig.pre_norm,
    aux_loss: bool = ModelConfig.aux_loss,
    train_backbone: bool = True,
) -> DETR:
    """Build a randomly initialised DETR; defaults are the official DETR-R50 for 91 COCO ids.

    ``train_backbone=False`` freezes the whole ResNet (``lr_backbone = 0`` in training).
    """
    config = ModelConfig(
        num_classes=num_classes,
        backbone=backbone,
        dilation=dilation,
        backbone_norm=backbone_norm,
        hidden_dim=hidden_dim,
        nheads=nheads,
        enc_layers=enc_layers,
        dec_layers=dec_layers,
        dim_feedforward=dim_feedforward,
        dropout=dropout,
        num_queries=num_queries,
        pre_norm=pre_norm,
        aux_loss=aux_loss,
    )
    return build_model_from_config(config, train_backbone=train_backbone)


def build_model_from_config(config: ModelConfig, *, train_backbone: bool = True) -> nn.Module:
    """The model ``config.architecture`` names: ``DETR`` or ``FastDETR``."""
    if config.architecture == "fast":
        return FastDETR(config, train_backbone=train_backbone)
    resnet = Backbone(config.backbone, dilation=config.dilation, norm=config.backbone_norm, train=train_backbone)
    joiner = Joiner(resnet, PositionEmbeddingSine(config.hidden_dim // 2))
    transformer = Transformer(
        d_model=config.hidden_dim,
        nhead=config.nheads,
        num_encoder_layers=config.enc_layers,
        num_decoder_layers=config.dec_layers,
        dim_feedforward=config.dim_feedforward,
        dropout=config.dropout,
        normalize_before=config.pre_norm,
    )
    return DETR(joiner, transformer, config)
