"""Train -> serve in one step, end to end: a fake CVAT task is trained on by the real trainer
function (in this process), the job publishes its model through the fake Nuclio dashboard as a
detector function built from the repository's function.yaml, the function answers with the
task's labels only, and `cvat-detr annotate` has CVAT write its shapes into the task."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from cvat_plugin import cli
from cvat_plugin.nuclio import NuclioClient
from detr.config import TINY_MODEL
from serverless.trainer import main as trainer_main
from tests.fakes.cvat_tasks import add_synthetic_task
from tests.fakes.nuclio import NuclioHttpServer
from tests.fakes.nuclio_dashboard import deploy_yaml
from tests.fakes.trained_models import add_model

ROOT = Path(__file__).resolve().parents[1]
#: CVAT label ids are sparse and unrelated to the model's class indices.
LABELS = [{"name": "circle", "id": 101}, {"name": "square", "id": 205}, {"name": "triangle", "id": 333}]
#: One quick epoch of the tiny model on small images.
TINY_OPTIONS = {"weights": "scratch", "model": TINY_MODEL.to_dict(), "epochs": 1, "batch_size": 4,
                "image_size": 64, "max_size": 96, "num_workers": 0, "device": "cpu"}


@pytest.fixture(autouse=True)
def restore_logging():
    """The trainer's init_context points the package loggers at stdout; put them back."""
    loggers = [logging.getLogger(name) for name in ("detr", "serverless", "cvat_plugin")]
    saved = [(log.handlers[:], log.level, log.propagate) for log in loggers]
    yield
    for log, (handlers, level, propagate) in zip(loggers, saved):
        log.handlers[:] = handlers
        log.setLevel(level)
        log.propagate = propagate


def train_through_trainer(fake_cvat, alice, task, trainer_url, home):
    from cvat_plugin.auth import LegacyToken
    from cvat_plugin.client import CvatClient
    from cvat_plugin.progress import NullProgressReporter
    from cvat_plugin.trainer_client import TrainerClient

    dataset_id = f"task-{task.id}"
    with CvatClient(fake_cvat.url, LegacyToken(alice.token), poll_interval=0.01) as client:
        cli.export_task(client, task.id, home / "datasets" / dataset_id, val_fraction=0.25, seed=0,
                        overwrite=False, pbar=NullProgressReporter())
    trainer = TrainerClient(trainer_url)
    job = trainer.submit(dataset_id, task_id=task.id, options=TINY_OPTIONS)
    return trainer.follow(job["id"], poll_interval=0.05)


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
            train_through_trainer(fake_cvat, alice, task, trainer.url, home)
            runner = trainer.platform._get_handler_context(trainer_main.handler).user_data.runner
        finally:
            trainer.platform._get_handler_context(trainer_main.handler).user_data.runner.terminate(30)
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
    assert code == cli.EXIT_OK, err
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
