"""Backbones from torchvision: the official DETR's ResNet joined with the position encoding, and
the multi-scale feature extractor of the fast architecture.

Module names of DETR's reproduce the official checkpoints: ``backbone.0.body.<resnet layers>`` for
the ResNet and ``backbone.1`` for the (parameter-free) sine encoding. The multi-scale one keeps
torchvision's own names under ``backbone.body.``, so ImageNet weights load by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

from .position_encoding import PositionEmbeddingSine

#: Parameters outside these stages (stem and layer1) stay frozen when fine-tuning, as in DETR
#: and Faster R-CNN (facebookresearch/detr#236).
TRAINABLE_STAGES = ("layer2", "layer3", "layer4")

#: Per torchvision network: the nodes giving strides 8, 16 and 32, and their channels.
MULTI_SCALE_NODES: dict[str, tuple[tuple[str, str, str], tuple[int, int, int]]] = {
    "resnet18": (("layer2", "layer3", "layer4"), (128, 256, 512)),
    "resnet34": (("layer2", "layer3", "layer4"), (128, 256, 512)),
    "resnet50": (("layer2", "layer3", "layer4"), (512, 1024, 2048)),
    "resnet101": (("layer2", "layer3", "layer4"), (512, 1024, 2048)),
    "regnet_x_400mf": (("trunk_output.block2", "trunk_output.block3", "trunk_output.block4"), (64, 160, 400)),
    "regnet_x_800mf": (("trunk_output.block2", "trunk_output.block3", "trunk_output.block4"), (128, 288, 672)),
}


class Backbone(nn.Module):
    """A torchvision ResNet truncated after ``layer4``; returns the stride-32 (16 with dilation) map."""

    def __init__(self, name: str, *, dilation: bool = False, norm: str = "frozen", train: bool = True):
        super().__init__()
        norm_layer = FrozenBatchNorm2d if norm == "frozen" else nn.BatchNorm2d
        resnet = getattr(torchvision.models, name)(
            weights=None, replace_stride_with_dilation=[False, False, dilation], norm_layer=norm_layer
        )
        for param_name, param in resnet.named_parameters():
            # A pretrained stem and layer1 stay frozen; a randomly initialised backbone
            # (trainable norm) must learn every stage.
            frozen_stem = norm == "frozen" and not param_name.startswith(TRAINABLE_STAGES)
            if not train or frozen_stem:
                param.requires_grad_(False)
        self.body = IntermediateLayerGetter(resnet, return_layers={"layer4": "0"})
        self.num_channels = 512 if name in ("resnet18", "resnet34") else 2048
        self.fold_norm = norm == "frozen"

    def forward(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        features = _resnet_folded(self.body, images) if self.fold_norm else self.body(images)["0"]
        small_mask = F.interpolate(mask[None].float(), size=features.shape[-2:]).to(torch.bool)[0]
        return features, small_mask


def _conv_frozen_bn(x: Tensor, conv: nn.Conv2d, bn: FrozenBatchNorm2d) -> Tensor:
    """``bn(conv(x))`` with the frozen affine folded into the convolution's weights and bias.

    Scaling the (small) weight tensor instead of the (large) activation saves two passes over
    every feature map in the forward and one in the backward; gradients still reach the
    convolution's weights through the scaling. Same result as the unfolded layers.
    """
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
    bias = bn.bias - bn.running_mean * scale
    return F.conv2d(
        x, conv.weight * scale.view(-1, 1, 1, 1), bias, conv.stride, conv.padding, conv.dilation, conv.groups
    )


def _block(block: nn.Module, x: Tensor) -> Tensor:
    """A torchvision BasicBlock or Bottleneck with frozen norms folded."""
    out = F.relu(_conv_frozen_bn(x, block.conv1, block.bn1))
    if hasattr(block, "conv3"):
        out = F.relu(_conv_frozen_bn(out, block.conv2, block.bn2))
        out = _conv_frozen_bn(out, block.conv3, block.bn3)
    else:
        out = _conv_frozen_bn(out, block.conv2, block.bn2)
    identity = x if block.downsample is None else _conv_frozen_bn(x, block.downsample[0], block.downsample[1])
    return F.relu(out + identity)


def _resnet_folded(body: IntermediateLayerGetter, x: Tensor) -> Tensor:
    """The ResNet forward of ``body`` (stem, layer1-4) using ``_conv_frozen_bn``."""
    x = body.maxpool(F.relu(_conv_frozen_bn(x, body.conv1, body.bn1)))
    for stage in (body.layer1, body.layer2, body.layer3, body.layer4):
        for block in stage:
            x = _block(block, x)
    return x


class Joiner(nn.Sequential):
    """``backbone.0`` = ResNet, ``backbone.1`` = position encoding (the official layout)."""

    def __init__(self, backbone: Backbone, position_embedding: PositionEmbeddingSine):
        super().__init__(backbone, position_embedding)
        self.num_channels = backbone.num_channels

    def forward(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        features, small_mask = self[0](images, mask)
        pos = self[1](small_mask, dtype=features.dtype)
        return features, small_mask, pos


class MultiScaleBackbone(nn.Module):
    """A torchvision ImageNet network cut into its stride-8, 16 and 32 feature maps (C3, C4, C5).

    ``norm='frozen'`` suits ImageNet weights (the stem and first stage stay frozen too, as in
    DETR); ``'batch'`` trains every layer with batch norm, as a random init needs.
    """

    def __init__(self, name: str, *, norm: str = "batch", train: bool = True):
        super().__init__()
        nodes, channels = MULTI_SCALE_NODES[name]
        norm_layer = FrozenBatchNorm2d if norm == "frozen" else nn.BatchNorm2d
        net = getattr(torchvision.models, name)(weights=None, norm_layer=norm_layer)
        self.body = create_feature_extractor(net, {node: str(i) for i, node in enumerate(nodes)})
        self.frozen_prefixes = _frozen_prefixes(name) if norm == "frozen" else ()
        for param_name, param in self.body.named_parameters():
            if not train or param_name.startswith(self.frozen_prefixes):
                param.requires_grad_(False)
        self.channels = channels

    def forward(self, images: Tensor) -> list[Tensor]:
        features = self.body(images)
        return [features[str(i)] for i in range(len(features))]


def _frozen_prefixes(name: str) -> tuple[str, ...]:
    """Stem and first stage: generic edge filters that small data should not move."""
    if name.startswith("resnet"):
        return ("conv1.", "bn1.", "layer1.")
    return ("stem.", "trunk_output.block1.")
