"""Train -> serve in one step, end to end: a fake CVAT task is trained on by the real trainer
function (in this process), the job publishes its model through the fake Nuclio dashboard as a
detector function built from the repository's function.yaml, the function answers with the
task's labels only, and `cvat-detr annotate` has CVAT write its shapes into the task."""

from __future__ import annotations

import base64
import io
import json
from collections import Counter
from pathlib import Path

import pytest

from cvat_plugin import cli
from cvat_plugin.cli import exits
from cvat_plugin.nuclio.client import NuclioClient
from serverless.trainer import main as trainer_main
from tests.fakes.cvat_tasks import add_synthetic_task
from tests.fakes.nuclio import NuclioHttpServer
from tests.fakes.nuclio_dashboard import deploy_yaml
from tests.fakes.trained_models import add_model

ROOT = Path(__file__).resolve().parents[1]
#: CVAT label ids are sparse and unrelated to the model's class indices.
LABELS = [{"name": "circle", "id": 101}, {"name": "square", "id": 205}, {"name": "triangle", "id": 333}]
#: One quick epoch of the tiny model on small images.
TINY_TRAINING = ["--model-preset", "tiny", "--weights", "scratch", "--epochs", "1", "--batch-size", "4",
                 "--image-size", "64", "--max-size", "96", "--num-workers", "0", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("restore_logging")


def cvat_detr(*argv: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = cli.main(["--quiet", *argv], stdout=stdout, stderr=stderr)
    return code, stdout.getvalue(), stderr.getvalue()


def test_a_task_is_trained_published_and_annotated(fake_cvat, fake_nuclio, tmp_path, monkeypatch):
    home = tmp_path / "home"
    for name in ("CVAT_URL", "CVAT_ACCESS_TOKEN", "CVAT_TOKEN", "CVAT_USERNAME", "CVAT_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DETR_HOME", str(home))
    monkeypatch.setenv("NUCLIO_DASHBOARD_URL", fake_nuclio.url)

    # CVAT with serverless on, and a task of learnable shapes
    fake_cvat.connect_nuclio(fake_nuclio.url)
    alice = fake_cvat.add_user("alice", "alice-password")
    task = add_synthetic_task(fake_cvat, alice, tmp_path / "frames", labels=LABELS, num_images=8,
                              image_size=(64, 96))
    connection = ["--url", fake_cvat.url, "--token", alice.token, "--poll-interval", "0.01"]

    # The admin's one-time `nuctl deploy` of the base detector (function.yaml), on the shared volume;
    # its COCO model is stood in for by a tiny one.
    stand_in = add_model(home, "coco-stand-in", ["", "person", "car"], task_id=None) / "model.pt"
    deploy_yaml(fake_nuclio, ROOT / "function.yaml", env={"DETR_HOME": str(home), "DETR_MODEL": str(stand_in)},
                volume_path=home)

    # Train through the trainer function; the job publishes its model
    with NuclioHttpServer(trainer_main.handler) as trainer:
        try:
            code, out, err = cvat_detr("train", "--task", str(task.id), "--trainer", trainer.url, *TINY_TRAINING,
                                       "--val-fraction", "0.25", *connection)
        finally:
            runner = trainer.platform._get_handler_context(trainer_main.handler).user_data.runner
            runner.terminate(30)
    assert code == exits.EXIT_OK, err
    assert f"Published as detr-task-{task.id}-v1" in out
    [job] = [json.loads(path.read_text()) for path in (home / "runs").glob("*/job.json")]
    assert job["state"] == "succeeded" and job["error"] is None, job
    assert job["model_id"] == f"task-{task.id}-v1" and job["function"] == f"detr-task-{task.id}-v1"
    assert not runner.alive

    # The function exists, reuses the base image, and its spec names exactly the task's labels
    nuclio = NuclioClient(fake_nuclio.url)
    function = nuclio.get_function(job["function"])
    assert function["status"]["state"] == "ready" and fake_nuclio.builds == ["detr-r50-coco"]
    spec = json.loads(function["metadata"]["annotations"]["spec"])
    assert [label["name"] for label in spec] == [label["name"] for label in LABELS]
    assert function["metadata"]["annotations"]["name"].startswith(f"DETR · {task.name} v1 · mAP ")

    # CVAT lists it as a detector; invoked on a frame it answers with task label names only
    code, out, _ = cvat_detr("models", "--json")
    [row] = [row for row in json.loads(out) if row["id"] == job["model_id"]]
    assert row["function"] == job["function"] and row["state"] == "ready" and row["task_id"] == task.id
    frame = base64.b64encode(task.frames[0].data).decode()
    detections = nuclio.invoke(job["function"], {"image": frame, "threshold": 0.0}).json()
    assert detections and {d["label"] for d in detections} <= {label["name"] for label in LABELS}

    # `cvat-detr annotate` has CVAT run the function on every frame and save the shapes
    threshold = sorted(float(d["confidence"]) for d in detections)[len(detections) // 2]
    code, out, err = cvat_detr("annotate", "--task", str(task.id), "--model", job["model_id"], "--clear-existing",
                               "--threshold", f"{threshold:.4f}", *connection)
    assert code == exits.EXIT_OK, err
    ids = {label["name"]: label["id"] for label in LABELS}
    expected = Counter()
    for index, frame_data in enumerate(task.frames):
        answer = nuclio.invoke(job["function"], {"image": base64.b64encode(frame_data.data).decode(),
                                                 "threshold": float(f"{threshold:.4f}")}).json()
        expected.update((index, ids[d["label"]]) for d in answer)
    assert sum(expected.values()) > 0
    assert Counter((shape.frame, shape.label_id) for shape in task.shapes) == expected
    assert all(shape.source == "auto" for shape in task.shapes)
    assert out.startswith(f"Task {task.id}: {sum(expected.values())} shapes added by {job['function']}")


@pytest.mark.parametrize("argv, code, message", [
    ((), exits.EXIT_USAGE, "pass --local to train in this process, or --trainer URL"),
    (("--trainer", "http://127.0.0.1:9", "--pretrained", "detr.pth"), exits.EXIT_USAGE,
     "pass --weights coco|imagenet|scratch|previous instead"),
    (("--local", "--publish"), exits.EXIT_USAGE, "--publish is for --trainer"),
    (("--trainer", "http://127.0.0.1:9"), exits.EXIT_UNREACHABLE, "cannot reach the trainer"),
])
def test_train_options_are_checked_before_any_work(fake_cvat, argv, code, message, monkeypatch):
    monkeypatch.delenv("DETR_TRAINER_URL", raising=False)
    got, _, err = cvat_detr("train", "--task", "1", *argv, "--url", fake_cvat.url, "--token", "t")
    assert got == code, err
    assert message in err
    assert fake_cvat.log == []  # nothing was exported


def test_a_job_the_trainer_refuses_is_reported(fake_cvat, tmp_path, monkeypatch):
    monkeypatch.setenv("DETR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DETR_WEIGHTS", str(tmp_path / "no-weights"))
    monkeypatch.delenv("NUCLIO_DASHBOARD_URL", raising=False)
    alice = fake_cvat.add_user("alice", "alice-password")
    task = add_synthetic_task(fake_cvat, alice, tmp_path / "frames", labels=LABELS, num_images=4, image_size=(64, 96))
    with NuclioHttpServer(trainer_main.handler) as trainer:
        try:
            code, _, err = cvat_detr("train", "--task", str(task.id), "--trainer", trainer.url, "--weights", "coco",
                                     "--url", fake_cvat.url, "--token", alice.token, "--poll-interval", "0.01")
        finally:
            trainer.platform._get_handler_context(trainer_main.handler).user_data.runner.terminate(30)
    assert code == exits.EXIT_TRAINING
    assert "training failed: the trainer refused POST" in err and "weights 'coco' need" in err


@pytest.mark.slow
def test_a_project_is_trained_on_the_trainer_and_published_with_its_labels(fake_cvat, fake_nuclio, tmp_path,
                                                                           monkeypatch):
    """`train --project N --trainer`: the Validation task is the val split, the job starts the project's
    model line, and the published detector's spec names the project's labels."""
    home = tmp_path / "home"
    for name in ("CVAT_URL", "CVAT_ACCESS_TOKEN", "CVAT_TOKEN", "CVAT_USERNAME", "CVAT_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DETR_HOME", str(home))
    monkeypatch.setenv("NUCLIO_DASHBOARD_URL", fake_nuclio.url)
    alice = fake_cvat.add_user("alice", "alice-password")
    project = fake_cvat.add_project("shapes", owner=alice, labels=LABELS)
    add_synthetic_task(fake_cvat, alice, tmp_path / "a", name="a", num_images=6, image_size=(64, 96),
                       project=project, subset="Train")
    val = add_synthetic_task(fake_cvat, alice, tmp_path / "b", name="b", num_images=2, seed=1, image_size=(64, 96),
                             project=project, subset="Validation")
    stand_in = add_model(home, "coco-stand-in", ["", "person", "car"], task_id=None) / "model.pt"
    deploy_yaml(fake_nuclio, ROOT / "function.yaml", env={"DETR_HOME": str(home), "DETR_MODEL": str(stand_in)},
                volume_path=home)

    with NuclioHttpServer(trainer_main.handler) as trainer:
        try:
            code, out, err = cvat_detr("train", "--project", str(project.id), "--trainer", trainer.url,
                                       *TINY_TRAINING, "--url", fake_cvat.url, "--token", alice.token,
                                       "--poll-interval", "0.01")
        finally:
            trainer.platform._get_handler_context(trainer_main.handler).user_data.runner.terminate(30)
    assert code == exits.EXIT_OK, err
    assert f"Published as detr-project-{project.id}-v1" in out
    [job] = [json.loads(path.read_text()) for path in (home / "runs").glob("*/job.json")]
    assert (job["project_id"], job["model_id"]) == (project.id, f"project-{project.id}-v1")
    val_images = json.loads((home / "datasets" / job["dataset_id"] / "annotations" / "val.json").read_text())
    assert sorted(image["file_name"] for image in val_images["images"]) == sorted(
        f"task_{val.id}/Validation/{frame.name}" for frame in val.frames)
    function = NuclioClient(fake_nuclio.url).get_function(job["function"])
    assert [label["name"] for label in json.loads(function["metadata"]["annotations"]["spec"])] == [
        label["name"] for label in LABELS]
