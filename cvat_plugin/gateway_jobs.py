"""What the gateway does for a task, once the caller is known: the summary, starting a training,
its jobs, cancelling, the task's models. Every call first asks CVAT, as the caller, for the task.

Starting a training exports the task and builds its training set, which takes a while, so it
runs in a background thread as a preparation (``cvat_plugin.gateway_preparations``) that
submits the job to the trainer when the training set is ready.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Any, Mapping, Optional

from cvat_plugin.auth import Credentials
from cvat_plugin.client import CvatClient, CvatError
from cvat_plugin.dataset import export_task
from cvat_plugin.gateway_auth import authorize_task, require_credentials
from cvat_plugin.gateway_errors import GatewayError, failure_message, from_cvat, from_trainer
from cvat_plugin.gateway_preparations import (
    PREPARATION_PREFIX,
    CancelCheck,
    Preparation,
    PreparationCancelled,
    PreparationStore,
    new_preparation_id,
)
from cvat_plugin.gateway_settings import WEIGHTS, GatewaySettings
from cvat_plugin.model_store import ModelStore
from cvat_plugin.storage import Storage, new_id
from cvat_plugin.task_summary import summarize_task
from cvat_plugin.trainer_client import TrainerClient, TrainerError, TrainerRequestError
from detr.config import TrainConfig
from serverless.trainer.jobs import utc_now

logger = logging.getLogger(__name__)

#: Trainer job states that hold the task: a second training gets 409 (``interrupted`` resumes by itself).
ACTIVE_STATES = ("queued", "running", "interrupted")
#: ``detr.TrainConfig``'s cap of the longer image side, and its ratio to the default shorter side (1333 / 800).
DEFAULT_MAX_SIZE = TrainConfig.max_size
MAX_SIZE_RATIO = TrainConfig.max_size / TrainConfig.image_size
#: Calls made while a request waits: fewer retries and shorter timeouts than background work.
REQUEST_TIMEOUT = (5.0, 30.0)
REQUEST_RETRIES = 1


class TrainingService:
    """The gateway's operations; ``credentials`` are always the caller's own."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.storage = Storage(settings.home)
        self.models = ModelStore(settings.home)
        self.preparations = PreparationStore(settings.home / "gateway")
        self.preparations.load()
        self._lock = threading.RLock()
        self._cancel_events: dict[str, threading.Event] = {}
        self._executor = ThreadPoolExecutor(settings.workers, thread_name_prefix="detr-prepare")

    def close(self) -> None:
        """Stop taking work; running preparations are marked failed at the next start."""
        for event in self._cancel_events.values():
            event.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- clients --------------------------------------------------------------------------------

    def cvat(self, credentials: Optional[Credentials], *, background: bool = False) -> CvatClient:
        """A CVAT client acting as ``credentials``; quick to give up while a request waits."""
        if background:
            return CvatClient(self.settings.cvat_url, credentials, poll_interval=self.settings.export_poll_interval)
        return CvatClient(self.settings.cvat_url, credentials, timeout=REQUEST_TIMEOUT, retries=REQUEST_RETRIES)

    def trainer(self) -> TrainerClient:
        """One per call (requests sessions are not meant to be shared between threads); a request waits
        for it, so a trainer that is down is reported at once rather than after long retries."""
        return TrainerClient(self.settings.trainer_url, token=self.settings.trainer_token, timeout=REQUEST_TIMEOUT,
                             retries=REQUEST_RETRIES)

    def authorize(self, credentials: Optional[Credentials], task_id: int) -> dict:
        with self.cvat(credentials) as client:
            return authorize_task(client, task_id)

    # --- reads ----------------------------------------------------------------------------------

    def summary(self, credentials: Optional[Credentials], task_id: int) -> dict[str, Any]:
        """The task's counts and warnings, and the dialog's defaults and weight choices."""
        with self.cvat(credentials) as client:
            task = authorize_task(client, task_id)
            try:
                summary = summarize_task(task, client.get_labels(task_id), client.get_annotations(task_id),
                                         client.get_data_meta(task_id))
            except CvatError as e:
                raise from_cvat(e, action=f"read task {task_id}") from e
        defaults, choices, problem = self.dialog_choices(task_id)
        if problem:
            summary["warnings"].append(problem)
        return {**summary, "defaults": defaults, "weights_options": choices}

    def dialog_choices(self, task_id: int) -> tuple[dict[str, Any], list[str], Optional[str]]:
        """The task's default options and weight choices, as far as the trainer can serve them, and a
        warning when the trainer is unreachable."""
        problem = None
        try:
            health = self.trainer().health()
        except TrainerError as e:
            logger.warning("Trainer unreachable while preparing the options of task %d: %s", task_id, e)
            health = {}
            problem = ("the DETR trainer is not reachable right now: training can start once it is back; if this "
                       "persists, ask a CVAT admin to check the detr-trainer function")
        return *self._choices(task_id, health), problem

    def _choices(self, task_id: int, health: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Defaults and weight choices given the trainer's health: only weights it has (``previous``
        once the task has a model), and no publishing when it cannot publish."""
        defaults = self.settings.dialog_defaults
        has_model = self.has_model(task_id)
        choices = [w for w in health.get("weights", WEIGHTS) if w in WEIGHTS and (w != "previous" or has_model)]
        if defaults["weights"] not in choices and choices:
            defaults["weights"] = choices[0]
        if health.get("publish") is False:
            defaults["publish"] = False
        return defaults, choices

    def jobs(self, credentials: Optional[Credentials], task_id: int) -> list[dict[str, Any]]:
        """The task's jobs, newest first: the trainer's, and preparations that never reached it."""
        self.authorize(credentials, task_id)
        try:
            jobs = self.trainer().list(task_id=task_id)
        except TrainerError as e:
            raise from_trainer(e) from e
        with self._lock:
            jobs += [p.to_job() for p in self.preparations.of_task(task_id) if p.state != "submitted"]
        return sorted(jobs, key=lambda job: str(job.get("created") or ""), reverse=True)

    def job(self, credentials: Optional[Credentials], job_id: str) -> dict[str, Any]:
        """One job, if the caller may see its task; a submitted preparation answers with the trainer's job."""
        require_credentials(credentials)
        if job_id.startswith(PREPARATION_PREFIX):
            prep = self._preparation(job_id)
            self._authorize_job(credentials, job_id, prep.task_id)
            return self._trainer_job(prep.job_id) if prep.job_id else prep.to_job()
        job = self._trainer_job(job_id)
        self._authorize_job(credentials, job_id, job.get("task_id"))
        return job

    def task_models(self, credentials: Optional[Credentials], task_id: int) -> list[dict[str, Any]]:
        """Models trained on the task, newest first."""
        self.authorize(credentials, task_id)
        return [{"id": entry.id, "task_id": entry.task_id, "version": entry.version,
                 "created": entry.card.get("created"), "metrics": entry.metrics,
                 "labels": [label.get("name") if isinstance(label, dict) else label
                            for label in entry.card.get("labels") or []],
                 "function": entry.function}
                for entry in self.models.entries() if entry.task_id == task_id]

    def health(self) -> dict[str, Any]:
        """For probes and admins; asks only the trainer, never CVAT, and names no addresses."""
        try:
            trainer = self.trainer().health().get("status", "ok")
        except TrainerError as e:
            logger.warning("Health check: %s", e)
            trainer = "unavailable"
        with self._lock:
            preparing = len(self._cancel_events)
        return {"status": "ok" if trainer == "ok" else "degraded", "version": _version(), "trainer": trainer,
                "preparing": preparing, "webhooks": bool(self.settings.webhook_secret),
                "auto_retrain": self.settings.auto_retrain.enabled}

    # --- actions --------------------------------------------------------------------------------

    def start(self, credentials: Optional[Credentials], task_id: int, options: Mapping[str, Any], *,
              trigger: str = "user") -> dict[str, Any]:
        """Start a training of the task as ``credentials`` (the caller, or the service account for a
        webhook); returns the preparing job. 409 with the job when the task already has one running."""
        self.authorize(credentials, task_id)
        trainer = self.trainer()
        try:
            health = trainer.health()
        except TrainerError as e:
            raise from_trainer(e) from e
        options = {**self._choices(task_id, health)[0], **options}
        self._check_capabilities(task_id, options, health)
        with self._lock:
            active = self._active_job(task_id, trainer)
            if active is not None:
                raise GatewayError(409, f"task {task_id} is already training (job {active['id']}, "
                                        f"{active['state']}); follow that job, or cancel it to start another",
                                   job=active)
            prep = Preparation(new_preparation_id(), task_id, new_id(task_id), options, trigger=trigger)
            self.preparations.save(prep)
            self._cancel_events[prep.id] = threading.Event()
        self._executor.submit(self._prepare, prep.id, credentials)
        logger.info("Task %d: training %s requested (%s), preparing the training set %s", task_id, prep.id,
                    trigger, prep.dataset_id)
        return prep.to_job()

    def cancel(self, credentials: Optional[Credentials], job_id: str) -> dict[str, Any]:
        """Cancel a preparation (its work stops at the next step) or the trainer's job."""
        require_credentials(credentials)
        if job_id.startswith(PREPARATION_PREFIX):
            prep = self._preparation(job_id)
            self._authorize_job(credentials, job_id, prep.task_id)
            with self._lock:
                prep = self._preparation(job_id)
                if prep.state == "preparing":
                    prep.state, prep.finished = "cancelled", utc_now()
                    self.preparations.save(prep)
                    self._cancel_events.get(prep.id, threading.Event()).set()
                    logger.info("Task %d: training %s cancelled while preparing", prep.task_id, prep.id)
                    return prep.to_job()
            if prep.job_id is None:
                raise GatewayError(409, f"job {job_id} already {prep.state}; there is nothing to cancel")
            job_id = prep.job_id
        else:
            self._authorize_job(credentials, job_id, self._trainer_job(job_id).get("task_id"))
        try:
            return self.trainer().cancel(job_id)
        except TrainerError as e:
            raise from_trainer(e) from e

    # --- internals ------------------------------------------------------------------------------

    def _prepare(self, prep_id: str, credentials: Optional[Credentials]) -> None:
        """Background: export as ``credentials``, build the training set, submit the job."""
        with self._lock:
            prep = self.preparations.get(prep_id)
            cancelled = self._cancel_events.setdefault(prep_id, threading.Event())
        if prep is None or prep.state != "preparing":
            return
        dataset_dir = self.storage.dataset_dir(prep.dataset_id)
        try:
            with self.cvat(credentials, background=True) as client:
                export_task(client, prep.task_id, dataset_dir, val_fraction=prep.options["val_fraction"],
                            pbar=CancelCheck(cancelled))
            with self._lock:
                prep = self._preparation(prep_id)
                if prep.state != "preparing":
                    raise PreparationCancelled()
                job = self.trainer().submit(prep.dataset_id, task_id=prep.task_id,
                                            options=self.trainer_options(prep.options),
                                            publish=prep.options["publish"])
                prep.state, prep.job_id = "submitted", job["id"]
                self.preparations.save(prep)
            logger.info("Task %d: training %s submitted to the trainer as job %s", prep.task_id, prep_id, job["id"])
        except PreparationCancelled:
            shutil.rmtree(dataset_dir, ignore_errors=True)
        except Exception as e:  # every failure becomes the job's error, in words
            message = failure_message(e, task_id=prep.task_id)
            logger.warning("Task %d: training %s failed while preparing: %s", prep.task_id, prep_id, message)
            shutil.rmtree(dataset_dir, ignore_errors=True)
            with self._lock:
                prep = self._preparation(prep_id)
                prep.state, prep.error, prep.finished = "failed", message, utc_now()
                self.preparations.save(prep)
        finally:
            with self._lock:
                self._cancel_events.pop(prep_id, None)

    def trainer_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The job's trainer options: DETR_TRAIN_DEFAULTS with the dialog's choices; the longer side's
        cap grows with a large image size (TrainConfig requires max_size > image_size)."""
        trainer_options = {**self.settings.trainer_defaults, "epochs": options["epochs"],
                           "image_size": options["image_size"], "weights": options["weights"]}
        if trainer_options["image_size"] >= trainer_options.get("max_size", DEFAULT_MAX_SIZE):
            trainer_options["max_size"] = math.ceil(trainer_options["image_size"] * MAX_SIZE_RATIO)
        return trainer_options

    def _check_capabilities(self, task_id: int, options: Mapping[str, Any], health: Mapping[str, Any]) -> None:
        """Refuse before any export what the trainer would refuse after it."""
        if options["publish"] and health.get("publish") is False:
            raise GatewayError(400, "this trainer cannot publish models (it has no Nuclio dashboard); turn "
                                    "'Publish when done' off, or ask a CVAT admin to set NUCLIO_DASHBOARD_URL "
                                    "in the trainer's function config")
        weights = options["weights"]
        if weights == "previous" and not self.has_model(task_id):
            raise GatewayError(400, f"task {task_id} has no trained model to continue from; choose other "
                                    f"starting weights for its first training")
        available = health.get("weights")
        if isinstance(available, list) and weights not in available:
            raise GatewayError(400, f"the trainer has no {weights!r} weights; choose one of "
                                    f"{', '.join(map(repr, available))}")

    def _active_job(self, task_id: int, trainer: TrainerClient) -> Optional[dict[str, Any]]:
        for prep in self.preparations.of_task(task_id):
            if prep.state == "preparing":
                return prep.to_job()
        try:
            jobs = trainer.list(task_id=task_id)
        except TrainerError as e:
            raise from_trainer(e) from e
        return next((job for job in jobs if job.get("state") in ACTIVE_STATES), None)

    def has_model(self, task_id: int) -> bool:
        """Whether a model was trained on the task (what weights ``previous`` continues from)."""
        return any(entry.task_id == task_id for entry in self.models.entries())

    def _authorize_job(self, credentials: Optional[Credentials], job_id: str, task_id: Optional[int]) -> None:
        """The caller may see a job only if CVAT lets them see its task. Otherwise the answer is the one for a
        job that does not exist, so that nobody learns which job ids exist by probing them."""
        if task_id is None:  # started without a task (cvat-detr): not shown through the gateway
            raise _no_such_job(job_id)
        try:
            self.authorize(credentials, int(task_id))
        except GatewayError as e:
            if e.status in (403, 404):
                raise _no_such_job(job_id) from None
            raise

    def _preparation(self, prep_id: str) -> Preparation:
        with self._lock:
            prep = self.preparations.get(prep_id)
        if prep is None:
            raise _no_such_job(prep_id)
        return prep

    def _trainer_job(self, job_id: str) -> dict[str, Any]:
        try:
            return self.trainer().get(job_id)
        except TrainerRequestError as e:
            if e.status == 404:
                raise _no_such_job(job_id) from e
            raise from_trainer(e) from e
        except TrainerError as e:
            raise from_trainer(e) from e


def _no_such_job(job_id: str) -> GatewayError:
    """The same answer for a job that does not exist and for one of a task the caller cannot see."""
    return GatewayError(404, f"no training job {job_id!r} in the tasks you can see in CVAT; list a task's jobs "
                             f"with GET /detr/api/jobs?task=<task id>")


def _version() -> str:
    try:
        return metadata.version("cvat-detr")
    except metadata.PackageNotFoundError:
        return "unknown"
