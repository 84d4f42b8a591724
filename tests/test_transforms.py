"""Augmentations move boxes together with the pixels they describe."""

import numpy as np
import pytest
import torch
from PIL import Image

from detr.box_ops import cxcywh_to_xyxy
from detr.config import IMAGENET_MEAN, IMAGENET_STD
from detr.data import DetectionDataset, ImageRecord
from detr.transforms import eval_transforms, train_scales, train_transforms


def _record(tmp_path, box, size=(200, 150)):
    img = np.zeros((size[1], size[0], 3), np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = (255, 255, 255)
    path = tmp_path / "img.png"
    Image.fromarray(img).save(path)
    return ImageRecord(1, path, "img.png", size[0], size[1], np.array([box], np.float32), np.array([0]))


def _white_extent(image: torch.Tensor):
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    white = ((image * std + mean).mean(0) > 0.5).nonzero()
    return (
        white[:, 1].min().item(),
        white[:, 0].min().item(),
        white[:, 1].max().item() + 1,
        white[:, 0].max().item() + 1,
    )


@pytest.mark.parametrize("seed", range(8))
def test_train_transforms_keep_boxes_on_their_object(tmp_path, seed):
    record = _record(tmp_path, (60, 40, 140, 110))
    ds = DetectionDataset([record], train_transforms(128, 256))
    torch.manual_seed(seed)
    image, target = ds[0]
    h, w = target["size"].tolist()
    assert image.shape[-2:] == (h, w)
    if len(target["boxes"]) == 0:  # the crop missed the object entirely
        return
    box = (cxcywh_to_xyxy(target["boxes"][0]) * torch.tensor([w, h, w, h])).tolist()
    assert box == pytest.approx(_white_extent(image), abs=2.5)


def test_eval_transform_resizes_shortest_side_with_max_size(tmp_path):
    record = _record(tmp_path, (10, 10, 50, 50), size=(400, 100))
    image, target = DetectionDataset([record], eval_transforms(64, 128))[0]
    assert tuple(image.shape[-2:]) == (32, 128)  # 4:1 capped by max_size
    assert target["orig_size"].tolist() == [100, 400]
    assert target["size"].tolist() == [32, 128]


def test_scales_follow_the_reference_at_800():
    assert train_scales(800) == [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800]
