"""The trainer Nuclio function, through nuclio_sdk: job API, background training, cancel, restart."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from cvat_plugin.training.options import training_setup
from cvat_plugin.training.weights import COCO_FILE, IMAGENET_FILES, available_weights
from detr.config import TINY_MODEL
from detr.synthetic import make_shapes_dataset
from serverless.trainer import main
from tests.fakes.nuclio import TRAINER_TOKEN, NuclioHttpServer, Platform, make_event, to_wire

LABELS = ["circle", "square"]
#: A job that trains the tiny model on 8 small images in a few seconds per epoch.
TINY_OPTIONS = {
    "weights": "scratch", "model": TINY_MODEL.to_dict(), "epochs": 1, "batch_size": 2, "image_size": 64,
    "max_size": 96, "num_workers": 0, "device": "cpu", "random_crop": False,
}
JOB_KEYS = {"id", "task_id", "dataset_id", "state", "epoch", "epochs", "step", "steps", "progress", "loss", "metrics",
            "best_metrics", "eta_s", "error", "model_id", "function", "options", "recipe", "created", "started",
            "finished"}


pytestmark = pytest.mark.usefixtures("restore_logging")


def make_dataset(home: Path, dataset_id: str = "task-7", labels: list[str] = LABELS) -> str:
    folder = home / "datasets" / dataset_id
    make_shapes_dataset(folder, num_images=8, seed=0, image_size=(64, 96), classes=tuple(labels),
                        layout="cvat-folder")
    (folder / "labels.json").write_text(json.dumps([{"id": i + 1, "name": n} for i, n in enumerate(labels)]))
    return dataset_id


class Trainer:
    """One trainer container: a fresh platform and context on a DETR_HOME."""

    def __init__(self, home: Path):
        self.home = home
        self.platform = Platform()

    def call(self, method: str, path: str, body=None, *, token: str | None = TRAINER_TOKEN,
             **kwargs) -> tuple[int, object]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        output = self.platform.call_handler(main.handler, make_event(method, path, body, headers=headers, **kwargs))
        wire = to_wire(output)
        assert wire["content_type"] == "application/json"
        return wire["status_code"], json.loads(wire["body"])

    def submit(self, **body) -> dict:
        status, job = self.call("POST", "/jobs", {"dataset_id": "task-7", "task_id": 7, **body})
        assert status == 202, job
        return job

    def job(self, job_id: str) -> dict:
        status, job = self.call("GET", f"/jobs/{job_id}")
        assert status == 200, job
        return job

    def wait(self, job_id: str, until, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if until(job):
                return job
            assert time.monotonic() < deadline, f"job never reached the expected state: {job}"
            time.sleep(0.05)

    def wait_final(self, job_id: str) -> dict:
        return self.wait(job_id, lambda job: job["state"] in ("succeeded", "failed", "cancelled"))

    def stop(self) -> None:
        assert self.platform.terminate() is None
        assert not self.runner.alive

    @property
    def runner(self):
        return self.platform._get_handler_context(main.handler).user_data.runner


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DETR_HOME", str(tmp_path))
    monkeypatch.setenv("DETR_WEIGHTS", str(tmp_path / "no-weights"))
    make_dataset(tmp_path)
    return tmp_path


@pytest.fixture
def trainer(home):
    trainer = Trainer(home)
    yield trainer
    trainer.runner.terminate(30)


def test_a_tiny_job_runs_to_success_and_registers_its_model(trainer, home):
    job = trainer.submit(options=TINY_OPTIONS)
    assert set(job) >= JOB_KEYS
    assert job["state"] in ("queued", "running") and job["dataset_id"] == "task-7" and job["task_id"] == 7

    done = trainer.wait_final(job["id"])
    assert done["state"] == "succeeded", done["error"]
    assert done["epoch"] == done["epochs"] == 1 and done["progress"] == 1.0 and done["step"] == done["steps"] == 3
    assert done["model_id"] == "task-7-v1" and done["function"] is None
    assert "AP" in done["best_metrics"] and "AP" in done["metrics"]
    assert done["started"] and done["finished"] and done["error"] is None
    assert done["recipe"].startswith("small dataset: ") and "--recipe default to override" in done["recipe"]
    assert json.loads((home / "runs" / job["id"] / "job.json").read_text()) == done

    model_dir = home / "models" / "task-7-v1"
    card = json.loads((model_dir / "model.json").read_text())
    assert card["labels"] == [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]
    assert card["run_id"] == job["id"] and card["dataset_id"] == "task-7" and card["status"] == "completed"
    assert card["version"] == 1 and card["config"]["model"]["num_classes"] == 2
    assert torch.load(model_dir / "model.pt", weights_only=True)["labels"] == LABELS

    # A second job continues from the first one's checkpoint for one more epoch.
    more = trainer.submit(resume_from=job["id"], options={"epochs": 2})
    done = trainer.wait_final(more["id"])
    assert done["state"] == "succeeded", done["error"]
    assert done["model_id"] == "task-7-v2" and done["epoch"] == 2
    records = (home / "runs" / more["id"] / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in records] == [2]

    status, listing = trainer.call("GET", "/jobs", fields={"task": "7"})
    assert status == 200 and [j["id"] for j in listing["jobs"]] == [more["id"], job["id"]]
    status, health = trainer.call("GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["running"] is None and health["problems"] == []
    assert health["weights"] == ["scratch", "previous"]  # no baked files in DETR_WEIGHTS here


def test_health_offers_only_the_weights_the_image_has(tmp_path, monkeypatch):
    monkeypatch.setenv("DETR_WEIGHTS", str(tmp_path))
    assert available_weights() == ["scratch", "previous"]
    (tmp_path / COCO_FILE).write_bytes(b"")
    (tmp_path / IMAGENET_FILES["resnet50"]).write_bytes(b"")
    assert available_weights() == ["coco", "imagenet", "scratch", "previous"]


def test_cancel_stops_a_running_job_and_a_queued_one(trainer, home):
    running = trainer.submit(options={**TINY_OPTIONS, "epochs": 50})
    queued = trainer.submit(options=TINY_OPTIONS)
    trainer.wait(running["id"], lambda job: job["state"] == "running" and job["step"] > 0)

    status, job = trainer.call("POST", f"/jobs/{queued['id']}/cancel")
    assert status == 200 and job["state"] == "cancelled" and job["started"] is None
    status, job = trainer.call("POST", f"/jobs/{running['id']}/cancel")
    assert status == 200 and job["id"] == running["id"]

    done = trainer.wait_final(running["id"])
    assert done["state"] == "cancelled" and done["finished"] and done["model_id"] is None
    assert (home / "runs" / running["id"] / "checkpoint.pt").is_file()
    assert not (home / "models").exists() or not any((home / "models").iterdir())
    assert trainer.job(queued["id"])["started"] is None

    status, error = trainer.call("POST", f"/jobs/{running['id']}/cancel")
    assert status == 409 and "already cancelled" in error["error"]


def test_jobs_run_one_at_a_time_in_submission_order(trainer):
    first = trainer.submit(options=TINY_OPTIONS)
    second = trainer.submit(options=TINY_OPTIONS)
    assert trainer.job(second["id"])["state"] == "queued"
    status, health = trainer.call("GET", "/health")
    assert health["queued"] + (health["running"] is not None) == 2
    a, b = trainer.wait_final(first["id"]), trainer.wait_final(second["id"])
    assert a["state"] == b["state"] == "succeeded"
    assert a["started"] <= a["finished"] <= b["started"]
    assert (a["model_id"], b["model_id"]) == ("task-7-v1", "task-7-v2")


def test_a_restart_in_the_middle_resumes_the_job_and_finishes_it(trainer, home):
    job = trainer.submit(options={**TINY_OPTIONS, "epochs": 2})
    trainer.wait(job["id"], lambda j: j["epoch"] == 2 and j["step"] >= 1)

    # Nuclio's termination signal: the job saves a checkpoint mid-epoch and stays resumable.
    trainer.stop()
    stopped = trainer.job(job["id"])
    assert stopped["state"] == "interrupted" and stopped["finished"] is None
    assert (home / "runs" / job["id"] / "checkpoint.pt").is_file()

    # A killed container leaves the job "running" on disk; the next start must not trust that.
    path = home / "runs" / job["id"] / "job.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "state": "running"}))

    restarted = Trainer(home)
    assert restarted.job(job["id"])["state"] in ("interrupted", "running")
    done = restarted.wait_final(job["id"])
    try:
        assert done["state"] == "succeeded", done["error"]
        assert done["epoch"] == 2 and done["model_id"] == "task-7-v1"
        records = (home / "runs" / job["id"] / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in records] == [1, 2]
    finally:
        restarted.runner.terminate(30)


def test_a_corrupted_job_file_is_reported_not_fatal(home):
    (home / "runs" / "20240101-000000-badbad").mkdir(parents=True)
    (home / "runs" / "20240101-000000-badbad" / "job.json").write_text('{"id": "20240101-0')
    trainer = Trainer(home)
    try:
        status, listing = trainer.call("GET", "/jobs")
        assert status == 200 and listing["jobs"] == []
        assert "runs/20240101-000000-badbad/job.json is unreadable" in listing["problems"][0]
        status, health = trainer.call("GET", "/health")
        assert status == 200 and health["status"] == "ok" and len(health["problems"]) == 1
        status, error = trainer.call("GET", "/jobs/20240101-000000-badbad")
        assert status == 500 and "delete the folder runs/20240101-000000-badbad" in error["error"]
        status, job = trainer.call("POST", "/jobs", {"dataset_id": "task-7", "options": {"epochs": 1}})
        assert status == 400  # the trainer still answers: here, no COCO weights in this test image
    finally:
        trainer.runner.terminate(30)


def finished_run(home: Path, job_id: str, labels: list[str], state: str = "succeeded") -> None:
    """A past job's run folder, as a finished job leaves it (the checkpoint's content is not read here)."""
    run = home / "runs" / job_id
    run.mkdir(parents=True)
    (run / "job.json").write_text(json.dumps({"id": job_id, "dataset_id": "task-7", "state": state}))
    (run / "checkpoint.pt").write_bytes(b"")
    (run / "config.json").write_text(json.dumps({"labels": labels}))


BAD_REQUESTS = [
    ("POST", "/jobs", None, 400, "expected a JSON object"),
    ("POST", "/jobs", b"{not json", 400, "not valid JSON"),
    ("POST", "/jobs", b"[" * 5000 + b"]" * 5000, 400, "the request body is nested too deeply"),
    ("POST", "/jobs", {"options": {}}, 400, "missing field 'dataset_id'"),
    ("POST", "/jobs", {"dataset_id": "task-7", "epochs": 3}, 400, "unknown field 'epochs'; a job request has"),
    ("POST", "/jobs", {"dataset_id": "task-8"}, 404, "dataset 'task-8' not found in DETR_HOME/datasets"),
    ("POST", "/jobs", {"dataset_id": "../../etc"}, 400, "dataset_id '../../etc' is not valid"),
    ("POST", "/jobs", {"dataset_id": "task-7/../../x"}, 400, "is not valid"),
    ("POST", "/jobs", {"dataset_id": "/etc"}, 400, "is not valid"),
    ("POST", "/jobs", {"dataset_id": 7}, 400, "dataset_id must be a non-empty string"),
    ("POST", "/jobs", {"dataset_id": "no-labels"}, 400, "has no labels.json"),
    ("POST", "/jobs", {"dataset_id": "task-7", "task_id": "7"}, 400, "'task_id' must be an integer"),
    ("POST", "/jobs", {"dataset_id": "task-7", "publish": "yes"}, 400, "'publish' must be true or false"),
    ("POST", "/jobs", {"dataset_id": "task-7", "options": {"epoch": 3}}, 400,
     "unknown option 'epoch'; known options: weights, recipe, model_preset, model, epochs"),
    ("POST", "/jobs", {"dataset_id": "task-7", "options": {"recipe": "fast"}}, 400,
     "option 'recipe' must be one of auto, default, small-data"),
    ("POST", "/jobs", {"dataset_id": "task-7", "options": {"model_preset": "r50"}}, 400,
     "option 'model_preset' must be one of auto, detr-r50, tiny"),
    ("POST", "/jobs", {"dataset_id": "task-7", "options": {"epochs": "ten"}}, 400,
     "option 'epochs' must be a whole number from 1 to 10000, got 'ten'"),
    ("POST", "/jobs", {"dataset_id": "task-7", "options": {"epochs": 0}}, 400,
     "option 'epochs' must be a whole number from 1 to 10000, got 0"),
    # Bounds: each an attack on the machine (a fork bomb, a huge allocation, a loss that never stops being NaN).
    ("POST", "/jobs", {"dataset_id": "task-7", "options": {"num_workers": 100000}}, 400,
     "option 'num_workers' must be a whole number from 0 to 64, got 100000"),
    ("POST", "/jobs", {"dataset_id": "task-7", "options": {"model": {"num_queries": 1e9}}}, 400,
     "model option 'num_queries' must be a whole number from 1 to 3000, got 1000000000.0"),
    ("POST", "/jobs", {"dataset_id": "task-7", "options": {"lr": float("inf")}}, 400,
     "option 'lr' must be a finite number from 1e-07 to 1, got inf"),
    ("POST", "/jobs", b'{"dataset_id": "task-7", "options": {"lr": Infinity}}', 400,
     "option 'lr' must be a finite number from 1e-07 to 1, got inf"),
    ("POST", "/jobs", b'{"dataset_id": "task-7", "options": {"weight_decay": NaN}}', 400,
     "option 'weight_decay' must be a finite number from 0 to 1, got nan"),
    ("POST", "/jobs", {"dataset_id": "task-7", "options": {"epochs": 10**400}}, 400,
     "option 'epochs' must be a whole number from 1 to 10000, got 1000"),
    ("POST", "/jobs", {"dataset_id": "task-7", "options": {"batch_size": 100000}}, 400,
     "option 'batch_size' must be a whole number from 1 to 256, got 100000"),
    ("POST", "/jobs", {"dataset_id": "task-7", "options": {"image_size": 100000}}, 400,
     "option 'image_size' must be a whole number from 32 to 4096, got 100000"),
    ("POST", "/jobs", {"dataset_id": "task-7", "options": {"model": {"hidden_dim": 10**6}}}, 400,
     "model option 'hidden_dim' must be a whole number from 8 to 2048, got 1000000"),
    ("POST", "/jobs", {"dataset_id": "task-7", "options": {"model": {"dropout": -0.1}}}, 400,
     "model option 'dropout' must be a finite number from 0 to 0.9, got -0.1"),
    ("POST", "/jobs", {"dataset_id": "task-7", "options": {"hflip": 1}}, 400, "option 'hflip' must be true or false"),
    ("POST", "/jobs", {"dataset_id": "task-7", "options": {"weights": "imagenet21k"}}, 400,
     "option 'weights' must be one of coco, imagenet, scratch, previous"),
    ("POST", "/jobs", {"dataset_id": "task-7", "options": {"model": {"num_quries": 5}}}, 400,
     "unknown model option 'num_quries'"),
    ("POST", "/jobs", {"dataset_id": "task-7", "options": {"weights": "coco"}}, 400,
     "detr-r50-e632da11.pth, which this trainer does not have"),
    ("POST", "/jobs", {"dataset_id": "task-7", "options": {"weights": "imagenet"}}, 400,
     "resnet50-0676ba61.pth, which this trainer does not have"),
    ("POST", "/jobs", {"dataset_id": "task-7", "task_id": 9, "options": {"weights": "previous"}}, 400,
     "task 9 has no trained model yet"),
    ("POST", "/jobs", {"dataset_id": "task-7", "options": {"weights": "previous"}}, 400, "needs the job's task_id"),
    ("POST", "/jobs", {"dataset_id": "task-7", "resume_from": "20240101-000000-aaaaaa"}, 404,
     "no job '20240101-000000-aaaaaa'"),
    ("POST", "/jobs", {"dataset_id": "task-7", "resume_from": "../runs"}, 400, "resume_from '../runs' is not valid"),
    ("POST", "/jobs", {"dataset_id": "task-7", "resume_from": "other-labels"}, 409,
     "the dataset's labels ['circle', 'square'] differ from those of job other-labels ['circle', 'star']"),
    ("POST", "/jobs", {"dataset_id": "task-7", "resume_from": "still-running"}, 409,
     "job still-running is still running; wait until it ends or cancel it"),
    ("POST", "/jobs", {"dataset_id": "task-7", "resume_from": "same-labels", "options": {"weights": "coco"}}, 400,
     "option 'weights' cannot be combined with resume_from"),
    ("GET", "/jobs/20240101-000000-aaaaaa", None, 404, "no job '20240101-000000-aaaaaa'; list jobs with GET /jobs"),
    ("GET", "/jobs/..", None, 400, "job id '..' is not valid"),
    ("POST", "/jobs/20240101-000000-aaaaaa/cancel", None, 404, "no job"),
    ("GET", "/jobs/same-labels/cancel", None, 405, "GET is not allowed on /jobs/same-labels/cancel; use POST"),
    ("DELETE", "/jobs", None, 405, "DELETE is not allowed on /jobs; use GET or POST"),
    ("GET", "/models", None, 404, "no route GET /models; the trainer serves POST /jobs"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), BAD_REQUESTS,
                         ids=[f"{m} {p} {status} {msg[:30]}" for m, p, _, status, msg in BAD_REQUESTS])
def test_bad_requests_get_a_clear_4xx(trainer, home, method, path, body, status, message):
    store = trainer.runner.store  # starts the trainer first, so it does not try to resume "still-running"
    (home / "datasets" / "no-labels").mkdir()
    finished_run(home, "other-labels", ["circle", "star"])
    finished_run(home, "same-labels", LABELS)
    finished_run(home, "still-running", LABELS, state="running")
    store.load()
    content_type = "text/plain" if isinstance(body, bytes) else "application/json"
    got_status, got = trainer.call(method, path, body, content_type=content_type)
    assert (got_status, set(got)) == (status, {"error"})
    assert message in got["error"]
    assert not any(p.name.startswith("2") for p in (home / "runs").iterdir()), "no job may be created"


def test_num_workers_is_capped_by_the_trainers_cpus(trainer, home, monkeypatch):
    monkeypatch.setattr("cvat_plugin.training.options.cpu_count", lambda: 2)
    status, error = trainer.call("POST", "/jobs", {"dataset_id": "task-7", "options": {**TINY_OPTIONS,
                                                                                      "num_workers": 3}})
    assert status == 400
    assert error["error"] == "option 'num_workers' must be a whole number from 0 to 2 (this trainer's CPUs), got 3"
    assert not any((home / "runs").iterdir())


def test_bad_queries_are_named(trainer):
    status, error = trainer.call("GET", "/jobs", fields={"task": "seven"})
    assert status == 400 and "query 'task' must be an integer, got 'seven'" in error["error"]
    status, error = trainer.call("GET", "/jobs", fields={"state": "done"})
    assert status == 400 and "query 'state' must be one of queued, running" in error["error"]


def test_init_needs_detr_home(monkeypatch):
    monkeypatch.delenv("DETR_HOME", raising=False)
    with pytest.raises(RuntimeError, match="DETR_HOME is not set"):
        Trainer(Path(".")).call("GET", "/health")


def test_the_trainer_client_drives_the_real_function_over_http(home):
    from cvat_plugin.trainer.client import TrainerClient, TrainerRequestError

    with NuclioHttpServer(main.handler) as server:
        client = TrainerClient(server.url, token=TRAINER_TOKEN)
        try:
            assert client.health()["status"] == "ok"
            with pytest.raises(TrainerRequestError, match="dataset 'task-8' not found") as caught:
                client.submit("task-8")
            assert caught.value.status == 404
            job = client.submit("task-7", task_id=7, options={**TINY_OPTIONS, "epochs": 50})
            assert client.list(task_id=7)[0]["id"] == job["id"] and client.list(task_id=8) == []
            client.cancel(job["id"])
            seen = []
            final = client.follow(job["id"], on_update=seen.append, poll_interval=0.05)
            assert final["state"] == "cancelled" and seen[-1] == final
        finally:
            server.platform._get_handler_context(main.handler).user_data.runner.terminate(30)


def test_a_job_that_cannot_train_fails_with_the_engines_message(trainer, home):
    broken = home / "datasets" / "broken"
    broken.mkdir()
    (broken / "labels.json").write_text(json.dumps([{"id": 1, "name": "circle"}]))
    job = trainer.submit(dataset_id="broken", options=TINY_OPTIONS)
    done = trainer.wait_final(job["id"])
    assert done["state"] == "failed" and done["finished"] and done["model_id"] is None
    assert "broken" in done["error"] and "annotations" in done["error"]
    assert trainer.runner.alive, "the worker goes on with the next job"


@pytest.mark.parametrize(
    "weights, preset, architecture, backbone",
    [("scratch", "fast", "fast", "resnet18"), ("imagenet", "fast-r50", "fast", "resnet50"),
     ("coco", "detr-r50", "detr", "resnet50")],
)
def test_a_jobs_starting_weights_choose_the_architecture_through_the_recipe(weights, preset, architecture, backbone):
    from detr.recipes import plan_training

    setup = training_setup({"weights": weights})
    assert setup.backbone == backbone  # the ImageNet file a job needs follows the preset auto picks
    plan = plan_training(recipe=setup.recipe, preset=setup.model_preset, num_train_images=120, start=setup.start,
                         base_model=None, model_overrides=setup.model_options, train_overrides=setup.train_options)
    assert plan.model.architecture == architecture and plan.model.backbone == backbone
    assert f"model preset {preset}" in plan.reason and "small-data recipe" in plan.reason


def test_the_best_metrics_follow_the_run_epoch_by_epoch(tmp_path):
    """A running job shows its best mAP so far (the dialog's "Best mAP"), not only once it ends."""
    from cvat_plugin.home.jobs import Job, JobStore
    from cvat_plugin.trainer.progress import JobProgress
    from detr import TrainEvent

    store = JobStore(tmp_path)
    store.add(Job(id="j1", dataset_id="d1"))
    progress = JobProgress(store, "j1")
    best = []
    for epoch, ap in enumerate((0.2, 0.5, 0.4)):
        progress(TrainEvent("epoch_end", epoch, 3, 4, 4, 4 * (epoch + 1), 12, losses={"loss": 1.0},
                            metrics={"AP": ap, "AP50": ap + 0.1}))
        best.append((store.get("j1").best_metrics["AP"], store.get("j1").best_metrics["epoch"]))
    assert best == [(0.2, 1), (0.5, 2), (0.5, 2)]
    assert store.get("j1").metrics["AP"] == 0.4


def test_a_project_job_starts_the_projects_model_line_and_previous_continues_it(trainer, home):
    """Jobs of a CVAT project register ``project-<id>-v<n>``; weights 'previous' starts from its newest model."""
    make_dataset(home, "project5")
    status, answer = trainer.call("POST", "/jobs", {"dataset_id": "project5", "project_id": 5,
                                                    "options": {**TINY_OPTIONS, "weights": "previous"}})
    assert status == 400 and "project 5 has no trained model yet" in answer["error"]
    first = trainer.wait_final(trainer.submit(task_id=None, project_id=5, dataset_id="project5",
                                              options=TINY_OPTIONS)["id"])
    assert first["state"] == "succeeded", first["error"]
    assert (first["model_id"], first["project_id"], first["task_id"]) == ("project-5-v1", 5, None)
    card = json.loads((home / "models" / "project-5-v1" / "model.json").read_text())
    assert card["project_id"] == 5 and card["task_id"] is None

    second = trainer.wait_final(trainer.submit(task_id=None, project_id=5, dataset_id="project5",
                                               options={**TINY_OPTIONS, "weights": "previous"})["id"])
    assert second["state"] == "succeeded", second["error"]
    assert second["model_id"] == "project-5-v2"
    run_config = json.loads((home / "runs" / second["id"] / "config.json").read_text())
    assert run_config["pretrained"].endswith("project-5-v1/model.pt")
    status, listing = trainer.call("GET", "/jobs", fields={"project": "5"})
    assert [job["id"] for job in listing["jobs"]] == [second["id"], first["id"]]
    status, answer = trainer.call("POST", "/jobs", {"dataset_id": "project5", "project_id": 5, "task_id": 7})
    assert status == 400 and "send either 'task_id' or 'project_id'" in answer["error"]


UNAUTHENTICATED = [("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/jobs/20240101-000000-aaaaaa"),
                   ("POST", "/jobs/20240101-000000-aaaaaa/cancel"), ("GET", "/models"), ("DELETE", "/health/x")]


@pytest.mark.parametrize("token", [None, "", "wrong-token-0123456789abcdef", TRAINER_TOKEN[:-1], TRAINER_TOKEN + "x"])
@pytest.mark.parametrize(("method", "path"), UNAUTHENTICATED)
def test_every_route_but_health_refuses_a_caller_without_the_token(trainer, home, token, method, path):
    body = {"dataset_id": "task-7", "task_id": 7, "options": TINY_OPTIONS} if method == "POST" else None
    status, error = trainer.call(method, path, body, token=token)
    assert status == 401 and "missing or wrong trainer token" in error["error"]
    assert "DETR_TRAINER_TOKEN" in error["error"] and TRAINER_TOKEN not in error["error"]
    assert not any((home / "runs").iterdir()), "no job may be created"
    status, health = trainer.call("GET", "/health", token=None)
    assert status == 200 and health["status"] == "ok"


def test_the_token_is_checked_in_constant_time(monkeypatch, trainer):
    import hmac

    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    assert trainer.call("GET", "/jobs", token="guess-0123456789abcdef")[0] == 401
    assert compared and compared[-1][0] == f"Bearer {TRAINER_TOKEN}".encode()


@pytest.mark.parametrize(("value", "message"), [
    (None, "DETR_TRAINER_TOKEN is not set, and the trainer needs it"),
    ("short", "DETR_TRAINER_TOKEN is 5 characters long; use at least 16"),
])
def test_the_trainer_does_not_start_without_a_strong_token(home, monkeypatch, value, message):
    if value is None:
        monkeypatch.delenv("DETR_TRAINER_TOKEN")
    else:
        monkeypatch.setenv("DETR_TRAINER_TOKEN", value)
    with pytest.raises(RuntimeError, match=message):
        Trainer(home).call("GET", "/health")


def test_a_client_with_the_wrong_token_is_told_how_to_set_it(home):
    from cvat_plugin.trainer.client import TrainerClient, TrainerRequestError

    with NuclioHttpServer(main.handler) as server:
        try:
            assert TrainerClient(server.url, token="wrong-token-0123456789").health()["status"] == "ok"
            with pytest.raises(TrainerRequestError, match="does not accept our token .* set DETR_TRAINER_TOKEN") as e:
                TrainerClient(server.url, token="wrong-token-0123456789").list()
            assert e.value.status == 401
        finally:
            server.platform._get_handler_context(main.handler).user_data.runner.terminate(30)


# --- cancels that hold ----------------------------------------------------------------------------


def _cancel_inside(trainer: Trainer, monkeypatch, target: str, answers: list, *, call: int = 1) -> None:
    """Patch ``target`` (a dotted name the worker calls) to cancel the running job through the API
    when it is called for the ``call``-th time, before it runs."""
    import importlib

    module_name, attribute = target.rsplit(".", 1)
    parts = module_name.split(".")
    for split in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
        try:
            owner = importlib.import_module(".".join(parts[:split]))
            break
        except ModuleNotFoundError:
            continue
    for name in parts[split:]:
        owner = getattr(owner, name)
    original, calls = getattr(owner, attribute), []

    def cancelling(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            answers.append(trainer.call("POST", f"/jobs/{trainer.runner.current}/cancel"))
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, attribute, cancelling)


@pytest.mark.parametrize("moment", [
    "detr.train.train_step",  # during the last step,
    "detr.train._Loop.evaluate",  # the final evaluation,
    "detr.train.save_model_file",  # saving the best model,
    "detr.train._Loop._save_checkpoint",  # the last checkpoint,
    "detr.train.write_report",  # or the report
])
def test_a_cancel_up_to_the_models_registration_ends_cancelled_without_a_model(trainer, home, monkeypatch, moment):
    answers: list = []
    # TINY_OPTIONS: 8 images, 2 of them for validation, batch 2 -> 3 steps; the third is the last.
    _cancel_inside(trainer, monkeypatch, moment, answers, call=3 if moment.endswith("train_step") else 1)
    job = trainer.submit(options=TINY_OPTIONS)
    done = trainer.wait_final(job["id"])
    assert answers and answers[0][0] == 200 and answers[0][1]["cancel_requested"]
    assert done["state"] == "cancelled" and done["model_id"] is None and done["function"] is None
    assert not (home / "models").exists() or not any((home / "models").iterdir()), "no model may be registered"


def test_a_cancel_once_registration_began_is_refused_and_the_job_succeeds(trainer, home, monkeypatch):
    answers: list = []
    _cancel_inside(trainer, monkeypatch, "cvat_plugin.trainer.runner.register", answers)
    job = trainer.submit(options=TINY_OPTIONS)
    done = trainer.wait_final(job["id"])
    status, error = answers[0]
    assert status == 409 and "its model is being registered; it can no longer be cancelled" in error["error"]
    assert done["state"] == "succeeded" and done["model_id"] == "task-7-v1" and done["cancel_requested"] is None


#: A trainer in its own process whose worker never reaches its next cancel check, as when the
#: container is killed right after answering a cancel.
KILLABLE_TRAINER = """
import threading
from serverless.trainer import main
from cvat_plugin.trainer import runner
from tests.fakes.nuclio import NuclioHttpServer
runner.JobRunner._should_stop = lambda self: False
with NuclioHttpServer(main.handler) as server:
    print(server.url, flush=True)
    threading.Event().wait()
"""


def test_a_sigkill_right_after_a_cancel_does_not_resume_the_job(home):
    import os
    import signal
    import subprocess
    import sys

    from cvat_plugin.trainer.client import TrainerClient

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen([sys.executable, "-c", KILLABLE_TRAINER], env=env, stdout=subprocess.PIPE, text=True)
    try:
        client = TrainerClient(process.stdout.readline().strip(), token=TRAINER_TOKEN)
        job = client.submit("task-7", task_id=7, options={**TINY_OPTIONS, "epochs": 50})
        deadline = time.monotonic() + 120
        while client.get(job["id"])["step"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.cancel(job["id"])["cancel_requested"]
        on_disk = json.loads((home / "runs" / job["id"] / "job.json").read_text())
        assert on_disk["state"] == "running" and on_disk["cancel_requested"], "the cancel is written at once"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)

    restarted = Trainer(home)
    try:
        after = restarted.job(job["id"])
        assert after["state"] == "cancelled" and after["finished"] and after["model_id"] is None
        assert restarted.runner.current is None and restarted.runner.queued == []
        time.sleep(0.5)
        assert restarted.job(job["id"]) == after, "the job never runs again"
    finally:
        restarted.runner.terminate(30)


# --- a full volume --------------------------------------------------------------------------------


def _full_volume(monkeypatch) -> None:
    """Every JSON write on the volume fails as a full disk does, and the disk reports nothing free."""
    import errno
    import shutil

    def no_space(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("cvat_plugin.home.jobs.write_json_atomic", no_space)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))


def test_a_full_volume_creates_no_phantom_job_and_says_so_in_json(trainer, home, monkeypatch):
    trainer.runner  # started before the volume fills
    with monkeypatch.context() as full:
        _full_volume(full)
        status, error = trainer.call("POST", "/jobs", {"dataset_id": "task-7", "task_id": 7, "options": TINY_OPTIONS})
        assert status == 507 and set(error) == {"error"}
        assert error["error"].startswith(f"no space left on the shared volume (DETR_HOME {home}, 0 MB free)")
        assert "free at least 1 MB" in error["error"] and "then try again" in error["error"]
        status, listing = trainer.call("GET", "/jobs", fields={"task": "7"})
        assert status == 200 and listing["jobs"] == [], "no job exists without its file"
        assert not any((home / "runs").iterdir()), "and no run folder is left behind"
        assert trainer.runner.queued == [] and trainer.runner.current is None
    job = trainer.submit(options=TINY_OPTIONS)  # room again: the task is not blocked by a phantom
    assert trainer.wait_final(job["id"])["state"] == "succeeded"


def test_a_cancel_that_cannot_be_written_changes_nothing(trainer, home, monkeypatch):
    trainer.runner.terminate(30)  # no worker: the job stays queued
    queued = trainer.submit(options=TINY_OPTIONS)
    with monkeypatch.context() as full:
        _full_volume(full)
        status, error = trainer.call("POST", f"/jobs/{queued['id']}/cancel")
        assert status == 507 and "no space left on the shared volume" in error["error"]
        assert trainer.job(queued["id"])["state"] == "queued", "memory says what the disk says"
    status, job = trainer.call("POST", f"/jobs/{queued['id']}/cancel")
    assert status == 200 and job["state"] == "cancelled"
    assert json.loads((home / "runs" / queued["id"] / "job.json").read_text())["state"] == "cancelled"


def test_a_checkpoint_that_does_not_fit_says_the_volume_is_full_and_how_much_to_free(trainer, home, monkeypatch):
    import shutil

    import detr.checkpoint

    def full_disk_save(obj, f):  # what torch's zip writer raises when the disk fills
        f.write(b"x" * 3 * 1024 * 1024)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3145728 vs 3145600")

    monkeypatch.setattr(detr.checkpoint.torch, "save", full_disk_save)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 4096))
    job = trainer.submit(options=TINY_OPTIONS)
    done = trainer.wait_final(job["id"])
    assert done["state"] == "failed" and done["model_id"] is None
    assert done["error"].startswith(f"no space left on the shared volume (DETR_HOME {home}, 0 MB free) to write runs/")
    assert "free at least 4 MB" in done["error"] and f'"resume_from": "{job["id"]}"' in done["error"]
    assert "enforce fail" not in done["error"]
    assert not list((home / "runs" / job["id"]).glob(".*.tmp")), "no partial file is left"


def test_skipped_images_are_reported_in_the_job_not_only_in_the_log(trainer, home):
    images = home / "datasets" / "task-7" / "images" / "default"
    (images / "frame_000003.jpg").unlink()
    (images / "frame_000005.jpg").write_bytes(b"not a JPEG any more")
    job = trainer.submit(options=TINY_OPTIONS)
    done = trainer.wait_final(job["id"])
    assert done["state"] == "succeeded", done["error"]
    assert done["skipped_images"] == {"count": 2, "first": ["frame_000003.jpg", "frame_000005.jpg"]}
