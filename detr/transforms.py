"""Joint image + box augmentation with ``torchvision.transforms.v2``.

Sizes scale with ``image_size`` the way the reference scales with 800: training samples the
shortest side from multiples of 32 in [0.6, 1.0] x image_size (480..800), and half of the time
first resizes to 0.5/0.625/0.75 x image_size and crops a random 0.48..0.75 x image_size window
(``RandomSizeCrop(384, 600)``). Evaluation resizes the shortest side to ``image_size``.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF
from torchvision.transforms.v2._utils import query_size

from .config import IMAGENET_MEAN, IMAGENET_STD


class RandomSizeCrop(v2.Transform):
    """Crop a window whose height and width are drawn independently in [min_size, max_size]."""

    def __init__(self, min_size: int, max_size: int):
        super().__init__()
        self.min_size = min_size
        self.max_size = max_size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = query_size(flat_inputs)
        h = _randint(min(self.min_size, height), min(height, self.max_size))
        w = _randint(min(self.min_size, width), min(width, self.max_size))
        return {"top": _randint(0, height - h), "left": _randint(0, width - w), "height": h, "width": w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(TF.crop, inpt, **params)


def _randint(low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, ()).item())


def train_scales(image_size: int) -> list[int]:
    low = int(0.6 * image_size)
    scales = [s for s in range(32 * ((low + 31) // 32), image_size + 1, 32)]
    return scales or [image_size]


def train_transforms(
    image_size: int, max_size: int, *, hflip: bool = True, random_crop: bool = True, multi_scale: bool = True
) -> v2.Transform:
    scales = train_scales(image_size) if multi_scale else [image_size]
    resize = v2.RandomShortestSize(scales, max_size=max_size)
    steps: list[v2.Transform] = []
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if random_crop:
        crop_scales = [round(image_size * f) for f in (0.5, 0.625, 0.75)]
        crop = v2.Compose(
            [
                v2.RandomShortestSize(crop_scales),
                RandomSizeCrop(round(0.48 * image_size), round(0.75 * image_size)),
                v2.RandomShortestSize(scales, max_size=max_size),
            ]
        )
        steps.append(v2.RandomChoice([resize, crop]))
    else:
        steps.append(resize)
    steps += [v2.SanitizeBoundingBoxes(min_size=1.0), *_normalize()]
    return v2.Compose(steps)


def eval_transforms(image_size: int, max_size: int) -> v2.Transform:
    return v2.Compose([v2.Resize(image_size, max_size=max_size), *_normalize()])


def _normalize() -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def boxes_tv(boxes: torch.Tensor, height: int, width: int) -> tv_tensors.BoundingBoxes:
    return tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))
