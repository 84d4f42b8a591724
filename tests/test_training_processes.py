"""The trainer with several training processes (DETR_TRAIN_PROCESSES=2: torchrun, gloo on the CPU), driven
through its job API: progress, cancel, resume and the model's registration work as in one process, and the
two processes train and report exactly what one process does."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from detr.config import TINY_MODEL
from detr.synthetic import make_shapes_dataset
from tests.test_trainer_function import LABELS, TINY_OPTIONS, Trainer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("restore_logging")]

#: What makes one and two processes compute the same (tests/test_distributed.py): same-size images at
#: one scale, no dropout, frozen norms, fp32. Batch 4 on 6 training images: one step per epoch.
SAME_AS_ONE = {**TINY_OPTIONS, "model": TINY_MODEL.replace(dropout=0.0, backbone_norm="frozen").to_dict(),
               "batch_size": 4, "multi_scale": False, "hflip": False, "precision": "fp32"}


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DETR_HOME", str(tmp_path))
    monkeypatch.setenv("DETR_WEIGHTS", str(tmp_path / "no-weights"))
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))  # for the training processes
    folder = tmp_path / "datasets" / "task-7"
    make_shapes_dataset(folder, num_images=8, seed=0, image_size=(64, 64), classes=tuple(LABELS), layout="cvat-folder")
    (folder / "labels.json").write_text(json.dumps([{"id": i + 1, "name": n} for i, n in enumerate(LABELS)]))
    return tmp_path


def start(home: Path, monkeypatch, processes: int) -> Trainer:
    monkeypatch.setenv("DETR_TRAIN_PROCESSES", str(processes))
    trainer = Trainer(home)
    trainer.call("GET", "/health")  # init_context: the launcher is chosen now
    return trainer


def test_two_processes_train_report_and_register_what_one_process_does(home, monkeypatch):
    runs = {}
    for processes in (1, 2):
        trainer = start(home, monkeypatch, processes)
        try:
            job = trainer.submit(options={**SAME_AS_ONE, "epochs": 2})
            done = trainer.wait_final(job["id"])
        finally:
            trainer.runner.terminate(30)
        assert done["state"] == "succeeded", done["error"]
        assert done["epoch"] == done["epochs"] == 2 and done["step"] == done["steps"] == 1 and done["progress"] == 1
        runs[processes] = (done, home / "runs" / job["id"])
    (one, one_dir), (two, two_dir) = runs[1], runs[2]
    assert (two_dir / "launch" / "result.json").is_file() and not (one_dir / "launch").exists()
    assert (one["model_id"], two["model_id"]) == ("task-7-v1", "task-7-v2")

    # The losses each epoch reports, and the weights after both steps, are one process's.
    read = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (one_dir, two_dir)]
    for a, b in zip(*read):
        assert a["epoch"] == b["epoch"]
        losses = [k for k in a if k.startswith("train_loss")]
        assert len(losses) > 3 and all(abs(a[k] - b[k]) < 1e-4 for k in losses), [(a[k], b[k]) for k in losses]
    assert abs(one["loss"] - two["loss"]) < 1e-4
    a = torch.load(one_dir / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(two_dir / "checkpoint.pt", weights_only=True)["model"]
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-4
    card = json.loads((home / "models" / "task-7-v2" / "model.json").read_text())
    assert card["run_id"] == two_dir.name and (home / "models" / "task-7-v2" / "model.pt").is_file()


def test_a_job_in_two_processes_reports_progress_is_cancelled_and_resumes(home, monkeypatch):
    trainer = start(home, monkeypatch, 2)
    try:
        job = trainer.submit(options={**TINY_OPTIONS, "epochs": 200})
        running = trainer.wait(job["id"], lambda j: j["state"] == "running" and j["step"] > 0)
        assert running["epochs"] == 200 and running["steps"] == 3 and running["loss"] is not None
        assert trainer.call("GET", "/health")[1]["running"] == job["id"]

        status, answer = trainer.call("POST", f"/jobs/{job['id']}/cancel")
        assert status == 200 and answer["cancel_requested"]
        done = trainer.wait_final(job["id"])
        assert done["state"] == "cancelled" and done["model_id"] is None, done["error"]
        run = home / "runs" / job["id"]
        assert (run / "launch" / "stop").is_file() and (run / "checkpoint.pt").is_file()
        stopped_at = torch.load(run / "checkpoint.pt", weights_only=True)
        assert not (home / "models").exists() or not any((home / "models").iterdir())

        more = trainer.submit(resume_from=job["id"], options={"epochs": stopped_at["epoch"] + 1})
        resumed = trainer.wait_final(more["id"])
        assert resumed["state"] == "succeeded", resumed["error"]
        assert resumed["model_id"] == "task-7-v1" and resumed["epoch"] == stopped_at["epoch"] + 1
        request = json.loads((home / "runs" / more["id"] / "launch" / "request.json").read_text())
        saved = json.loads((run / "config.json").read_text())["model"]
        assert request["resume"] is True and request["model_config"] == saved, "the checkpoint's model"
        assert request["train_config"]["epochs"] == stopped_at["epoch"] + 1
        assert [p.name for p in (home / "models").iterdir()] == ["task-7-v1"]
    finally:
        trainer.runner.terminate(30)


def test_a_restart_interrupts_the_processes_and_resumes_them(home, monkeypatch):
    trainer = start(home, monkeypatch, 2)
    job = trainer.submit(options={**TINY_OPTIONS, "epochs": 2})
    trainer.wait(job["id"], lambda j: j["state"] == "running" and j["step"] > 0)
    trainer.stop()  # Nuclio's termination signal
    assert trainer.job(job["id"])["state"] == "interrupted"

    restarted = Trainer(home)
    try:
        done = restarted.wait_final(job["id"])
        assert done["state"] == "succeeded" and done["model_id"] == "task-7-v1", done["error"]
        records = (home / "runs" / job["id"] / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in records] == [1, 2]
    finally:
        restarted.runner.terminate(30)


def test_a_failing_process_fails_the_job_with_the_engines_message(home, monkeypatch):
    broken = home / "datasets" / "broken"
    broken.mkdir()
    (broken / "labels.json").write_text(json.dumps([{"id": 1, "name": "circle"}]))
    trainer = start(home, monkeypatch, 2)
    try:
        done = trainer.wait_final(trainer.submit(dataset_id="broken", options=TINY_OPTIONS)["id"])
        assert done["state"] == "failed" and "broken" in done["error"] and "annotations" in done["error"]
        assert "torchrun" not in done["error"]
        assert trainer.runner.alive, "the worker goes on with the next job"
    finally:
        trainer.runner.terminate(30)


def test_a_process_that_dies_fails_the_job_with_the_last_lines_of_its_output(home, monkeypatch):
    trainer = start(home, monkeypatch, 2)
    try:
        job = trainer.submit(options={**TINY_OPTIONS, "epochs": 200})
        trainer.wait(job["id"], lambda j: j["state"] == "running" and j["step"] > 0)
        os.kill(_training_process(home / "runs" / job["id"], rank=1), signal.SIGKILL)  # as the OOM killer does
        done = trainer.wait_final(job["id"])
        assert done["state"] == "failed" and done["model_id"] is None
        assert done["error"].startswith("the training processes failed (torchrun exit code 1); the last lines")
        assert "SIGKILL" in done["error"], done["error"]
    finally:
        trainer.runner.terminate(30)


def _training_process(run: Path, rank: int) -> int:
    """The pid of the training process of ``run`` with this rank (torchrun's children, found in /proc)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
                environ = (entry / "environ").read_bytes().split(b"\0")
            except (OSError, ValueError):
                continue
            if str(run).encode() in command and b"cvat_plugin.trainer.launch.worker" in command \
                    and f"RANK={rank}".encode() in environ and b"torch.distributed.run" not in command:
                return int(entry.name)
        time.sleep(0.1)
    raise AssertionError(f"no training process of rank {rank} for {run}")
