"""CVAT's webhook: train a task (or its project) again when its labelling is done.

CVAT posts ``{"event", "job", "before_update", "webhook_id", "sender"}`` for ``update:job``
(``cvat/apps/webhooks/signals.py``), signed with the webhook's secret as
``X-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``. A job counts as done when its
``state`` is ``completed``. When an update moves a job of an auto-retrain project there (its
``state`` or ``stage`` changed) and every job of its task is completed, as CVAT tells the
service account, a training of the task starts, continuing from the task's newest model
(weights ``previous``; a task without one starts from the default weights). With the scope
``project`` (``DETR_AUTO_RETRAIN_SCOPE``) the unit is the job's project instead: it retrains once
every job of every one of its tasks is completed, continuing the project's model line. A task or
project that is already training is left alone. The answer says what happened; CVAT keeps it in
the webhook's delivery log.

Replays: CVAT's signature covers no timestamp and its requests carry no delivery id, so a
delivery posted again (CVAT's "Redeliver", or anyone who kept a signed body) is recognised by
what the payload holds. A delivery that started a training is remembered on the volume by its
job's id and ``updated_date`` and never starts another; and an event whose job was updated no
later than the task's newest training or model is ignored, since that training already saw it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from cvat_plugin.cvat.client import CvatError
from cvat_plugin.gateway.errors import GatewayError, from_cvat, from_trainer
from cvat_plugin.gateway.jobs import TrainingService, source_of_model
from cvat_plugin.gateway.preparations import Source
from cvat_plugin.gateway.settings import AutoRetrain
from cvat_plugin.home.layout import write_json_atomic
from cvat_plugin.trainer.client import TrainerError

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Signature-256"
JOB_DONE = "completed"
#: Deliveries that started a training (``"<job id>@<updated_date>"``), under DETR_HOME/gateway; the newest kept.
DELIVERIES_FILE = "webhook-deliveries.json"
REMEMBERED_DELIVERIES = 1000
#: One delivery at a time decides and remembers, so that two copies sent at once start one training.
_deliveries_lock = threading.Lock()


def signature_ok(secret: str, body: bytes, header: Optional[str]) -> bool:
    """Whether ``header`` is ``sha256=`` + the HMAC-SHA256 of ``body`` with ``secret``, compared in constant time."""
    if not header:
        return False
    expected = "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), header.strip().encode("utf-8", "replace"))


@dataclass(frozen=True)
class Decision:
    """The task to check for completion, or None with the reason to do nothing."""

    task_id: Optional[int]
    reason: str
    job_id: Optional[int] = None
    updated_date: Optional[str] = None
    """The job's ``updated_date`` as CVAT sent it: with ``job_id``, what identifies the event."""
    project_id: Optional[int] = None

    def source(self, scope: str) -> Source:
        """What retrains: the task, or with the scope ``project`` the job's project (if it has one)."""
        assert self.task_id is not None
        if scope == "project" and self.project_id is not None:
            return Source("project", self.project_id)
        return Source("task", self.task_id)


def _whole_number(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def completed_job(payload: Any, auto_retrain: AutoRetrain) -> Decision:
    """Whether this delivery completed a job of an auto-retrain project."""
    if not isinstance(payload, dict):
        return Decision(None, "the body is not a JSON object")
    event = payload.get("event")
    if event != "update:job":
        return Decision(None, f"event {event!r} does not concern training (only 'update:job' does)")
    job, before = payload.get("job"), payload.get("before_update")
    if not isinstance(job, dict) or not isinstance(before, dict):
        return Decision(None, "the update:job event has no 'job' or 'before_update' object")
    job_id, task_id = _whole_number(job.get("id")), _whole_number(job.get("task_id"))
    if task_id is None:
        return Decision(None, f"job {job_id} names no task")
    if not {"state", "stage"} & set(before):
        return Decision(None, f"job {job_id}: neither its state nor its stage changed")
    if job.get("state") != JOB_DONE:
        return Decision(None, f"job {job_id} is {job.get('state')!r}, not {JOB_DONE!r}")
    project_id = _whole_number(job.get("project_id"))
    if not auto_retrain.covers(project_id):
        where = f"project {project_id}" if project_id is not None else "a task outside projects"
        return Decision(None, f"job {job_id} is in {where}, which does not retrain automatically "
                              f"(DETR_AUTO_RETRAIN_PROJECTS)")
    return Decision(task_id, f"job {job_id} of task {task_id} was completed", job_id, job.get("updated_date"),
                    project_id)


def _time(text: Any) -> Optional[datetime]:
    """A timestamp of CVAT's (``...Z``) or ours (``...+00:00``), timezone-aware; None if it is not one."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _latest_training(service: TrainingService, source: Source) -> Optional[tuple[datetime, str]]:
    """When the task's (project's) newest training or model was made, and which it was."""
    found: list[tuple[Optional[datetime], str]] = [
        (_time(entry.card.get("created")), f"model {entry.id}")
        for entry in service.models.entries() if source_of_model(entry) == source]
    found += [(_time(prep.created), f"training {prep.id}") for prep in service.preparations.of_source(source)]
    try:
        found += [(_time(job.get("created")), f"training {job.get('id')}")
                  for job in service.trainer().list(**source.ids)]
    except TrainerError as e:
        raise from_trainer(e) from e
    dated = [(moment, what) for moment, what in found if moment is not None]
    return max(dated, key=lambda item: item[0]) if dated else None


class _Deliveries:
    """The deliveries that started a training, remembered on the volume across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.keys: list[str] = list(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            self.keys = []
        except (OSError, ValueError, TypeError) as e:
            logger.warning("%s is unreadable (%s): earlier deliveries are forgotten, newer-than checks remain",
                           path, e)
            self.keys = []

    def remember(self, key: str) -> None:
        self.keys = (self.keys + [key])[-REMEMBERED_DELIVERIES:]
        write_json_atomic(self.path, self.keys)


def _replayed(service: TrainingService, decision: Decision, deliveries: _Deliveries) -> Optional[str]:
    """Why this event must start nothing although it completes the task's jobs, or None."""
    assert decision.task_id is not None
    updated = _time(decision.updated_date)
    if updated is None:
        return (f"job {decision.job_id} has no valid updated_date ({decision.updated_date!r}), so a replayed "
                f"delivery cannot be told from a new one; nothing is started")
    if f"{decision.job_id}@{decision.updated_date}" in deliveries.keys:
        return (f"this event (job {decision.job_id} updated at {decision.updated_date}) already started a "
                f"training; a redelivered or replayed event starts nothing")
    source = decision.source(service.settings.auto_retrain.scope)
    latest = _latest_training(service, source)
    if latest is not None and updated <= latest[0]:
        return (f"job {decision.job_id} was updated at {decision.updated_date}, not after the {source.kind}'s latest "
                f"{latest[1]} ({latest[0].isoformat()}), which already includes it; a redelivered or replayed "
                f"event starts nothing")
    return None


def handle_delivery(service: TrainingService, payload: Any) -> tuple[int, dict[str, Any]]:
    """Act on one verified delivery; returns the status and body to answer CVAT with."""
    if isinstance(payload, dict) and payload.get("event") == "ping":
        return 200, {"status": "ok", "reason": "pong"}
    decision = completed_job(payload, service.settings.auto_retrain)
    task_id = decision.task_id
    if task_id is None:
        return 200, {"status": "ignored", "reason": decision.reason}
    with _deliveries_lock:
        deliveries = _Deliveries(service.settings.home / "gateway" / DELIVERIES_FILE)
        replayed = _replayed(service, decision, deliveries)
        if replayed is not None:
            logger.info("Webhook delivery for task %d ignored: %s", task_id, replayed)
            return 200, {"status": "ignored", "reason": replayed}
        credentials = service.settings.service_credentials
        source = decision.source(service.settings.auto_retrain.scope)
        try:
            with service.cvat(credentials) as client:
                task_ids = ([task["id"] for task in client.get_project_tasks(source.id)]
                            if source.kind == "project" else [task_id])
                jobs = [job for each in task_ids for job in client.get_jobs(each)]
        except CvatError as e:
            raise from_cvat(e, action=f"list the jobs of {source} as the DETR service account") from e
        unfinished = [job for job in jobs if job.get("state") != JOB_DONE]
        if unfinished or not jobs:
            whose = "its" if source.kind == "task" else f"{source}'s"
            return 200, {"status": "ignored", "reason": f"{decision.reason}, but {len(unfinished)} of {whose} "
                                                        f"{len(jobs)} jobs are not completed yet"}
        defaults, choices, problem, _ = service.dialog_choices(source)
        if problem:
            raise GatewayError(503, problem)
        weights = "previous" if "previous" in choices else defaults["weights"]
        try:
            job = service.start(credentials, source, {**defaults, "weights": weights}, trigger="webhook")
        except GatewayError as e:
            if e.status == 409:
                return 200, {"status": "ignored", "reason": e.message, "job": e.extra.get("job")}
            raise
        deliveries.remember(f"{decision.job_id}@{decision.updated_date}")
    logger.info("%s: all jobs completed; training %s started from weights %r", str(source).capitalize(), job["id"],
                weights)
    return 202, {"status": "started", "reason": f"all {len(jobs)} jobs of {source} are completed; training "
                                                f"from weights {weights!r}", "job": job}
