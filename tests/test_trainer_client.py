"""cvat_plugin.trainer.client against scripted trainers served over real HTTP."""

from __future__ import annotations

import socket

import pytest

from cvat_plugin.trainer.client import (
    TrainerClient,
    TrainerError,
    TrainerRequestError,
    TrainerUnavailable,
    redact_url,
)
from tests.fakes.nuclio import TRAINER_TOKEN, NuclioHttpServer
from tests.fakes.scripted_trainer import ScriptedTrainer

JOB = {"id": "20250101-000000-abcdef", "state": "queued", "epoch": 0, "epochs": 2}


@pytest.fixture
def trainer():
    scripted = ScriptedTrainer()
    with NuclioHttpServer(scripted) as server:
        scripted.url = server.url
        yield scripted


def client(url: str, **kwargs) -> TrainerClient:
    return TrainerClient(url, token=TRAINER_TOKEN, backoff_factor=0, **kwargs)


def test_submit_sends_the_job_request_and_returns_the_job(trainer):
    trainer.on("POST", "/jobs", (202, JOB))
    job = client(trainer.url).submit("task-7", task_id=7, options={"epochs": 2}, publish=True)
    assert job == JOB
    method, path, body, _ = trainer.bodies[-1]
    assert (method, path) == ("POST", "/jobs")
    assert body == {"dataset_id": "task-7", "task_id": 7, "options": {"epochs": 2}, "publish": True}


def test_a_project_job_names_the_project(trainer):
    trainer.on("POST", "/jobs", (202, JOB))
    trainer.on("GET", "/jobs", (200, {"jobs": [JOB], "problems": []}))
    client(trainer.url).submit("project5-x", project_id=5)
    assert trainer.bodies[-1][2] == {"dataset_id": "project5-x", "project_id": 5, "options": {}}
    assert client(trainer.url).list(project_id=5) == [JOB]
    assert trainer.bodies[-1][3] == {"project": "5"}


def test_get_list_cancel_and_health_use_the_documented_paths(trainer):
    trainer.on("GET", f"/jobs/{JOB['id']}", (200, JOB))
    trainer.on("GET", "/jobs", (200, {"jobs": [JOB], "problems": []}))
    trainer.on("POST", f"/jobs/{JOB['id']}/cancel", (200, {**JOB, "state": "cancelled"}))
    trainer.on("GET", "/health", (200, {"status": "ok"}))
    c = client(trainer.url)
    assert c.get(JOB["id"]) == JOB
    assert c.list(task_id=7) == [JOB]
    assert trainer.bodies[-1][3] == {"task": "7"}
    assert c.cancel(JOB["id"])["state"] == "cancelled"
    assert c.health() == {"status": "ok"}


def test_a_refusal_carries_the_trainers_message_and_status(trainer):
    trainer.on("POST", "/jobs", (400, {"error": "unknown option 'epoch'; known options: weights, ..."}))
    with pytest.raises(TrainerRequestError, match="unknown option 'epoch'") as caught:
        client(trainer.url).submit("task-7", options={"epoch": 3})
    assert caught.value.status == 400
    assert "400" in str(caught.value)


def test_reads_are_retried_through_gateway_errors(trainer):
    trainer.on("GET", f"/jobs/{JOB['id']}", (503, "no worker"), (503, "no worker"), (200, JOB))
    assert client(trainer.url, retries=3).get(JOB["id"]) == JOB
    assert len(trainer.bodies) == 3


def test_a_submission_is_never_sent_twice(trainer):
    trainer.on("POST", "/jobs", (503, "no worker"), (202, JOB))
    with pytest.raises(TrainerUnavailable, match="503"):
        client(trainer.url, retries=3).submit("task-7")
    assert len(trainer.bodies) == 1


def test_an_unreachable_trainer_is_reported_without_credentials():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = client(f"http://admin:s3cret@127.0.0.1:{port}", retries=1)
    with pytest.raises(TrainerUnavailable, match="cannot reach the trainer") as caught:
        c.health()
    assert "s3cret" not in str(caught.value) and "admin" not in str(caught.value)
    assert redact_url("https://u:p@host:8080/x?y=1") == "https://host:8080/x?y=1"


def test_a_non_json_answer_is_an_error(trainer):
    trainer.on("GET", "/health", (200, "hello"))
    with pytest.raises(TrainerError, match="without a JSON body"):
        client(trainer.url).health()


def test_the_url_must_be_http():
    with pytest.raises(TrainerError, match="must start with http"):
        TrainerClient("nuclio-detr-trainer:8080", token=TRAINER_TOKEN)


def test_follow_reports_each_change_and_returns_the_final_job(trainer):
    states = [(200, {**JOB, "state": s, "epoch": e}) for s, e in
              [("queued", 0), ("running", 1), ("running", 1), ("running", 2), ("succeeded", 2)]]
    trainer.on("GET", f"/jobs/{JOB['id']}", *states)
    seen = []
    final = client(trainer.url).follow(JOB["id"], on_update=seen.append, sleep=lambda s: None)
    assert final["state"] == "succeeded"
    assert [(j["state"], j["epoch"]) for j in seen] == [("queued", 0), ("running", 1), ("running", 2),
                                                        ("succeeded", 2)]


def test_follow_waits_out_a_trainer_restart(trainer):
    trainer.on("GET", f"/jobs/{JOB['id']}", (200, {**JOB, "state": "running"}), (503, "restarting"),
               (200, {**JOB, "state": "interrupted"}), (200, {**JOB, "state": "succeeded"}))
    final = client(trainer.url, retries=0).follow(JOB["id"], sleep=lambda s: None)
    assert final["state"] == "succeeded"


def test_follow_gives_up_after_its_timeout(trainer):
    trainer.on("GET", f"/jobs/{JOB['id']}", (200, {**JOB, "state": "running"}))
    with pytest.raises(TrainerError, match="still running after 0 s; check it later"):
        client(trainer.url).follow(JOB["id"], timeout=0, sleep=lambda s: None)
