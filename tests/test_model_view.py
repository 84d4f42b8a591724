"""The model view: a job's curves while it trains, every model version of a task with its metrics,
per-class AP and report images, and publishing a chosen version, through the real gateway on the
fake CVAT and the in-process trainer (and the trainer's own API with the fake Nuclio dashboard).
CVAT decides who may see a model: a user who cannot see its task gets 403, never its images."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import pytest

from cvat_plugin.home.models import REPORT_IMAGES, ModelStore, keep_report, starting_weights
from cvat_plugin.nuclio.client import NuclioClient
from detr.synthetic import make_shapes_dataset
from tests.fakes.trained_models import add_model, base_config
from tests.gateway_sandbox import Sandbox, sandbox
from tests.test_gateway import Browser
from tests.test_trainer_publishing import Trainer

pytestmark = pytest.mark.usefixtures("restore_logging")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Iterator[tuple[Sandbox, dict]]:
    """A sandbox whose task trained once for 2 epochs: (box, the finished job)."""
    with sandbox(tmp_path_factory.mktemp("view")) as box:
        alice = Browser(box, box.alice)
        preparing = alice.post(f"/tasks/{box.task.id}/train", {"epochs": 2}).json()
        job = alice.wait(preparing["id"], lambda job: job["state"] not in ("preparing", "queued", "running"))
        assert job["state"] == "succeeded", job
        box.cvat.add_user("bob", "bob-password")  # sees nothing of alice's task
        yield box, job


def test_a_jobs_curves_have_one_point_per_epoch(trained):
    box, job = trained
    alice = Browser(box, box.alice)
    answer = alice.get(f"/jobs/{job['id']}/metrics")
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    epochs = answer.json()["epochs"]
    assert [point["epoch"] for point in epochs] == [1, 2]
    for point in epochs:
        assert point["train_loss"] > 0 and 0 <= point["AP"] <= 1 and 0 <= point["AP50"] <= 1
        assert "train_loss_ce" not in point  # only what a curve needs
    # The preparation's id stands for its job here too.
    assert alice.get(f"/jobs/{job['id']}/metrics").json() == answer.json()


def test_every_version_of_a_task_with_what_a_user_weighs(trained):
    box, job = trained
    alice = Browser(box, box.alice)
    listing = alice.get("/models", task=box.task.id).json()
    assert listing["publish"] is False  # the sandbox's trainer has no Nuclio dashboard
    [model] = listing["models"]
    assert model["id"] == job["model_id"] == f"task-{box.task.id}-v1"
    assert (model["version"], model["epochs"], model["weights"], model["architecture"]) == (1, 2, "scratch", "detr")
    assert model["images"]["train"] + model["images"]["val"] == 16 and model["images"]["val"] >= 1
    assert set(model["metrics"]) >= {"AP", "AP50", "AP75"} and model["metrics"]["AP"] == job["best_metrics"]["AP"]
    assert [row["name"] for row in model["per_class"]] == ["circle", "square"]
    assert all(set(row) == {"name", "AP", "AP50", "boxes"} for row in model["per_class"])
    assert 0 < model["threshold"] < 1 and model["labels"] == ["circle", "square"]
    assert (model["function"], model["published"], model["publishing"]) == (None, None, False)
    assert model["report"] == list(REPORT_IMAGES)
    assert alice.get(f"/models/{model['id']}").json() == model


@pytest.mark.parametrize("image", list(REPORT_IMAGES))
def test_report_images_are_streamed_to_who_may_see_the_task(trained, image):
    box, job = trained
    answer = Browser(box, box.alice).get(f"/models/{job['model_id']}/report/{image}")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png" and answer.content[:8] == PNG_SIGNATURE
    assert answer.headers["cache-control"] == "no-store"


def test_a_user_who_cannot_see_the_task_sees_none_of_its_models(trained):
    box, job = trained
    browser = Browser(box, next(user for user in box.cvat.users.values() if user.username == "bob"))
    for path in (f"/models/{job['model_id']}", f"/models/{job['model_id']}/report/samples"):
        answer = browser.get(path)
        assert answer.status_code == 403, (path, answer.text)
        assert not answer.content.startswith(PNG_SIGNATURE)
    # A job of a task one cannot see answers as a missing one (no existence oracle), its curves too.
    assert browser.get(f"/jobs/{job['id']}/metrics").status_code == 404
    assert browser.get("/models", task=box.task.id).status_code == 403
    assert browser.post(f"/models/{job['model_id']}/publish").status_code == 403
    assert Browser(box, None).get(f"/models/{job['model_id']}/report/samples").status_code == 401


@pytest.mark.parametrize("path, status, message", [
    ("/models/task-1-v9", 404, "no model 'task-1-v9'"),
    ("/models/..%2Fdatasets", 404, "no such path"),
    ("/models/.hidden", 400, "not valid"),
    ("/models/a.b", 400, "not valid"),
    ("/models/{model}/report/..%2Fmodel.json", 404, "no such path"),
    ("/models/{model}/report/model", 404, "no report image"),
    ("/jobs/no-such-job/metrics", 404, "no training job"),
])
def test_ids_and_image_names_are_checked(trained, path, status, message):
    box, job = trained
    answer = Browser(box, box.alice).get(path.format(model=job["model_id"]))
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]


def test_a_viewer_of_the_task_sees_its_models_but_cannot_publish_them(trained):
    box, job = trained
    box.task.members.add("vera")
    vera = Browser(box, next((u for u in box.cvat.users.values() if u.username == "vera"), None)
                   or box.cvat.add_user("vera", "vera-password"))
    assert vera.get(f"/models/{job['model_id']}/report/samples").status_code == 200
    for action in ("publish", "unpublish"):
        answer = vera.post(f"/models/{job['model_id']}/{action}")
        assert answer.status_code == 403 and "but not change it" in answer.json()["error"]


def test_publishing_without_a_dashboard_says_why(trained):
    box, job = trained
    answer = Browser(box, box.alice).post(f"/models/{job['model_id']}/publish", {"replace": True})
    assert answer.status_code == 409 and "cannot publish models: set NUCLIO_DASHBOARD_URL" in answer.json()["error"]
    answer = Browser(box, box.alice).post(f"/models/{job['model_id']}/publish", {"replace": "yes"})
    assert answer.status_code == 400 and '{"replace": true|false}' in answer.json()["error"]


def test_the_report_names_are_those_the_engine_writes(trained):
    box, job = trained
    run_report = box.settings.home / "runs" / job["id"] / "report"
    assert {path.name for path in run_report.glob("*.png")} == set(REPORT_IMAGES.values())


# --- the model store ---------------------------------------------------------------------------------


def test_a_model_keeps_its_report_and_describes_its_start(tmp_path):
    folder = add_model(tmp_path, "task-7-v1", ["car"])
    run_report = tmp_path / "run" / "report"
    run_report.mkdir(parents=True)
    (run_report / "samples.png").write_bytes(PNG_SIGNATURE)
    (run_report / "notes.txt").write_text("not a report image")
    keep_report(run_report, folder)
    assert sorted(path.name for path in (folder / "report").iterdir()) == ["samples.png"]
    view = ModelStore(tmp_path).describe(ModelStore(tmp_path).entry("task-7-v1"))
    assert view["report"] == ["samples"] and view["images"] is None and view["weights"] == "scratch"
    assert starting_weights({"options": {"weights": "coco"}}) == "coco"
    assert starting_weights({"pretrained": "/opt/detr/weights/detr-r50-e632da11.pth"}) == \
        "checkpoint detr-r50-e632da11.pth"  # never the server's folders


# --- publishing a chosen version through the trainer ------------------------------------------------


@pytest.fixture
def publishing_trainer(tmp_path, fake_nuclio, monkeypatch) -> Iterator[tuple[Trainer, Path]]:
    home = tmp_path / "home"
    monkeypatch.setenv("DETR_HOME", str(home))
    monkeypatch.setenv("NUCLIO_DASHBOARD_URL", fake_nuclio.url)
    NuclioClient(fake_nuclio.url, poll_interval=0.0).deploy(base_config())
    for version in (1, 2):
        add_model(home, f"task-7-v{version}", ["car", "person"], version=version)
    trainer = Trainer()
    yield trainer, home
    trainer.stop()


def wait_published(home: Path, model_id: str) -> dict:
    deadline = time.monotonic() + 30
    while True:
        card = json.loads((home / "models" / model_id / "model.json").read_text())
        if not card.get("publishing"):
            return card
        assert time.monotonic() < deadline, card
        time.sleep(0.05)


def test_a_chosen_version_is_published_replaces_the_served_one_and_is_unpublished(publishing_trainer, fake_nuclio):
    trainer, home = publishing_trainer
    status, answer = trainer.call("POST", "/models/task-7-v1/publish", {})
    assert status == 202 and answer == {"model_id": "task-7-v1", "publishing": True, "replace": False}
    assert wait_published(home, "task-7-v1")["function"] == "detr-task-7-v1"

    status, _ = trainer.call("POST", "/models/task-7-v2/publish", {"replace": True})
    assert status == 202
    assert wait_published(home, "task-7-v2")["function"] == "detr-task-7-v2"
    assert json.loads((home / "models" / "task-7-v1" / "model.json").read_text())["function"] is None
    served = sorted(name for name in NuclioClient(fake_nuclio.url).list_functions() if name != "detr-r50-coco")
    assert served == ["detr-task-7-v2"]

    status, answer = trainer.call("POST", "/models/task-7-v2/unpublish")
    assert (status, answer) == (200, {"model_id": "task-7-v2", "removed": "detr-task-7-v2"})
    assert trainer.call("POST", "/models/task-7-v2/unpublish")[0] == 409  # nothing left to unpublish
    assert trainer.call("POST", "/models/task-7-v9/publish")[0] == 404
    assert trainer.call("POST", "/models/..%2Fx/publish")[0] == 400


def test_a_failed_publication_is_reported_in_the_card(publishing_trainer, fake_nuclio):
    trainer, home = publishing_trainer
    NuclioClient(fake_nuclio.url, poll_interval=0.0).delete_function("detr-r50-coco")
    assert trainer.call("POST", "/models/task-7-v1/publish")[0] == 202
    card = wait_published(home, "task-7-v1")
    assert card["function"] is None
    assert card["publish_error"].startswith("publishing failed: the base detector function 'detr-r50-coco' is "
                                            "not deployed")
    view = ModelStore(home).describe(ModelStore(home).entry("task-7-v1"))
    assert view["publish_error"] == card["publish_error"] and view["publishing"] is False


def test_the_trainer_serves_a_jobs_curve(tmp_path, monkeypatch):
    monkeypatch.setenv("DETR_HOME", str(tmp_path))
    monkeypatch.delenv("NUCLIO_DASHBOARD_URL", raising=False)
    make_shapes_dataset(tmp_path / "datasets" / "task-7", num_images=8, seed=0, image_size=(64, 96),
                        classes=("circle", "square"), layout="cvat-folder")
    (tmp_path / "datasets" / "task-7" / "labels.json").write_text(
        json.dumps([{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]))
    trainer = Trainer()
    try:
        status, job = trainer.call("POST", "/jobs", {"dataset_id": "task-7", "task_id": 7, "options": {
            "weights": "scratch", "model": {"backbone": "resnet18", "hidden_dim": 32, "nheads": 4, "enc_layers": 1,
                                            "dec_layers": 1, "dim_feedforward": 64, "num_queries": 10},
            "epochs": 2, "batch_size": 4, "image_size": 64, "max_size": 96, "num_workers": 0, "device": "cpu"}})
        assert status == 202, job
        deadline = time.monotonic() + 120
        while trainer.call("GET", f"/jobs/{job['id']}")[1]["state"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # a line being appended (or damaged) is skipped, never a 500
        with open(tmp_path / "runs" / job["id"] / "metrics.jsonl", "a", encoding="utf-8") as metrics:
            metrics.write('{"epoch": 3, "train_lo')
        status, curve = trainer.call("GET", f"/jobs/{job['id']}/metrics")
    finally:
        trainer.stop()
    assert status == 200 and [point["epoch"] for point in curve["epochs"]] == [1, 2]
    assert all("AP50" in point and "train_loss" in point for point in curve["epochs"])


def test_replacing_a_projects_published_version_leaves_other_lines_alone(publishing_trainer, fake_nuclio):
    """A project's versions form their own line: publishing one with replace unpublishes the project's other
    version, never a task's."""
    trainer, home = publishing_trainer
    for version in (1, 2):
        folder = add_model(home, f"project-5-v{version}", ["car", "person"], task_id=None, version=version)
        card = json.loads((folder / "model.json").read_text())
        (folder / "model.json").write_text(json.dumps({**card, "project_id": 5}))
    for model_id in ("task-7-v1", "project-5-v1"):
        assert trainer.call("POST", f"/models/{model_id}/publish")[0] == 202
        assert wait_published(home, model_id)["function"]
    assert trainer.call("POST", "/models/project-5-v2/publish", {"replace": True})[0] == 202
    assert wait_published(home, "project-5-v2")["function"] == "detr-project-5-v2"
    functions = {model_id: json.loads((home / "models" / model_id / "model.json").read_text())["function"]
                 for model_id in ("task-7-v1", "project-5-v1", "project-5-v2")}
    assert functions == {"task-7-v1": "detr-task-7-v1", "project-5-v1": None, "project-5-v2": "detr-project-5-v2"}
