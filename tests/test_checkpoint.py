"""Model files, checkpoints and starting weights: safe loading, atomic writes, clear errors."""

import argparse

import pytest
import torch
import torchvision

from detr import CheckpointError, Detector, build_model, load_model_file
from detr.checkpoint import DiskFullError, atomic_save, load_backbone_weights, load_detr_weights, save_model_file
from detr.config import TINY_MODEL
from detr.model import build_model_from_config


def _tiny(num_classes=2):
    return build_model_from_config(TINY_MODEL.replace(num_classes=num_classes))


def test_model_file_round_trip_loads_with_weights_only(tmp_path):
    model = _tiny(2).eval()
    path = tmp_path / "model.pt"
    save_model_file(
        path,
        model,
        labels=["cat", "dog"],
        threshold=0.42,
        metrics={"AP": torch.tensor(0.5)},
        image_size=128,
        max_size=192,
    )
    raw = torch.load(path, weights_only=True)
    assert raw["labels"] == ["cat", "dog"] and raw["threshold"] == pytest.approx(0.42)
    assert raw["metrics"] == {"AP": 0.5} and raw["model_config"]["num_classes"] == 2
    detector = Detector.from_file(path, device="cpu", precision="fp32")
    image = torch.rand(3, 100, 120)
    with torch.no_grad():
        expected = model(detector.preprocess(image)[None])
        got = detector.model(detector.preprocess(image)[None])
    assert torch.equal(expected["pred_logits"], got["pred_logits"])
    assert detector.labels == ["cat", "dog"] and detector.threshold == pytest.approx(0.42)


def test_labels_must_match_the_class_head(tmp_path):
    with pytest.raises(ValueError, match="expected 2 names but got 3"):
        save_model_file(
            tmp_path / "m.pt", _tiny(2), labels=["a", "b", "c"], threshold=0.5, metrics={}, image_size=128, max_size=192
        )


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    atomic_save({"v": 1}, path)

    def full_disk(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(DiskFullError, match="no space left on its disk to write it .* free at least 2 MB.*previous "
                                            "version is kept") as caught:
        atomic_save({"v": 2}, path)
    assert isinstance(caught.value, CheckpointError) and caught.value.needed_mb == 2
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left


@pytest.mark.parametrize(
    "content, message",
    [
        (b"garbage", "cannot load the model file"),
        (None, "not a cvat-detr model file.*--pretrained"),
    ],
)
def test_foreign_files_are_rejected_clearly(tmp_path, content, message):
    path = tmp_path / "x.pt"
    if content is None:
        torch.save({"model": {}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_model_file(path)


def test_official_checkpoint_fine_tunes_with_a_new_class_head(tmp_path):
    official = build_model(
        91, backbone="resnet18", hidden_dim=64, nheads=4, enc_layers=1, dec_layers=1, dim_feedforward=128
    )
    path = tmp_path / "detr-official.pth"
    # The official files store {"model": state_dict, ...} and may carry an argparse.Namespace.
    torch.save({"model": official.state_dict(), "args": argparse.Namespace(lr=1e-4)}, path)
    model = build_model(
        3, backbone="resnet18", hidden_dim=64, nheads=4, enc_layers=1, dec_layers=1, dim_feedforward=128
    )
    report = load_detr_weights(model, str(path))
    assert report.skipped == ["class_embed.bias", "class_embed.weight"]
    assert report.missing == ["class_embed.weight", "class_embed.bias"]
    assert len(report.loaded) == len(official.state_dict()) - 2
    assert torch.equal(model.query_embed.weight, official.query_embed.weight)
    assert "skipped 2" in report.describe()


def test_checkpoint_for_another_architecture_names_the_mismatch(tmp_path):
    path = tmp_path / "r34.pth"
    torch.save(
        {
            "model": build_model(
                91, backbone="resnet34", hidden_dim=64, nheads=4, enc_layers=1, dec_layers=1, dim_feedforward=128
            ).state_dict()
        },
        path,
    )
    model = build_model(
        91, backbone="resnet18", hidden_dim=64, nheads=4, enc_layers=1, dec_layers=1, dim_feedforward=128
    )
    with pytest.raises(CheckpointError, match="different architecture.*backbone=resnet18"):
        load_detr_weights(model, str(path))


def test_imagenet_backbone_weights_load_into_the_backbone(tmp_path):
    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    model = _tiny(2)
    report = load_backbone_weights(model, str(path))
    assert torch.equal(model.backbone[0].body.layer3[0].conv1.weight, resnet.layer3[0].conv1.weight)
    assert not any(k.startswith("backbone.") for k in report.missing)
    with pytest.raises(CheckpointError, match=r"none of its tensors belong to the model.s backbone \(resnet18\)"):
        torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pth")
        load_backbone_weights(model, str(tmp_path / "bad.pth"))


def test_missing_weights_file(tmp_path):
    with pytest.raises(CheckpointError, match="weights file not found"):
        load_detr_weights(_tiny(2), str(tmp_path / "nope.pth"))


def test_written_files_are_readable_by_other_users(tmp_path):
    atomic_save({"v": 1}, tmp_path / "model.pt")
    assert (tmp_path / "model.pt").stat().st_mode & 0o044 == 0o044
