"""The model's layout equals the official DETR checkpoints (checked without downloading them)."""

import torch

from detr import ModelConfig, build_model
from detr.config import TINY_MODEL
from detr.model import build_model_from_config


def _counts(model):
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def test_r50_state_dict_matches_official_checkpoint_layout():
    model = build_model(91)
    state = model.state_dict()
    assert len(state) == 458
    assert _counts(model) == (41_524_768, 41_302_368)
    assert state["class_embed.weight"].shape == (92, 256)
    assert state["query_embed.weight"].shape == (100, 256)
    assert state["transformer.encoder.layers.0.self_attn.in_proj_weight"].shape == (768, 256)
    assert state["input_proj.weight"].shape == (256, 2048, 1, 1)
    assert state["bbox_embed.layers.2.weight"].shape == (4, 256)
    assert "transformer.decoder.norm.weight" in state
    assert "transformer.encoder.norm.weight" not in state  # post-norm encoder has no final norm
    assert "backbone.0.body.layer4.2.bn3.running_var" in state
    assert not any(k.startswith("backbone.0.body.fc") or k.endswith("num_batches_tracked") for k in state)
    # loading its own state strictly is what loading detr-r50-e632da11.pth does
    build_model(91).load_state_dict(state, strict=True)


def test_r101_layout():
    model = build_model(91, backbone="resnet101")
    assert len(model.state_dict()) == 713
    assert _counts(model)[0] == 60_464_672


def test_forward_shapes_and_aux_outputs():
    model = build_model_from_config(TINY_MODEL.replace(num_classes=3, dec_layers=3))
    images = torch.randn(2, 3, 96, 128)
    mask = torch.zeros(2, 96, 128, dtype=torch.bool)
    mask[1, :, 100:] = True
    model.train()
    out = model(images, mask)
    assert out["pred_logits"].shape == (2, 20, 4)
    assert out["pred_boxes"].shape == (2, 20, 4)
    assert len(out["aux_outputs"]) == 2
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()
    model.eval()
    with torch.no_grad():
        out = model(images, mask)
    assert "aux_outputs" not in out


def test_no_mask_equals_all_valid_mask():
    model = build_model_from_config(TINY_MODEL.replace(num_classes=2)).eval()
    image = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        a = model(image)
        b = model(image, torch.zeros(1, 96, 96, dtype=torch.bool))
    assert torch.allclose(a["pred_logits"], b["pred_logits"], atol=1e-5)
    assert torch.allclose(a["pred_boxes"], b["pred_boxes"], atol=1e-5)


def test_padding_does_not_change_the_position_of_real_pixels():
    from detr.position_encoding import PositionEmbeddingSine

    pe = PositionEmbeddingSine(16)
    mask = torch.zeros(2, 6, 8, dtype=torch.bool)
    mask[1, :, 6:] = True
    mask[1, 4:, :] = True
    pos = pe(mask)
    assert pos.shape == (2, 32, 6, 8)
    # the padded image's valid 4x6 corner is encoded like a 4x6 image without padding
    small = pe(torch.zeros(1, 4, 6, dtype=torch.bool))
    assert torch.allclose(pos[1, :, :4, :6], small[0], atol=1e-5)


def test_frozen_norm_freezes_stem_and_layer1_and_batch_norm_trains_all():
    frozen = build_model(2, backbone="resnet18")
    names = {n for n, p in frozen.named_parameters() if not p.requires_grad}
    assert "backbone.0.body.conv1.weight" in names and "backbone.0.body.layer1.0.conv1.weight" in names
    assert "backbone.0.body.layer2.0.conv1.weight" not in names
    trainable = build_model(2, backbone="resnet18", backbone_norm="batch")
    assert all(p.requires_grad for p in trainable.parameters())
    none = build_model(2, backbone="resnet18", train_backbone=False)
    assert not any(p.requires_grad for n, p in none.named_parameters() if n.startswith("backbone."))


def test_config_round_trip_and_unknown_keys():
    cfg = ModelConfig(num_classes=3, backbone="resnet34")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    import pytest

    from detr.config import ConfigError

    with pytest.raises(ConfigError, match="unknown key 'num_quries' in model config; known keys: .*num_queries"):
        ModelConfig.from_dict({"num_quries": 300})
    with pytest.raises(ConfigError, match="backbone='resnet9'.*resnet18"):
        ModelConfig(backbone="resnet9")
    with pytest.raises(ConfigError, match="dilation=True .*resnet50 or resnet101.*resnet18 cannot dilate"):
        ModelConfig(backbone="resnet18", dilation=True)


def test_folded_frozen_norm_equals_the_plain_resnet_forward():
    for backbone in ("resnet18", "resnet50"):
        model = build_model(2, backbone=backbone).eval()
        resnet = model.backbone[0]
        with torch.no_grad():
            for module in resnet.modules():  # non-trivial frozen statistics
                if hasattr(module, "running_var"):
                    module.running_var.uniform_(0.5, 2.0)
                    module.running_mean.normal_(0, 0.1)
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.normal_(0, 0.1)
            image = torch.randn(1, 3, 96, 128)
            folded, _ = resnet(image, torch.zeros(1, 96, 128, dtype=torch.bool))
            plain = resnet.body(image)["0"]
        # equal up to float rounding, relative to the activations' scale
        assert (folded - plain).abs().max() <= 1e-5 * plain.abs().max()
