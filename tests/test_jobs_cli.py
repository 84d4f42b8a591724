"""cvat-detr status / cancel against a scripted trainer over real HTTP: output and exit codes."""

from __future__ import annotations

import io
import json

import pytest

from cvat_plugin import cli
from cvat_plugin.cli import exits
from tests.fakes.nuclio import TRAINER_TOKEN, NuclioHttpServer
from tests.fakes.scripted_trainer import ScriptedTrainer

RUNNING = {"id": "20250101-000000-abcdef", "task_id": 7, "state": "running", "epoch": 3, "epochs": 10,
           "metrics": {"AP50": 0.412}, "best_metrics": {"AP50": 0.5}, "eta_s": 600, "error": None,
           "model_id": None, "function": None}
DONE = {**RUNNING, "id": "20250101-000000-000001", "state": "succeeded", "epoch": 10, "eta_s": None,
        "best_metrics": {"AP": 0.31, "AP50": 0.62}, "model_id": "task-7-x", "function": "detr-task-7-x"}


@pytest.fixture
def trainer(monkeypatch):
    monkeypatch.delenv("DETR_TRAINER_URL", raising=False)
    scripted = ScriptedTrainer()
    with NuclioHttpServer(scripted) as server:
        scripted.url = server.url
        yield scripted


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["-q", *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_status_lists_jobs_of_a_task_with_progress_and_results(trainer):
    trainer.on("GET", "/jobs", (200, {"jobs": [RUNNING, DONE], "problems": []}))
    code, out, _ = run("status", "--task", "7", "--trainer", trainer.url)
    assert code == exits.EXIT_OK
    assert trainer.bodies[-1][3] == {"task": "7"}
    header, running, done = out.splitlines()
    assert header.split()[:5] == ["JOB", "TASK", "STATE", "EPOCH", "AP50"]
    assert running.split()[:5] == [RUNNING["id"], "7", "running", "3/10", "0.500"] and "10 min left" in running
    assert "task-7-x" in done and "published as detr-task-7-x" in done


def test_status_of_one_job_as_json_is_the_trainers_object(trainer):
    trainer.on("GET", f"/jobs/{DONE['id']}", (200, DONE))
    code, out, _ = run("status", DONE["id"], "--json", "--trainer", trainer.url)
    assert code == exits.EXIT_OK and json.loads(out) == DONE


def test_status_follow_waits_for_the_end_and_reports_the_model(trainer):
    job_path = f"/jobs/{RUNNING['id']}"
    trainer.on("GET", job_path, (200, RUNNING), (200, RUNNING), (200, {**DONE, "id": RUNNING["id"]}))
    code, out, _ = run("status", RUNNING["id"], "--follow", "--poll-interval", "0", "--trainer", trainer.url)
    assert code == exits.EXIT_OK
    assert "Model: task-7-x" in out and "AP50 0.620" in out


def test_status_follow_of_a_failed_job_exits_with_the_training_code(trainer):
    trainer.on("GET", f"/jobs/{RUNNING['id']}", (200, {**RUNNING, "state": "failed", "error": "out of GPU memory"}))
    code, _, err = run("status", RUNNING["id"], "--follow", "--trainer", trainer.url)
    assert code == exits.EXIT_TRAINING and "out of GPU memory" in err


def test_an_unknown_job_is_not_found(trainer):
    trainer.on("GET", "/jobs/nope", (404, {"error": "no job 'nope'; list jobs with GET /jobs"}))
    trainer.on("POST", "/jobs/nope/cancel", (404, {"error": "no job 'nope'"}))
    for argv in (("status", "nope"), ("cancel", "nope")):
        code, _, err = run(*argv, "--trainer", trainer.url)
        assert code == exits.EXIT_NOT_FOUND and "no job 'nope'" in err and "cvat-detr status" in err


def test_cancel_a_running_job_says_it_is_stopping(trainer):
    trainer.on("POST", f"/jobs/{RUNNING['id']}/cancel", (200, RUNNING))
    code, out, _ = run("cancel", RUNNING["id"], "--trainer", trainer.url)
    assert code == exits.EXIT_OK and "is stopping" in out
    assert trainer.bodies[-1][:2] == ("POST", f"/jobs/{RUNNING['id']}/cancel")


def test_cancel_a_queued_job_and_one_already_over(trainer):
    trainer.on("POST", "/jobs/q/cancel", (200, {**RUNNING, "id": "q", "state": "cancelled"}))
    trainer.on("POST", "/jobs/d/cancel", (409, {"error": "job d already succeeded; there is nothing to cancel"}))
    assert run("cancel", "q", "--trainer", trainer.url)[:2] == (exits.EXIT_OK, "Job q cancelled\n")
    code, out, _ = run("cancel", "d", "--trainer", trainer.url)
    assert code == exits.EXIT_OK and "already ended" in out


def test_without_a_trainer_url_the_commands_say_how_to_give_one(trainer):
    for argv in (("status",), ("cancel", "x"), ("status", "--follow")):
        code, _, err = run(*argv)
        assert code == exits.EXIT_USAGE and ("DETR_TRAINER_URL" in err or "--follow needs" in err)


def test_an_unreachable_trainer_has_its_own_exit_code():
    code, _, err = run("status", "--trainer", "http://127.0.0.1:9")
    assert code == exits.EXIT_UNREACHABLE and "cannot reach the trainer" in err


def test_status_lists_the_jobs_of_a_project(trainer):
    project_job = {**DONE, "task_id": None, "project_id": 5}
    trainer.on("GET", "/jobs", (200, {"jobs": [project_job], "problems": []}))
    code, out, _ = run("status", "--project", "5", "--trainer", trainer.url)
    assert code == exits.EXIT_OK
    assert trainer.bodies[-1][3] == {"project": "5"}
    assert out.splitlines()[1].split()[:3] == [DONE["id"], "project", "5"]


@pytest.mark.parametrize("value, message", [("", "DETR_TRAINER_TOKEN is not set, and cvat-detr --trainer needs it"),
                                            ("short", "DETR_TRAINER_TOKEN is 5 characters long")])
def test_the_trainer_commands_need_the_token(trainer, monkeypatch, value, message):
    monkeypatch.setenv("DETR_TRAINER_TOKEN", value)
    code, _, err = run("status", "--trainer", trainer.url)
    assert code == exits.EXIT_USAGE and message in err and not trainer.bodies


def test_the_trainer_commands_send_the_token(trainer):
    trainer.on("GET", "/jobs", (200, {"jobs": [], "problems": []}))
    assert run("status", "--trainer", trainer.url)[0] == exits.EXIT_OK
    assert trainer.headers[-1]["Authorization"] == f"Bearer {TRAINER_TOKEN}"
