"""The fast architecture: output contract, coordinates under padding, training-only queries, the
dense head's assignment, deformable attention, model files and starting weights."""

import pytest
import torch
import torchvision

from detr import Detector, fit
from detr.assigner import DenseCriterion
from detr.checkpoint import CheckpointError, load_backbone_weights, load_model_file, save_model_file
from detr.config import FAST_MODEL, TINY_MODEL, ConfigError, ModelConfig, TrainConfig
from detr.deformable import MSDeformableAttention
from detr.dense_head import DenseOutputs
from detr.fast_detr import FastDETR, set_outputs
from detr.model import build_model_from_config
from detr.objectives import build_objective
from detr.synthetic import make_shapes_dataset

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SMALL = FAST_MODEL.replace(num_classes=3, hidden_dim=32, nheads=4, dim_feedforward=64, num_queries=12)
TARGETS = [
    {"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])},
    {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.3]])},
    {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)},
]


def _model(config=SMALL, seed=0):
    torch.manual_seed(seed)
    return build_model_from_config(config)


def _batch(batch=3, height=96, width=128):
    images = torch.randn(batch, 3, height, width)
    mask = torch.zeros(batch, height, width, dtype=torch.bool)
    mask[1, :, 96:] = True  # the second image is 96 x 96
    return images, mask


def test_outputs_follow_the_detr_contract():
    model = _model()
    assert isinstance(model, FastDETR)
    images, mask = _batch()
    out = model.train()(images, mask)
    assert out["pred_logits"].shape == (3, 12, 3)  # sigmoid head: K outputs, no no-object column
    assert out["pred_boxes"].shape == (3, 12, 4)
    assert len(out["aux_outputs"]) == SMALL.dec_layers - 1
    dense = out["dense"].dense
    cells = 12 * 16 + 6 * 8 + 3 * 4  # strides 8, 16 and 32 of a 96 x 128 canvas
    assert dense.logits.shape == (3, cells, 3) and dense.boxes.shape == (3, cells, 4)
    assert dense.padding[1].sum() == 12 * 4 + 6 * 2 + 3 * 1 and not dense.padding[0].any()
    with torch.no_grad():
        out = model.eval()(images, mask)
    assert "aux_outputs" not in out
    assert torch.isfinite(out["pred_boxes"]).all() and (out["pred_boxes"][..., 2:] > 0).all()


def test_boxes_are_normalised_by_each_unpadded_image():
    canvas = torch.tensor([[[0.375, 0.5, 0.75, 1.0]]])  # the left 3/4 of the canvas
    valid_ratio = torch.tensor([[0.75, 1.0]])
    out = set_outputs(torch.zeros(1, 1, 1, 2), canvas[None], valid_ratio, with_aux=False)
    torch.testing.assert_close(out["pred_boxes"], torch.tensor([[[0.5, 0.5, 1.0, 1.0]]]))


def test_queries_come_from_peaks_of_the_dense_scores_and_never_from_padding():
    model = _model().eval()
    images, mask = _batch()
    with torch.no_grad():
        encoded = model.encode(images, mask)
        dense = encoded.dense
        dense.logits[1] = -10.0
        dense.logits[1, dense.padding[1], 0] = 10.0  # the best scores of image 1 are all on padding
        content, boxes = model.select_queries(encoded)
    assert content.shape == (3, 12, SMALL.hidden_dim) and boxes.shape == (3, 12, 4)
    centres = boxes[1, :, 0]
    assert (centres < 0.75).all()  # image 1 covers the left 96 of 128 canvas columns


@pytest.mark.parametrize(
    "options", [{"denoising_groups": 3}, {"query_groups": 2}, {"denoising_groups": 2, "query_groups": 3}]
)
def test_training_only_queries_leave_the_models_own_queries_untouched(options):
    model = _model().eval()
    objective = build_objective(model, TrainConfig(**options))
    images, mask = _batch()
    with torch.no_grad():
        plain = model(images, mask)
        both = objective.forward.eval()(images, mask, TARGETS)
    own = both["pred_logits"][: len(TARGETS)]  # group 0 is the model's own queries
    torch.testing.assert_close(own, plain["pred_logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both["pred_boxes"][: len(TARGETS)], plain["pred_boxes"], atol=1e-5, rtol=1e-5)
    groups = options.get("query_groups", 1)
    assert both["pred_logits"].shape[0] == groups * len(TARGETS)
    if "denoising_groups" in options:
        noisy, targets, _ = both["denoising"]
        assert noisy["pred_logits"].shape == (options["denoising_groups"] * 3, 2, 3)
        assert targets == TARGETS * options["denoising_groups"]
    # every loss is finite and every trainable parameter gets a gradient
    model.train()
    objective.forward.train()
    outputs = objective.forward(images, mask, TARGETS)
    losses, weights = objective.losses(outputs, TARGETS)
    total = sum(losses[k] * w for k, w in weights.items() if k in losses)
    total.backward()
    assert all(torch.isfinite(v) for v in losses.values())
    extras = [p for extra in objective.extras.values() if extra is not None for p in extra.parameters()]
    assert all(p.grad is not None for p in extras)


def _dense(points, strides, boxes, logits):
    return DenseOutputs(logits, boxes, points, strides, torch.zeros(boxes.shape[:2], dtype=torch.bool), [(1, 1)])


def test_assignment_picks_cells_inside_the_object_best_aligned_first():
    # four cells on a row; the object covers the first two, whose predicted boxes fit it well and badly
    points = torch.tensor([[0.125, 0.5], [0.375, 0.5], [0.625, 0.5], [0.875, 0.5]])
    strides = torch.full((4, 2), 0.25)
    boxes = torch.tensor([[[0.25, 0.5, 0.5, 0.5], [0.3, 0.5, 0.3, 0.3], [0.25, 0.5, 0.5, 0.5], [0.9, 0.5, 0.1, 0.1]]])
    logits = torch.zeros(1, 4, 2)
    criterion = DenseCriterion(top_k=1)
    gt_labels, gt_boxes, gt_valid = torch.tensor([[1]]), torch.tensor([[[0.25, 0.5, 0.5, 0.5]]]), torch.tensor([[True]])
    positive, box, label, score = criterion.assign(logits.sigmoid(), _dense(points, strides, boxes, logits),
                                                   gt_labels, gt_boxes, gt_valid)
    # cell 2 predicts a perfect box but lies outside the object: not a candidate
    assert positive.tolist() == [[True, False, False, False]]
    assert label[0, 0] == 1 and torch.allclose(box[0, 0], gt_boxes[0, 0])
    assert score[0, 0] == pytest.approx(1.0)  # normalised to the object's best IoU, which is exact
    criterion = DenseCriterion(top_k=2)
    positive, *_ = criterion.assign(logits.sigmoid(), _dense(points, strides, boxes, logits), gt_labels, gt_boxes,
                                    gt_valid)
    assert positive.tolist() == [[True, True, False, False]]


def test_dense_loss_without_objects_pushes_every_score_down():
    points, strides = torch.tensor([[0.5, 0.5]]), torch.full((1, 2), 1.0)
    logits = torch.zeros(1, 1, 2, requires_grad=True)
    dense = _dense(points, strides, torch.tensor([[[0.5, 0.5, 0.5, 0.5]]]), logits)
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    losses = DenseCriterion()(dense, empty, torch.ones(1, 2))
    assert losses["loss_dense_bbox"] == 0 and losses["loss_dense_giou"] == 0
    losses["loss_dense_cls"].backward()
    assert (logits.grad > 0).all()


def test_deformable_attention_reads_around_the_reference_box():
    torch.manual_seed(0)
    attention = MSDeformableAttention(8, 2, 1, 2)
    with torch.no_grad():
        attention.value_proj.weight.copy_(torch.eye(8))
        attention.output_proj.weight.copy_(torch.eye(8))
    # one feature level of 8 x 8 cells: the value is 1 in the top-left quarter, 0 elsewhere
    value = torch.zeros(1, 8, 8, 8)
    value[..., :4, :4] = 1.0
    tokens = value.flatten(2).transpose(1, 2)
    query = torch.zeros(1, 2, 8)
    boxes = torch.tensor([[[0.25, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2]]])
    out = attention(query, boxes, tokens, [(8, 8)])
    assert out[0, 0].mean() > 0.9 and out[0, 1].abs().max() < 1e-6


def test_model_files_round_trip_and_say_their_architecture(tmp_path):
    model = _model().eval()
    save_model_file(tmp_path / "model.pt", model, labels=["a", "b", "c"], threshold=0.3, metrics={}, image_size=96,
                    max_size=128)
    data = load_model_file(tmp_path / "model.pt")
    assert data["model_config"]["architecture"] == "fast"
    detector = Detector.from_file(tmp_path / "model.pt", device="cpu", precision="fp32")
    assert isinstance(detector.model, FastDETR)
    image = torch.randint(0, 255, (3, 80, 120), dtype=torch.uint8)
    [result] = detector(image, threshold=0.0)
    assert len(result) == SMALL.num_queries and (result.boxes[:, 2] <= 120).all()


def test_files_written_before_architectures_existed_load_as_detr():
    config = ModelConfig.from_dict({k: v for k, v in ModelConfig().to_dict().items() if k != "architecture"})
    assert config.architecture == "detr"
    assert TrainConfig.from_dict({"amp": False}).precision == "fp32"
    assert TrainConfig.from_dict({"amp": True}).precision == "auto"


def test_configuration_errors_name_the_fix():
    with pytest.raises(ConfigError, match="architecture='yolo' is invalid; choose one of detr, fast"):
        ModelConfig(architecture="yolo")
    with pytest.raises(ConfigError, match="backbone='regnet_x_400mf'.*need architecture='fast'"):
        ModelConfig(backbone="regnet_x_400mf")
    with pytest.raises(ConfigError, match="classifier='softmax'.*use 'sigmoid'"):
        FAST_MODEL.replace(classifier="softmax")


@pytest.mark.parametrize("backbone", ["resnet18", "regnet_x_400mf"])
def test_imagenet_weights_load_into_the_multi_scale_backbone(tmp_path, backbone):
    torch.manual_seed(1)
    network = getattr(torchvision.models, backbone)()
    torch.save(network.state_dict(), tmp_path / "imagenet.pth")
    model = _model(SMALL.replace(backbone=backbone, backbone_norm="frozen"))
    report = load_backbone_weights(model, str(tmp_path / "imagenet.pth"))
    assert not [k for k in report.missing if k.startswith("backbone.")]
    first = next(k for k in network.state_dict() if k.endswith("weight"))
    assert torch.equal(model.state_dict()[f"backbone.body.{first}"], network.state_dict()[first])
    other = _model(SMALL.replace(backbone="resnet34" if backbone == "resnet18" else "regnet_x_800mf"))
    with pytest.raises(CheckpointError, match="different architecture|backbone tensors are missing"):
        load_backbone_weights(other, str(tmp_path / "imagenet.pth"))


@pytest.mark.parametrize(
    "model_options, train_options",
    [
        ({"two_stage": False, "cross_attention": "global"}, {"dense_loss_coef": 0.0, "varifocal": False}),
        ({"feature_levels": 1}, {}),
        ({"feature_levels": 2, "cross_attention": "global"}, {"denoising_groups": 2, "query_groups": 2}),
        ({"two_stage": False}, {"denoising_groups": 2}),
    ],
)
def test_every_variant_of_the_ablation_trains_and_predicts(model_options, train_options):
    model = _model(SMALL.replace(**model_options))
    objective = build_objective(model, TrainConfig(**train_options))
    images, mask = _batch(batch=2)
    targets = TARGETS[:2]
    losses, weights = objective.losses(objective.forward(images, mask, targets), targets)
    sum(losses[k] * w for k, w in weights.items() if k in losses).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        out = model.eval()(images, mask)
    assert out["pred_boxes"].shape == (2, 12, 4) and torch.isfinite(out["pred_logits"]).all()


def test_a_fast_model_file_fine_tunes_on_other_labels_keeping_its_architecture(shapes_zip, tmp_path, tiny_train):
    first = fit(shapes_zip, tmp_path / "first", model_config=SMALL, train_config=tiny_train)
    other = make_shapes_dataset(tmp_path / "other.zip", num_images=12, classes=("cross", "diamond"),
                                image_size=(96, 128), seed=5)
    second = fit(other, tmp_path / "second", train_config=tiny_train, pretrained=str(first.model_path))
    config = load_model_file(second.model_path)["model_config"]
    assert config["architecture"] == "fast" and config["num_classes"] == 2
    assert config["hidden_dim"] == SMALL.hidden_dim
    with pytest.raises(CheckpointError, match="architecture 'fast'.*'detr'"):
        fit(other, tmp_path / "third", model_config=TINY_MODEL, train_config=tiny_train,
            pretrained=str(first.model_path))
