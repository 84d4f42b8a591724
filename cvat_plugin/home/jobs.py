"""Training jobs and their persistent state (``DETR_HOME/runs/<id>/job.json``).

The store keeps every job in memory for fast status requests and writes each change
to disk atomically, so a restarted container reports the truth. A ``job.json`` that
cannot be read is reported (``problems``) rather than stopping the trainer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cvat_plugin.home.layout import write_json_atomic

logger = logging.getLogger(__name__)

STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
#: States a job never leaves.
FINAL_STATES = ("succeeded", "failed", "cancelled")
#: States of jobs waiting for the worker: new ones, and running ones a restart interrupted.
WAITING_STATES = ("queued", "interrupted")

JOB_FILE = "job.json"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Job:
    """One training job; ``to_dict`` is the Job object of the trainer's HTTP API."""

    id: str
    dataset_id: str
    task_id: int | None = None
    project_id: int | None = None
    """Set instead of ``task_id`` for a job that trains on a whole CVAT project."""
    state: str = "queued"
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    """Steps per epoch."""
    progress: float = 0.0
    loss: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    """Last validation metrics (AP, AP50, ...)."""
    best_metrics: dict[str, Any] = field(default_factory=dict)
    eta_s: float | None = None
    error: str | None = None
    model_id: str | None = None
    function: str | None = None
    """Nuclio function serving the model, once published."""
    options: dict[str, Any] = field(default_factory=dict)
    """Training options as submitted (validated)."""
    recipe: str | None = None
    """The recipe the trainer chose for the data, and how to override it (one line)."""
    resume_from: str | None = None
    """Job whose last checkpoint this job continues from."""
    publish: bool = False
    skipped_images: dict[str, Any] = field(default_factory=dict)
    """Images the run left out, their files missing or unreadable: ``{"count", "first"}`` (the first few names)."""
    cancel_requested: str | None = None
    """When a cancel of the running job was asked: written at once, so that it holds up to the model's
    registration and across a restart (the job then ends cancelled instead of resuming)."""
    created: str = field(default_factory=utc_now)
    started: str | None = None
    finished: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown keys {unknown}")
        job = cls(**data)
        if job.state not in STATES:
            raise ValueError(f"state {job.state!r} is not one of {', '.join(STATES)}")
        return job


class JobNotFound(LookupError):
    """No job has this id; ``where`` names the trainer that has none, ``hint`` how to list them."""

    def __init__(self, job_id: str, *, where: str = "", hint: str = ""):
        super().__init__(f"{where + ' has ' if where else ''}no job {job_id!r}{'; ' + hint if hint else ''}")
        self.job_id = job_id


class JobUnreadable(ValueError):
    """The job's ``job.json`` cannot be read; the message says how to clear it."""


class JobStore:
    """Thread-safe jobs, one ``job.json`` per run folder."""

    def __init__(self, runs_dir: Path):
        self.runs_dir = runs_dir
        self._jobs: dict[str, Job] = {}
        self._problems: dict[str, str] = {}
        self._lock = threading.RLock()

    def load(self) -> None:
        """Read every ``runs/*/job.json``; unreadable ones become problems, not errors."""
        with self._lock:
            self._jobs.clear()
            self._problems.clear()
            for path in sorted(self.runs_dir.glob(f"*/{JOB_FILE}")):
                job_id = path.parent.name
                try:
                    job = Job.from_dict(json.loads(path.read_text(encoding="utf-8")))
                    if job.id != job_id:
                        raise ValueError(f"its id {job.id!r} does not match the folder name")
                except (OSError, ValueError, TypeError) as e:
                    message = (
                        f"runs/{job_id}/{JOB_FILE} is unreadable ({e}); the job is skipped. "
                        f"Fix the file or delete the folder runs/{job_id} to remove this message"
                    )
                    self._problems[job_id] = message
                    logger.error("%s", message)
                    continue
                self._jobs[job_id] = job

    @property
    def problems(self) -> list[str]:
        with self._lock:
            return list(self._problems.values())

    def add(self, job: Job) -> None:
        """A job exists once its file is written: if the write fails (a full volume), there is no job,
        no run folder, and the ``OSError`` is raised."""
        with self._lock:
            try:
                self._write(job)
            except OSError:
                try:
                    (self.runs_dir / job.id).rmdir()
                except OSError:
                    pass  # not empty or already gone: nothing of ours to remove
                raise
            self._jobs[job.id] = job

    def get(self, job_id: str) -> Job:
        """A copy of the job; raises :class:`JobNotFound`, or :class:`JobUnreadable` for a corrupted file."""
        with self._lock:
            if job_id in self._problems:
                raise JobUnreadable(self._problems[job_id])
            if job_id not in self._jobs:
                raise JobNotFound(job_id)
            return dataclasses.replace(self._jobs[job_id])

    def update(self, job_id: str, *, persist: bool = True, **changes: Any) -> Job:
        """Apply ``changes`` to a job and (by default) write it; returns a copy. When the write fails the
        job is left as it was, in memory as on disk, and the ``OSError`` is raised."""
        with self._lock:
            for key in changes:
                if not hasattr(self._jobs[job_id], key):
                    raise AttributeError(f"Job has no field {key!r}")
            job = dataclasses.replace(self._jobs[job_id], **changes)
            if persist:
                self._write(job)
            self._jobs[job_id] = job
            return dataclasses.replace(job)

    def jobs(self) -> list[Job]:
        """Copies of all jobs, newest first."""
        with self._lock:
            jobs = [dataclasses.replace(job) for job in self._jobs.values()]
        return sorted(jobs, key=lambda job: (job.created, job.id), reverse=True)

    def waiting(self) -> list[Job]:
        """Jobs the worker still has to run, oldest first (FIFO)."""
        return [job for job in reversed(self.jobs()) if job.state in WAITING_STATES]

    def _write(self, job: Job) -> None:
        write_json_atomic(self.runs_dir / job.id / JOB_FILE, job.to_dict())
