"""CVAT's webhook: train a task again when its labelling is done.

CVAT posts ``{"event", "job", "before_update", "webhook_id", "sender"}`` for ``update:job``
(``cvat/apps/webhooks/signals.py``), signed with the webhook's secret as
``X-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``. A job counts as done when its
``state`` is ``completed``. When an update moves a job of an auto-retrain project there (its
``state`` or ``stage`` changed) and every job of its task is completed, as CVAT tells the
service account, a training of the task starts, continuing from the task's newest model
(weights ``previous``; a task without one starts from the default weights). A task that is
already training is left alone, so a repeated delivery starts nothing. The answer says what
happened; CVAT keeps it in the webhook's delivery log.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Any, Optional

from cvat_plugin.client import CvatError
from cvat_plugin.gateway_errors import GatewayError, from_cvat
from cvat_plugin.gateway_jobs import TrainingService
from cvat_plugin.gateway_preparations import Source
from cvat_plugin.gateway_settings import AutoRetrain

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Signature-256"
JOB_DONE = "completed"


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
    return Decision(task_id, f"job {job_id} of task {task_id} was completed")


def handle_delivery(service: TrainingService, payload: Any) -> tuple[int, dict[str, Any]]:
    """Act on one verified delivery; returns the status and body to answer CVAT with."""
    if isinstance(payload, dict) and payload.get("event") == "ping":
        return 200, {"status": "ok", "reason": "pong"}
    decision = completed_job(payload, service.settings.auto_retrain)
    task_id = decision.task_id
    if task_id is None:
        return 200, {"status": "ignored", "reason": decision.reason}
    credentials = service.settings.service_credentials
    try:
        with service.cvat(credentials) as client:
            jobs = client.get_jobs(task_id)
    except CvatError as e:
        raise from_cvat(e, action=f"list the jobs of task {task_id} as the DETR service account") from e
    unfinished = [job for job in jobs if job.get("state") != JOB_DONE]
    if unfinished or not jobs:
        return 200, {"status": "ignored", "reason": f"{decision.reason}, but {len(unfinished)} of its "
                                                    f"{len(jobs)} jobs are not completed yet"}
    defaults, choices, problem, _ = service.dialog_choices(Source("task", task_id))
    if problem:
        raise GatewayError(503, problem)
    weights = "previous" if "previous" in choices else defaults["weights"]
    try:
        job = service.start(credentials, Source("task", task_id), {**defaults, "weights": weights},
                            trigger="webhook")
    except GatewayError as e:
        if e.status == 409:
            return 200, {"status": "ignored", "reason": e.message, "job": e.extra.get("job")}
        raise
    logger.info("Task %d: all jobs completed; training %s started from weights %r", task_id, job["id"], weights)
    return 202, {"status": "started", "reason": f"all {len(jobs)} jobs of task {task_id} are completed; training "
                                                f"from weights {weights!r}", "job": job}
