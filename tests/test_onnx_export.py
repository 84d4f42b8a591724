"""ONNX export: onnxruntime equals PyTorch at any image size, metadata suffices to postprocess, clear errors."""

import contextlib
import functools
import io
import json
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from detr import Detector
from detr.checkpoint import save_model_file
from detr.cli import main
from detr.config import FAST_MODEL, TINY_MODEL
from detr.model import build_model_from_config
from detr.onnx_export import OnnxExportError, check_onnx

LABELS = ["cat", "dog", "bird"]
#: softmax with trainable batch norm (the tiny model as trained from scratch) and sigmoid with
#: frozen batch norm, which the backbone folds into its convolutions at forward time.
#: The fast architecture (sigmoid, trainable norms, deformable attention) as well.
VARIANTS = {
    "softmax": TINY_MODEL.replace(classifier="softmax", backbone_norm="batch"),
    "sigmoid": TINY_MODEL.replace(classifier="sigmoid", backbone_norm="frozen"),
    "fast": FAST_MODEL.replace(hidden_dim=32, nheads=4, dim_feedforward=64, num_queries=TINY_MODEL.num_queries),
}


def _model_file(path, variant, *, seed=0):
    """A tiny model file whose norms and class head are random, so folding and scores are not trivial."""
    torch.manual_seed(seed)
    model = build_model_from_config(VARIANTS[variant].replace(num_classes=len(LABELS)))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
        for head in model.class_embed if isinstance(model.class_embed, nn.ModuleList) else [model.class_embed]:
            head.bias.normal_(0, 1)
    save_model_file(path, model, labels=LABELS, threshold=0.3, metrics={}, image_size=96, max_size=160)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each variant exported by ``detr export-onnx --check``: (model.pt, model.onnx, exit code, stdout)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    folder = tmp_path_factory.mktemp("onnx")
    runs = {}
    for variant in VARIANTS:
        model_path = _model_file(folder / f"{variant}.pt", variant)
        onnx_path = folder / variant / "model.onnx"
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            code = main(["export-onnx", "--model", str(model_path), "--out", str(onnx_path), "--check"])
        runs[variant] = (model_path, onnx_path, code, stdout.getvalue())
    return runs


@functools.cache
def _session(path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_cli_exports_and_its_check_passes(exported, variant):
    _, onnx_path, code, out = exported[variant]
    assert code == 0, out
    assert onnx_path.is_file() and onnx_path.with_name("model.onnx.json").is_file()
    assert "opset 18" in out and "max |onnxruntime - pytorch| scores" in out


@pytest.mark.parametrize("variant", VARIANTS)
def test_onnxruntime_matches_pytorch_at_several_image_sizes(exported, variant):
    model_path, onnx_path, _, _ = exported[variant]
    session = _session(onnx_path)
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    model = Detector.from_file(model_path, device="cpu", precision="fp32").model
    torch.manual_seed(1)
    for shape in [(1, 3, 96, 128), (1, 3, 150, 70), (2, 3, 64, 96)]:
        images = torch.randn(shape)
        with torch.inference_mode():
            expected = model(images)
        logits, boxes = session.run(["pred_logits", "pred_boxes"], {"images": images.numpy()})
        width = len(LABELS) + (1 if VARIANTS[variant].classifier == "softmax" else 0)
        assert logits.shape == (shape[0], TINY_MODEL.num_queries, width)
        torch.testing.assert_close(torch.from_numpy(logits), expected["pred_logits"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(torch.from_numpy(boxes), expected["pred_boxes"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_metadata_is_in_the_graph_and_the_sidecar(exported, variant):
    _, onnx_path, _, _ = exported[variant]
    props = _session(onnx_path).get_modelmeta().custom_metadata_map
    sidecar = json.loads(onnx_path.with_name("model.onnx.json").read_text())
    assert props["format"] == sidecar["format"] == "cvat-detr/onnx"
    assert props["classifier"] == sidecar["classifier"] == VARIANTS[variant].classifier
    assert json.loads(props["labels"]) == sidecar["labels"] == LABELS
    assert json.loads(props["threshold"]) == sidecar["threshold"] == pytest.approx(0.3)
    assert (json.loads(props["image_size"]), json.loads(props["max_size"])) == (96, 160)
    assert json.loads(props["mean"]) == sidecar["mean"] and len(sidecar["std"]) == 3


@pytest.mark.parametrize("variant", VARIANTS)
def test_metadata_alone_postprocesses_onnx_outputs_into_the_detectors_detections(exported, variant):
    """The documented postprocessing, in numpy from the metadata, gives ``Detector.predict``'s boxes."""
    model_path, onnx_path, _, _ = exported[variant]
    session = _session(onnx_path)
    meta = {
        k: v if k in ("format", "classifier") else json.loads(v)
        for k, v in session.get_modelmeta().custom_metadata_map.items()
    }
    detector = Detector.from_file(model_path, device="cpu", precision="fp32")
    image = np.random.default_rng(3).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    [det] = detector.predict(image, threshold=0.0)

    logits, boxes = session.run(None, {"images": detector.preprocess(image)[None].numpy()})
    if meta["classifier"] == "softmax":
        e = np.exp(logits[0] - logits[0].max(-1, keepdims=True))
        prob = (e / e.sum(-1, keepdims=True))[:, :-1]
    else:
        prob = 1 / (1 + np.exp(-logits[0]))
    scores, labels = prob.max(-1), prob.argmax(-1)
    cx, cy, w, h = boxes[0].T
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1) * [200, 120, 200, 120]
    order = _without_duplicates(xyxy, scores, labels, meta["duplicate_iou"])
    np.testing.assert_allclose(scores[order], det.scores, atol=1e-5)
    assert [meta["labels"][i] for i in labels[order]] == det.label_names
    np.testing.assert_allclose(np.clip(xyxy[order], 0, [200, 120, 200, 120]), det.boxes, atol=1e-2)


def _without_duplicates(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float) -> np.ndarray:
    """Indices best first, a box dropped when it overlaps a kept box of its class by more than ``iou``."""
    kept: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        others = [j for j in kept if labels[j] == labels[i]]
        if others:
            lt = np.maximum(boxes[others, :2], boxes[i, :2])
            rb = np.minimum(boxes[others, 2:], boxes[i, 2:])
            inter = np.prod(np.clip(rb - lt, 0, None), -1)
            area = np.prod(boxes[:, 2:] - boxes[:, :2], -1)
            if (inter / (area[others] + area[i] - inter)).max() > iou:
                continue
        kept.append(i)
    return np.array(kept)


def test_check_catches_a_graph_of_other_weights_or_another_head(exported, tmp_path):
    _, onnx_path, _, _ = exported["softmax"]
    other = _model_file(tmp_path / "other.pt", "softmax", seed=1)
    check = check_onnx(onnx_path, other)
    assert not check.ok and max(check.max_diff.values()) > check.tolerance
    with pytest.raises(OnnxExportError, match="pred_logits has shape .* exported from another model"):
        check_onnx(onnx_path, exported["sigmoid"][0])


def _run(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr().err


def test_missing_or_invalid_model_file_is_a_clear_error(tmp_path, capsys):
    pytest.importorskip("onnxscript")
    out = str(tmp_path / "model.onnx")
    code, err = _run(["export-onnx", "--model", str(tmp_path / "absent.pt"), "--out", out], capsys)
    assert code == 1 and "absent.pt: model file not found" in err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    code, err = _run(["export-onnx", "--model", str(tmp_path / "junk.pt"), "--out", out], capsys)
    assert code == 1 and "cannot load the model file" in err
    assert not (tmp_path / "model.onnx").exists()


def test_bad_opset_or_output_folder_is_refused_before_loading(tmp_path, capsys):
    pytest.importorskip("onnxscript")
    model = str(tmp_path / "absent.pt")  # not read: the options are checked first
    code, err = _run(["export-onnx", "--model", model, "--out", str(tmp_path / "m.onnx"), "--opset", "11"], capsys)
    assert code == 1 and "opset 11 is not supported; choose one in [18," in err
    code, err = _run(["export-onnx", "--model", model, "--out", str(tmp_path)], capsys)
    assert code == 1 and "is a folder; pass a file name" in err


@pytest.mark.parametrize(
    ("hidden", "flags"), [("onnxscript", []), ("onnx", []), ("onnxruntime", ["--check"])], ids=lambda v: str(v)
)
def test_missing_onnx_packages_name_the_install_command(hidden, flags, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, hidden, None)  # makes ``import <hidden>`` fail
    code, err = _run(
        ["export-onnx", "--model", str(tmp_path / "m.pt"), "--out", str(tmp_path / "m.onnx"), *flags], capsys
    )
    assert code == 1
    assert f"needs the package(s) {hidden}" in err and "pip install 'cvat-detr[onnx]'" in err
