"""The benchmark peer: Hugging Face ``DetrForObjectDetection`` at our exact configuration.

Random init, no downloads: the backbone is HF's own ResNet (``ResNetConfig``), and the same
parameters are trainable as in our model (stem and first stage frozen, as DETR does; HF's
name-based freezing would otherwise freeze the whole HF ResNet and make its steps cheaper).
"""

from __future__ import annotations

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_RESNET = {
    "resnet18": dict(depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], layer_type="basic"),
    "resnet34": dict(depths=[3, 4, 6, 3], hidden_sizes=[64, 128, 256, 512], layer_type="basic"),
    "resnet50": dict(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck"),
    "resnet101": dict(depths=[3, 4, 23, 3], hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck"),
}


def build_peer(
    num_classes: int,
    *,
    backbone: str = "resnet50",
    hidden_dim: int = 256,
    nheads: int = 8,
    enc_layers: int = 6,
    dec_layers: int = 6,
    dim_feedforward: int = 2048,
    dropout: float = 0.1,
    num_queries: int = 100,
    aux_loss: bool = True,
) -> torch.nn.Module:
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig

    config = DetrConfig(
        backbone_config=ResNetConfig(out_features=["stage4"], **_RESNET[backbone]),
        num_labels=num_classes,
        num_queries=num_queries,
        d_model=hidden_dim,
        encoder_layers=enc_layers,
        decoder_layers=dec_layers,
        encoder_attention_heads=nheads,
        decoder_attention_heads=nheads,
        encoder_ffn_dim=dim_feedforward,
        decoder_ffn_dim=dim_feedforward,
        dropout=dropout,
        auxiliary_loss=aux_loss,
    )
    model = DetrForObjectDetection(config)
    for name, param in model.named_parameters():
        in_backbone = ".backbone." in name
        frozen_part = "embedder" in name or ".stages.0." in name
        param.requires_grad_(not (in_backbone and frozen_part))
    return model


def peer_targets(targets: list[dict]) -> list[dict]:
    """Our targets (``labels``, ``boxes``) in HF's naming (``class_labels``, ``boxes``)."""
    return [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]
