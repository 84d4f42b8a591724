"""Trainings on their way to the trainer: the gateway's records of them.

A preparation is a job in the trainer's Job shape (``cvat_plugin/home/jobs.py``) whose
``state`` is ``preparing`` while the gateway exports the task and builds its training set, then
``submitted`` (it stands for the trainer's job from then on), ``failed`` (the reason in
``error``) or ``cancelled``. Records live in ``$DETR_HOME/gateway/<id>.json``, so a failure stays
visible in the task's jobs after a restart; one that a restart cut short is marked failed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Optional

# The trainer's id and timestamp formats (no torch there), so that preparations and jobs sort together.
from cvat_plugin.home.jobs import utc_now
from cvat_plugin.home.layout import new_id, write_json_atomic
from cvat_plugin.progress import ProgressReporter

logger = logging.getLogger(__name__)

PREPARATION_PREFIX = "prep-"


class Source(NamedTuple):
    """What a training is of: a CVAT task, or a project (all its tasks)."""

    kind: str
    """``task`` or ``project``."""
    id: int

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"

    @property
    def ids(self) -> dict[str, Optional[int]]:
        """``task_id`` and ``project_id`` as jobs and model cards carry them (one is None)."""
        return {"task_id": self.id if self.kind == "task" else None,
                "project_id": self.id if self.kind == "project" else None}


def new_preparation_id() -> str:
    """A trainer-style job id with a prefix: sortable by time, never mistaken for the trainer's."""
    return new_id(PREPARATION_PREFIX.rstrip("-"))


@dataclass
class Preparation:
    """A training on its way to the trainer."""

    id: str
    task_id: Optional[int]
    """None for a project's training (``project_id`` is set)."""
    dataset_id: str
    options: dict[str, Any]
    """The job's options (``cvat_plugin.training.schema``), always with ``settings.JOB_DEFAULTS``' ones."""
    state: str = "preparing"
    """``preparing``, then ``submitted``, ``failed`` or ``cancelled``."""
    error: Optional[str] = None
    job_id: Optional[str] = None
    """The trainer's job, once submitted."""
    trigger: str = "user"
    """``user`` (the dialog or the API) or ``webhook`` (auto-retrain)."""
    created: str = field(default_factory=utc_now)
    finished: Optional[str] = None
    project_id: Optional[int] = None

    @property
    def source(self) -> Source:
        return Source("task", self.task_id) if self.task_id is not None else Source("project", self.project_id)

    def to_job(self) -> dict[str, Any]:
        """The trainer's Job object for a job that has not reached the trainer."""
        return {
            "id": self.id, "task_id": self.task_id, "project_id": self.project_id, "dataset_id": self.dataset_id,
            "state": self.state,
            "epoch": 0, "epochs": self.options.get("epochs", 0), "step": 0, "steps": 0, "progress": 0.0,
            "loss": None, "metrics": {}, "best_metrics": {}, "eta_s": None, "error": self.error, "model_id": None,
            "function": None, "options": dict(self.options), "resume_from": None,
            "publish": bool(self.options.get("publish")), "created": self.created, "started": None,
            "finished": self.finished,
        }


class PreparationStore:
    """Preparations on disk, one JSON file each; not thread-safe (the service holds a lock)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._items: dict[str, Preparation] = {}

    def load(self) -> None:
        """Read every record; those still ``preparing`` were cut short by a restart and become failed."""
        self._items.clear()
        for path in sorted(self.folder.glob(f"{PREPARATION_PREFIX}*.json")):
            try:
                prep = Preparation(**json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError) as e:
                logger.warning("Skipping unreadable preparation %s: %s", path, e)
                continue
            if prep.state == "preparing":
                prep.state, prep.finished = "failed", utc_now()
                prep.error = ("the DETR gateway restarted while it prepared this training (export and training "
                              "set); start the training again")
                self.save(prep)
            self._items[prep.id] = prep

    def save(self, prep: Preparation) -> None:
        self._items[prep.id] = prep
        write_json_atomic(self.folder / f"{prep.id}.json", dataclasses.asdict(prep))

    def get(self, prep_id: str) -> Optional[Preparation]:
        prep = self._items.get(prep_id)
        return dataclasses.replace(prep) if prep else None

    def of_task(self, task_id: int) -> list[Preparation]:
        return self.of_source(Source("task", task_id))

    def of_source(self, source: Source) -> list[Preparation]:
        return [dataclasses.replace(p) for p in self._items.values() if p.source == source]


class PreparationCancelled(Exception):
    """The user cancelled the preparation; raised from its progress reporter to stop the work."""


class CancelCheck(ProgressReporter):
    """Stops a download or a training-set build at its next step once the preparation is cancelled."""

    def __init__(self, cancelled: threading.Event) -> None:
        self.cancelled = cancelled

    def start(self, total: Optional[int], *, desc: str, unit: str = "it") -> None:
        self.advance(0)

    def advance(self, delta: int) -> None:
        if self.cancelled.is_set():
            raise PreparationCancelled()
