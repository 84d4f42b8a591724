"""Box formats in one place.

- ``xyxy``: absolute or normalised corners (x0, y0, x1, y1), what COCO eval, CVAT and drawing use.
- ``cxcywh``: (center_x, center_y, width, height) normalised to [0, 1] by the unpadded image
  size, what the model predicts and the losses compare.
- ``xywh``: COCO's absolute (x, y, width, height).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert, box_iou, generalized_box_iou

__all__ = ["box_convert", "box_iou", "generalized_box_iou", "cxcywh_to_xyxy", "xyxy_to_cxcywh", "scale_boxes"]


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    return box_convert(boxes, "cxcywh", "xyxy")


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    return box_convert(boxes, "xyxy", "cxcywh")


def scale_boxes(boxes: Tensor, sizes: Tensor) -> Tensor:
    """Scale normalised boxes [..., N, 4] by image sizes [..., 2] given as (h, w)."""
    h, w = sizes.unbind(-1)
    scale = torch.stack([w, h, w, h], dim=-1).to(boxes.dtype)
    return boxes * scale.unsqueeze(-2)
