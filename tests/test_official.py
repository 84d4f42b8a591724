"""Official DETR checkpoints become model files that serve COCO names."""

import argparse

import numpy as np
import torch

from detr import Detector, build_model
from detr.checkpoint import save_model_file
from detr.cli import main
from detr.config import FAST_MODEL
from detr.model import build_model_from_config
from detr.official import COCO_CATEGORY_NAMES, COCO_LABELS


def test_import_checkpoint_keeps_the_91_slots_and_never_reports_unused_ids(tmp_path, capsys):
    official = build_model(91)  # the detr-r50-e632da11.pth architecture, random weights
    with torch.no_grad():  # make query 0 predict COCO id 12 (unused) and query 1 "person" (id 1)
        official.class_embed.weight.zero_()
        official.class_embed.bias.fill_(-10.0)
        official.class_embed.bias[12] = 10.0
    src = tmp_path / "detr-r50.pth"
    torch.save({"model": official.state_dict(), "args": argparse.Namespace(lr=1e-4)}, src)
    out = tmp_path / "model.pt"
    assert main(["import-checkpoint", str(src), "--out", str(out)]) == 0
    saved = torch.load(out, weights_only=True)
    assert saved["labels"] == COCO_CATEGORY_NAMES and saved["metrics"]["AP"] == 0.42
    assert len(COCO_LABELS) == 80 and COCO_LABELS[0] == "person" and COCO_LABELS[-1] == "toothbrush"
    detector = Detector.from_file(out, device="cpu")
    assert len(detector.predict(np.zeros((64, 64, 3), np.uint8), threshold=0.0)[0]) == 0  # id 12 is never named
    assert "model file:" in capsys.readouterr().out


def test_import_checkpoint_refuses_a_label_list_of_the_wrong_length(tmp_path, capsys):
    src = tmp_path / "ckpt.pth"
    torch.save({"model": build_model(91).state_dict()}, src)
    (tmp_path / "labels.json").write_text('["a", "b"]')
    assert (
        main(
            ["import-checkpoint", str(src), "--out", str(tmp_path / "m.pt"), "--labels", str(tmp_path / "labels.json")]
        )
        == 1
    )
    assert "91 slots but 2 label names" in capsys.readouterr().err


def test_import_checkpoint_says_a_model_file_of_ours_needs_no_import(tmp_path, capsys):
    model = build_model_from_config(FAST_MODEL.replace(num_classes=2, hidden_dim=32, nheads=4, dim_feedforward=64))
    save_model_file(tmp_path / "fast.pt", model, labels=["a", "b"], threshold=0.5, metrics={}, image_size=64,
                    max_size=96)
    assert main(["import-checkpoint", str(tmp_path / "fast.pt"), "--out", str(tmp_path / "m.pt")]) == 1
    assert "already a cvat-detr model file (architecture 'fast')" in capsys.readouterr().err
