"""One model line per task, whichever path trains: ``cvat-detr train --local`` and the trainer function
register ``task-<id>-v<n>`` with the same card, publish under the same name pattern, and weights
``previous`` continues the newest model of either."""

from __future__ import annotations

import errno
import io
import json
import signal
from pathlib import Path

import pytest

from cvat_plugin import cli
from cvat_plugin.cli import exits
from cvat_plugin.home.layout import DetrHome, InvalidId, new_id, source_name
from cvat_plugin.home.models import ModelStore, TrainedModel
from cvat_plugin.nuclio.publish import detector_config, display_name, function_name
from detr import load_model_file
from tests.fakes.cvat_tasks import add_synthetic_task
from tests.fakes.trained_models import base_config
from tests.test_trainer_function import TINY_OPTIONS, Trainer

LABELS = [{"name": "circle", "id": 71}, {"name": "square", "id": 9}]
#: One quick epoch of the tiny model on the task's 64x96 frames.
TINY_FLAGS = ["--model-preset", "tiny", "--epochs", "1", "--batch-size", "4", "--image-size", "64", "--max-size", "96",
              "--num-workers", "0", "--device", "cpu", "--lr-backbone", "0", "--precision", "fp32"]

pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    for name in ("CVAT_URL", "CVAT_ACCESS_TOKEN", "CVAT_TOKEN", "CVAT_USERNAME", "CVAT_PASSWORD", "DETR_TRAINER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DETR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DETR_WEIGHTS", str(tmp_path / "no-weights"))
    return tmp_path / "home"


@pytest.fixture
def alice(fake_cvat):
    return fake_cvat.add_user("alice", "alice-password")


@pytest.fixture
def task(fake_cvat, alice, tmp_path):
    return add_synthetic_task(fake_cvat, alice, tmp_path / "frames", labels=LABELS, num_images=8, seed=3,
                              image_size=(64, 96))


@pytest.fixture
def connection(fake_cvat, alice) -> list[str]:
    return ["--url", fake_cvat.url, "--token", alice.token, "--poll-interval", "0.001", "--retries", "1"]


def cvat_detr(*argv: str, quiet: bool = True) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = cli.main([*(["--quiet"] if quiet else []), *argv], stdout=stdout, stderr=stderr)
    return code, stdout.getvalue(), stderr.getvalue()


def card(home: Path, model_id: str) -> dict:
    return json.loads((home / "models" / model_id / "model.json").read_text())


def test_local_and_trainer_models_share_one_line_one_card_and_one_publish_name(home, task, connection):
    # 1. Trained here, as a user runs it (no --quiet): the progress bar shows on stderr.
    code, out, err = cvat_detr("train", "--task", str(task.id), "--local", "--weights", "scratch", *TINY_FLAGS,
                               *connection, quiet=False)
    assert code == exits.EXIT_OK, err
    line = f"task-{task.id}"
    assert f"Model: {home / 'models' / f'{line}-v1' / 'model.pt'}" in out
    assert f"cvat-detr publish {line}-v1" in out
    assert "Training: 100%" in err
    local = card(home, f"{line}-v1")
    assert (home / "runs" / local["run_id"] / "checkpoint.pt").is_file()

    # 2. Trained by the trainer function on the same training set, continuing the local model.
    trainer = Trainer(home)
    try:
        job = trainer.submit(task_id=task.id, dataset_id=local["dataset_id"],
                             options={**TINY_OPTIONS, "weights": "previous"})
        done = trainer.wait_final(job["id"])
    finally:
        trainer.runner.terminate(30)
    assert done["state"] == "succeeded", done["error"]
    assert done["model_id"] == f"{line}-v2"
    remote = card(home, f"{line}-v2")
    assert remote["pretrained"] == str(home / "models" / f"{line}-v1" / "model.pt")

    # 3. Trained here again with --weights previous: it continues the trainer's model.
    code, out, err = cvat_detr("train", "--task", str(task.id), "--local", "--weights", "previous", *TINY_FLAGS,
                               *connection)
    assert code == exits.EXIT_OK, err
    again = card(home, f"{line}-v3")
    assert again["pretrained"] == str(home / "models" / f"{line}-v2" / "model.pt")

    # One card: the same fields, the same labels with their CVAT ids, a version counted in the line.
    cards = [local, remote, again]
    assert set(local) == set(remote) == set(again)
    for version, each in enumerate(cards, start=1):
        assert (each["id"], each["version"], each["task_id"]) == (f"{line}-v{version}", version, task.id)
        assert each["labels"] == [{"id": 71, "name": "circle"}, {"id": 9, "name": "square"}]
        assert each["task_name"] == task.name and each["dataset_id"].startswith(f"{line}-")
        assert each["config"]["model"]["num_classes"] == 2 and set(each["metrics"]) >= {"AP", "AP50"}
    assert [each["options"]["weights"] for each in cards] == ["scratch", "previous", "previous"]
    assert local["command"].startswith(f"cvat-detr train --task {task.id} --local") and "***" in local["command"]
    assert remote["command"] is None and remote["run_id"] == job["id"]

    # One publish name pattern, with the model's real version.
    store = ModelStore(home)
    base = base_config()
    base["spec"]["image"] = "cvat.detr.detector:latest"  # as the dashboard reports a built base function
    for version in (1, 2, 3):
        entry = store.entry(f"{line}-v{version}")
        config = detector_config(entry, load_model_file(entry.model_path), base,
                                 name=function_name(entry), display=display_name(entry, task.name))
        assert config["metadata"]["name"] == f"detr-{line}-v{version}"
        assert config["metadata"]["annotations"]["version"] == str(version)
        assert config["metadata"]["annotations"]["name"].startswith(f"DETR · {task.name} v{version} · mAP ")


@pytest.mark.parametrize("argv, message", [
    (("--weights", "imagenet21k"),
     "argument --weights: option 'weights' must be one of coco, imagenet, scratch, previous, got 'imagenet21k'"),
    (("--weights", "previous"), "weights 'previous': task {task} has no trained model yet"),
    (("--weights", "coco"), "--weights coco needs {weights}/detr-r50-e632da11.pth, which is not there: set "
                            "DETR_WEIGHTS to the folder that holds detr-r50-e632da11.pth, or pass the file"),
    (("--weights", "imagenet", "--backbone", "resnet18"), "--weights imagenet needs {weights}/resnet18-f37072fd.pth"),
    (("--weights", "scratch", "--pretrained", "detr.pth"),
     "--weights and --pretrained/--backbone-weights both choose the starting weights"),
])
def test_bad_starting_weights_are_usage_errors_before_any_export(home, task, connection, fake_cvat, tmp_path, capsys,
                                                                   argv, message):
    code, _, err = cvat_detr("train", "--task", str(task.id), "--local", *argv, *TINY_FLAGS, *connection)
    err += capsys.readouterr().err  # argparse's own errors go to sys.stderr
    assert code == exits.EXIT_USAGE, err
    assert message.format(task=task.id, weights=tmp_path / "no-weights") in err
    assert not (home / "datasets").exists() and fake_cvat.log == []


def test_ctrl_c_stops_a_local_training_at_its_checkpoint(home, task, connection, monkeypatch):
    """The first Ctrl-C lets the step finish and the checkpoint be saved; as for a cancelled job of the trainer,
    no model joins the task's line."""
    import detr.train

    train_step, calls = detr.train.train_step, []

    def interrupted_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)  # what a Ctrl-C in the terminal delivers
        return train_step(*args, **kwargs)

    monkeypatch.setattr(detr.train, "train_step", interrupted_step)
    handler = signal.getsignal(signal.SIGINT)
    code, out, err = cvat_detr("train", "--task", str(task.id), "--local", *TINY_FLAGS, *connection,
                               quiet=False)
    assert code == exits.EXIT_INTERRUPTED, err
    assert "Stopping after the current step (Ctrl-C again to abort without a checkpoint)" in err
    assert "Training:" in err and len(calls) == 1
    (run,) = (home / "runs").iterdir()
    assert f"Interrupted: no model was registered; the run keeps its checkpoint: {run / 'checkpoint.pt'}" in out
    assert (run / "checkpoint.pt").is_file() and not (home / "models").exists()
    assert signal.getsignal(signal.SIGINT) is handler, "the handler is put back"


# --- the home and the card writer, without training -----------------------------------------------------


def trained(run_id: str, *, task_id: int | None = 7, project_id: int | None = None) -> TrainedModel:
    return TrainedModel(task_id=task_id, project_id=project_id, dataset_id="task-7-x", run_id=run_id,
                        labels=["circle"], threshold=0.5, metrics={"AP": 0.5}, status="completed", epochs_done=1,
                        config={"model": {}, "train": {}}, pretrained=None, backbone_weights=None,
                        options={"weights": "scratch"})


def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "run" / "model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")
    return path


def test_versions_count_per_line_and_a_taken_version_is_skipped(tmp_path):
    store = ModelStore(tmp_path / "home")
    source = model_file(tmp_path)
    assert store.add(trained("r1"), model_file=source, report_dir=tmp_path / "none").id == "task-7-v1"
    (store.models_dir / "task-7-v2").mkdir()  # claimed by a registration on another machine of the volume
    assert store.add(trained("r2"), model_file=source, report_dir=tmp_path / "none").id == "task-7-v3"
    assert store.add(trained("r3", task_id=8), model_file=source, report_dir=tmp_path / "none").id == "task-8-v1"
    assert store.add(trained("r4", task_id=None, project_id=5), model_file=source,
                     report_dir=tmp_path / "none").id == "project-5-v1"
    assert store.add(trained("r5", task_id=None), model_file=source, report_dir=tmp_path / "none").id == "run-r5"
    assert store.latest(task_id=7).id == "task-7-v3" and store.latest(project_id=5).id == "project-5-v1"
    assert store.latest(task_id=9) is None
    assert (store.models_dir / "task-7-v3" / "model.pt").read_bytes() == b"weights"


def test_a_model_whose_files_cannot_be_written_leaves_nothing(tmp_path, monkeypatch):
    store = ModelStore(tmp_path / "home")

    def no_space(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("cvat_plugin.home.models.write_json_atomic", no_space)
    with pytest.raises(OSError, match="No space left"):
        store.add(trained("r1"), model_file=model_file(tmp_path), report_dir=tmp_path / "none")
    assert list(store.models_dir.iterdir()) == [] and store.latest(task_id=7) is None


def test_previous_ranks_versioned_models_above_cards_from_before_versions(tmp_path):
    store = ModelStore(tmp_path)
    old = store.models_dir / "task7-20250101-000000-3f2a"
    old.mkdir(parents=True)
    (old / "model.json").write_text(json.dumps({"id": old.name, "task_id": 7, "created": "2099-01-01T00:00:00"}))
    assert store.latest(task_id=7).id == old.name
    store.add(trained("r1"), model_file=model_file(tmp_path), report_dir=tmp_path / "none")
    assert store.latest(task_id=7).id == "task-7-v1"


def test_ids_sort_by_time_and_name_their_source():
    from datetime import datetime, timezone

    early, late = (new_id(source_name(7), now=datetime(2025, 1, 31, 14, 25, s, tzinfo=timezone.utc)) for s in (1, 2))
    assert early.startswith("task-7-20250131-142501-") and early < late
    assert new_id().count("-") == 2 and new_id("prep").startswith("prep-")
    assert source_name(None, 5) == "project-5"
    with pytest.raises(ValueError, match="needs a task id or a project id"):
        source_name(None, None)


@pytest.mark.parametrize("identifier, message", [
    ("../x", "is not valid"), ("", "must be a non-empty string"), (7, "must be a non-empty string"),
    (".hidden", "is not valid"),
])
def test_ids_that_could_leave_their_folder_are_domain_errors(tmp_path, identifier, message):
    home = DetrHome(tmp_path)
    with pytest.raises(InvalidId, match=message):
        home.model_dir(identifier)
    assert issubclass(InvalidId, ValueError)
