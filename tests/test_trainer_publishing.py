"""The trainer's publishing switch: on by default with a Nuclio dashboard, off per job, refused
without one; a publishing failure leaves the job succeeded with its model and a clear error."""

from __future__ import annotations

import json
import time

import pytest

from detr.config import TINY_MODEL
from detr.synthetic import make_shapes_dataset
from serverless.trainer import main
from tests.fakes.nuclio import TRAINER_AUTH, Platform, make_event, to_wire

TINY_OPTIONS = {"weights": "scratch", "model": TINY_MODEL.to_dict(), "epochs": 1, "batch_size": 4,
                "image_size": 64, "max_size": 96, "num_workers": 0, "device": "cpu"}


pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DETR_HOME", str(tmp_path))
    monkeypatch.delenv("NUCLIO_DASHBOARD_URL", raising=False)
    folder = tmp_path / "datasets" / "task-7"
    make_shapes_dataset(folder, num_images=8, seed=0, image_size=(64, 96), classes=("circle", "square"),
                        layout="cvat-folder")
    (folder / "labels.json").write_text(json.dumps([{"id": 11, "name": "circle"}, {"id": 12, "name": "square"}]))
    return tmp_path


class Trainer:
    def __init__(self) -> None:
        self.platform = Platform()

    def call(self, method: str, path: str, body=None) -> tuple[int, dict]:
        wire = to_wire(self.platform.call_handler(main.handler, make_event(method, path, body, headers=TRAINER_AUTH)))
        return wire["status_code"], json.loads(wire["body"])

    def run_job(self, **body) -> dict:
        status, job = self.call("POST", "/jobs", {"dataset_id": "task-7", "task_id": 7, "options": TINY_OPTIONS,
                                                  **body})
        assert status == 202, job
        deadline = time.monotonic() + 120
        while job["state"] not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
            job = self.call("GET", f"/jobs/{job['id']}")[1]
        return job

    def stop(self) -> None:
        self.platform._get_handler_context(main.handler).user_data.runner.terminate(30)


@pytest.fixture
def trainer(home):
    trainer = Trainer()
    yield trainer
    trainer.stop()


def test_without_a_dashboard_jobs_do_not_publish_and_asking_is_refused(trainer):
    status, health = trainer.call("GET", "/health")
    assert status == 200 and health["publish"] is False
    status, error = trainer.call("POST", "/jobs", {"dataset_id": "task-7", "publish": True})
    assert status == 400 and "cannot publish models: set NUCLIO_DASHBOARD_URL" in error["error"]


def test_with_a_dashboard_publishing_is_on_by_default_and_off_on_request(home, fake_nuclio, monkeypatch):
    monkeypatch.setenv("NUCLIO_DASHBOARD_URL", fake_nuclio.url)
    trainer = Trainer()
    try:
        assert trainer.call("GET", "/health")[1]["publish"] is True
        status, quiet = trainer.call("POST", "/jobs", {"dataset_id": "task-7", "options": TINY_OPTIONS,
                                                      "publish": False})
        assert status == 202 and quiet["publish"] is False
        trainer.call("POST", f"/jobs/{quiet['id']}/cancel")
        # no base detector deployed: the model is kept, the job says why it is not served
        job = trainer.run_job()
    finally:
        trainer.stop()
    assert job["state"] == "succeeded" and job["publish"] is True and job["function"] is None
    assert job["model_id"] == "task-7-v1"
    assert job["error"].startswith("model task-7-v1 was saved, but publishing it failed: PublishError: the base "
                                   "detector function 'detr-r50-coco' is not deployed")
    assert fake_nuclio.count("POST", "/api/functions") == 0
    assert json.loads((home / "models" / "task-7-v1" / "model.json").read_text())["function"] is None
