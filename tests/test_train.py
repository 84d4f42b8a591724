"""The fit loop: files it writes, events, resume equals uninterrupted, cancellation."""

import json

import pytest
import torch

from detr import TrainingError, fit
from detr.checkpoint import CheckpointError
from detr.train import read_run_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _stop_after(calls: int):
    count = {"n": 0}

    def should_stop() -> bool:
        count["n"] += 1
        return count["n"] > calls

    return should_stop


@pytest.fixture
def cfg(tiny_train):
    return tiny_train.replace(epochs=2)


@pytest.fixture
def model_cfg(tiny_model):
    return tiny_model.replace(dropout=0.1)  # dropout exercises the RNG state in checkpoints


def test_fit_writes_model_checkpoint_metrics_report_and_events(shapes_zip, tmp_path, model_cfg, cfg):
    events = []
    result = fit(shapes_zip, tmp_path / "run", model_config=model_cfg, train_config=cfg, callbacks=[events.append])
    out = tmp_path / "run"
    assert result.status == "completed" and result.epochs_done == 2
    for name in (
        "model.pt",
        "checkpoint.pt",
        "metrics.jsonl",
        "config.json",
        "report/curves.png",
        "report/pr_curves.png",
        "report/confusion_matrix.png",
        "report/samples.png",
        "report/metrics.json",
    ):
        assert (out / name).is_file(), name
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    assert {"AP", "AP50", "train_loss", "lr"} <= lines[0].keys()
    kinds = [e.kind for e in events]
    assert kinds[0] == "train_start" and kinds[-1] == "train_end" and kinds.count("epoch_end") == 2
    steps = [e for e in events if e.kind == "step"]
    assert steps and all(e.total_steps == 10 and e.steps_per_epoch == 5 for e in steps)
    assert events[-1].global_step == 10 and events[-1].status == "completed"
    assert all("loss" in e.losses for e in steps)
    saved = torch.load(out / "model.pt", weights_only=True)
    assert saved["labels"] == ["circle", "square", "triangle"]
    assert 0.0 <= saved["threshold"] <= 1.0 and "AP50" in saved["metrics"]
    assert json.loads((out / "config.json").read_text())["model"]["num_classes"] == 3


def test_resume_after_epoch_one_equals_two_epochs_straight(shapes_zip, tmp_path, model_cfg, cfg):
    fit(shapes_zip, tmp_path / "straight", model_config=model_cfg, train_config=cfg)
    steps_per_epoch = 5
    first = fit(
        shapes_zip,
        tmp_path / "resumed",
        model_config=model_cfg,
        train_config=cfg,
        should_stop=_stop_after(steps_per_epoch),
    )
    assert first.status == "cancelled" and first.epochs_done == 1
    second = fit(shapes_zip, tmp_path / "resumed", resume=True)
    assert second.status == "completed" and second.epochs_done == 2
    _assert_same_weights(_weights(tmp_path / "straight/checkpoint.pt"), _weights(tmp_path / "resumed/checkpoint.pt"))
    lines = (tmp_path / "resumed/metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


def test_cancel_mid_epoch_saves_and_resumes_exactly(shapes_zip, tmp_path, model_cfg, cfg):
    fit(shapes_zip, tmp_path / "straight", model_config=model_cfg, train_config=cfg)
    events = []
    cancelled = fit(
        shapes_zip,
        tmp_path / "run",
        model_config=model_cfg,
        train_config=cfg,
        should_stop=_stop_after(7),
        callbacks=[events.append],
    )
    assert cancelled.status == "cancelled" and events[-1].status == "cancelled"
    ckpt = torch.load(tmp_path / "run/checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 2)
    assert (tmp_path / "run/model.pt").is_file()  # the epoch-1 model is kept
    fit(shapes_zip, tmp_path / "run", resume=True)
    _assert_same_weights(_weights(tmp_path / "straight/checkpoint.pt"), _weights(tmp_path / "run/checkpoint.pt"))


def test_resume_can_extend_epochs(shapes_zip, tmp_path, model_cfg, tiny_train):
    out = tmp_path / "run"
    fit(shapes_zip, out, model_config=model_cfg, train_config=tiny_train)
    _, saved = read_run_config(out)
    result = fit(shapes_zip, out, resume=True, train_config=saved.replace(epochs=2))
    assert result.epochs_done == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_checks_labels_and_needs_a_checkpoint(shapes_zip, tmp_path, model_cfg, tiny_train):
    from detr.synthetic import make_shapes_dataset

    with pytest.raises(CheckpointError, match="training checkpoint not found"):
        fit(shapes_zip, tmp_path / "empty", resume=True)
    out = tmp_path / "run"
    fit(shapes_zip, out, model_config=model_cfg, train_config=tiny_train)
    other = make_shapes_dataset(tmp_path / "other.zip", num_images=6, classes=("cross", "diamond"))
    with pytest.raises(TrainingError, match="labels .* differ from the checkpoint's"):
        fit(other, out, resume=True)


def test_data_without_boxes_is_refused(tmp_path, model_cfg, tiny_train):
    from detr.data import DatasetError
    from detr.synthetic import make_shapes_dataset

    empty = make_shapes_dataset(tmp_path / "empty.zip", num_images=4, objects=(0, 0))
    with pytest.raises(DatasetError, match="no boxes to learn from"):
        fit(empty, tmp_path / "run", model_config=model_cfg, train_config=tiny_train)


def test_group_detr_and_sigmoid_classifier_train_and_export_a_plain_model(shapes_zip, tmp_path, tiny_model, tiny_train):
    from detr import Detector

    model_cfg = tiny_model.replace(classifier="sigmoid")
    cfg = tiny_train.replace(query_groups=3)
    result = fit(shapes_zip, tmp_path / "run", model_config=model_cfg, train_config=cfg)
    assert result.status == "completed"
    saved = torch.load(tmp_path / "run/model.pt", weights_only=True)
    assert not any("extra_queries" in k for k in saved["state_dict"])
    assert saved["state_dict"]["class_embed.weight"].shape[0] == 3  # K outputs, no no-object column
    assert torch.load(tmp_path / "run/checkpoint.pt", weights_only=True)["query_groups"] is not None
    detector = Detector.from_file(tmp_path / "run/model.pt", device="cpu")
    with torch.no_grad():
        outputs = detector.model(torch.rand(1, 3, 64, 64))
    assert outputs["pred_logits"].shape == (1, tiny_model.num_queries, 3)  # one group of queries is served
    assert 1 <= len(detector.predict(torch.rand(3, 64, 64), threshold=0.0)[0]) <= tiny_model.num_queries
