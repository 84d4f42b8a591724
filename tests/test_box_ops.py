import torch

from detr.box_ops import cxcywh_to_xyxy, scale_boxes, xyxy_to_cxcywh


def test_cxcywh_xyxy_round_trip():
    boxes = torch.rand(50, 4) * 0.5
    boxes[:, 2:] += 0.01
    assert torch.allclose(xyxy_to_cxcywh(cxcywh_to_xyxy(boxes)), boxes, atol=1e-6)


def test_cxcywh_is_center_width_height():
    xyxy = cxcywh_to_xyxy(torch.tensor([[0.5, 0.4, 0.2, 0.6]]))
    assert torch.allclose(xyxy, torch.tensor([[0.4, 0.1, 0.6, 0.7]]))


def test_scale_boxes_uses_height_width_order():
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
    sizes = torch.tensor([[100, 200]])  # (h, w)
    assert scale_boxes(boxes, sizes).tolist() == [[[0.0, 0.0, 200.0, 100.0]]]
