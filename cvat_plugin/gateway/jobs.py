"""What the gateway does for a task or a project (a ``Source``), once the caller is known: the
summary, starting a training, its jobs and their curves, cancelling, its models with their reports,
publishing and unpublishing a version. Every call first asks CVAT, as the caller, for the task or
project.

Starting a training exports the task (or every task of the project) and builds its training set,
which takes a while, so it runs in a background thread as a preparation
(``cvat_plugin.gateway.preparations``) that submits the job to the trainer when the training set is
ready.
"""

from __future__ import annotations

import logging
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Optional

from cvat_plugin.cvat.auth import Credentials
from cvat_plugin.cvat.client import CvatClient, CvatError
from cvat_plugin.cvat.dataset import TrainingSetError, export_task, require_images
from cvat_plugin.cvat.project_export import export_project
from cvat_plugin.cvat.task_summary import summarize_project, summarize_task
from cvat_plugin.gateway.auth import authorize_project, authorize_task, require_change, require_credentials
from cvat_plugin.gateway.errors import GatewayError, failure_message, from_cvat, from_trainer
from cvat_plugin.gateway.preparations import (
    PREPARATION_PREFIX,
    CancelCheck,
    Preparation,
    PreparationCancelled,
    PreparationStore,
    Source,
    new_preparation_id,
)
from cvat_plugin.gateway.settings import GATEWAY_OPTIONS, GatewaySettings
from cvat_plugin.home.jobs import utc_now
from cvat_plugin.home.layout import DetrHome, new_id, source_name
from cvat_plugin.home.models import REPORT_IMAGES, ModelEntry, ModelNotFound, ModelStore
from cvat_plugin.trainer.client import TrainerClient, TrainerError, TrainerRequestError
from cvat_plugin.training.options import training_setup
from cvat_plugin.training.schema import MODEL, WEIGHTS, options_json, parse_options

logger = logging.getLogger(__name__)

#: Trainer job states that hold the task: a second training gets 409 (``interrupted`` resumes by itself).
ACTIVE_STATES = ("queued", "running", "interrupted")
#: Why 'Publish when done' is off when the trainer has no Nuclio dashboard.
CANNOT_PUBLISH = ("this trainer cannot publish models (it has no Nuclio dashboard): train without publishing, or "
                  "ask a CVAT admin to set NUCLIO_DASHBOARD_URL in the trainer's function config")
#: Calls made while a request waits: fewer retries and shorter timeouts than background work.
REQUEST_TIMEOUT = (5.0, 30.0)
REQUEST_RETRIES = 1


class TrainingService:
    """The gateway's operations; ``credentials`` are always the caller's own."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.home = DetrHome(settings.home)
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

    def authorize(self, credentials: Optional[Credentials], source: Source) -> dict:
        """The task or project, if CVAT lets the caller see it."""
        with self.cvat(credentials) as client:
            return (authorize_task if source.kind == "task" else authorize_project)(client, source.id)

    def authorize_change(self, credentials: Optional[Credentials], source: Source) -> dict:
        """The task or project, if CVAT lets the caller change it (``gateway_auth.require_change``)."""
        with self.cvat(credentials) as client:
            if source.kind == "project":
                project = authorize_project(client, source.id)
                require_change(client, project, what=str(source))
                return project
            task = authorize_task(client, source.id)
            project = None
            if task.get("project_id"):
                try:
                    project = client.get_project(int(task["project_id"]))
                except CvatError:  # the caller may see the task but not its project: the task decides
                    project = None
            require_change(client, task, what=str(source), project=project)
            return task

    # --- reads ----------------------------------------------------------------------------------

    def options(self, credentials: Optional[Credentials]) -> dict[str, Any]:
        """The option schema with DETR_TRAIN_DEFAULTS as defaults, for a caller CVAT knows."""
        with self.cvat(credentials) as client:
            try:
                client.get_self()
            except CvatError as e:
                raise from_cvat(e, action="read the training options", credentials=credentials) from e
        return {"options": options_json(self.settings.train_defaults)}

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """A request's options, each checked, then together with DETR_TRAIN_DEFAULTS as the trainer will
        check them: a mistake is refused before the export. Raises ``OptionError``."""
        parsed = parse_options(options)
        training_setup(self.trainer_options({**self.settings.job_defaults, **parsed}))
        return parsed

    def summary(self, credentials: Optional[Credentials], source: Source) -> dict[str, Any]:
        """The task's (or project's) counts and warnings, and the starting weights it can train from."""
        with self.cvat(credentials) as client:
            if source.kind == "task":
                task = authorize_task(client, source.id)
                _require_images(task)
            else:
                project = authorize_project(client, source.id)
            try:
                if source.kind == "task":
                    summary = summarize_task(task, client.get_labels(source.id), client.get_annotations(source.id),
                                             client.get_data_meta(source.id))
                else:
                    tasks = [task for task in client.get_project_tasks(source.id) if task.get("size")]
                    summary = summarize_project(project, client.get_project_labels(source.id), [
                        (task, client.get_annotations(task["id"]), client.get_data_meta(task["id"]))
                        for task in tasks])
            except CvatError as e:
                raise from_cvat(e, action=f"read {source}", credentials=credentials) from e
        _, choices, problem, publish_unavailable = self.dialog_choices(source)
        if problem:
            summary["warnings"].append(problem)
        return {**summary, "weights_options": choices, "publish_unavailable": publish_unavailable}

    def dialog_choices(self, source: Source) -> tuple[dict[str, Any], list[str], Optional[str], Optional[str]]:
        """The task's (or project's) default options and weight choices, as far as the trainer can serve them, a
        warning when the trainer is unreachable, and why it cannot publish (None when it can)."""
        problem = None
        try:
            health = self.trainer().health()
        except TrainerError as e:
            logger.warning("Trainer unreachable while preparing the options of %s: %s", source, e)
            health = {}
            problem = ("the DETR trainer is not reachable right now: training can start once it is back; if this "
                       "persists, ask a CVAT admin to check the detr-trainer function")
        return *self._choices(source, health), problem, CANNOT_PUBLISH if health.get("publish") is False else None

    def _choices(self, source: Source, health: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Defaults and weight choices given the trainer's health: only weights it has (``previous``
        once the task or project has a model), and no publishing when it cannot publish."""
        defaults = self.settings.job_defaults
        has_model = self.has_model(source)
        choices = [w for w in health.get("weights", WEIGHTS) if w in WEIGHTS and (w != "previous" or has_model)]
        if defaults["weights"] not in choices and choices:
            defaults["weights"] = choices[0]
        if health.get("publish") is False:
            defaults["publish"] = False
        return defaults, choices

    def jobs(self, credentials: Optional[Credentials], source: Source) -> list[dict[str, Any]]:
        """The task's (or project's) jobs, newest first: the trainer's, and preparations that never reached it."""
        self.authorize(credentials, source)
        try:
            jobs = self.trainer().list(**{key: value for key, value in source.ids.items() if value is not None})
        except TrainerError as e:
            raise from_trainer(e) from e
        with self._lock:
            jobs += [p.to_job() for p in self.preparations.of_source(source) if p.state != "submitted"]
        return sorted(jobs, key=lambda job: str(job.get("created") or ""), reverse=True)

    def job(self, credentials: Optional[Credentials], job_id: str) -> dict[str, Any]:
        """One job, if the caller may see its task or project; a submitted preparation answers with the
        trainer's job."""
        prep, job, _ = self._visible_job(credentials, job_id)
        if prep is None:
            return job
        return self._trainer_job(prep.job_id) if prep.job_id else prep.to_job()

    def job_metrics(self, credentials: Optional[Credentials], job_id: str) -> list[dict[str, Any]]:
        """The job's loss and validation metrics per epoch (none while it is being prepared)."""
        prep, _, _ = self._visible_job(credentials, job_id)
        trainer_job_id = job_id if prep is None else prep.job_id
        if trainer_job_id is None:
            return []
        try:
            return self.trainer().metrics(trainer_job_id)
        except TrainerError as e:
            raise from_trainer(e) from e

    def models_of(self, credentials: Optional[Credentials], source: Source) -> dict[str, Any]:
        """Models trained on the task (or project), newest first, and whether the trainer can publish them."""
        self.authorize(credentials, source)
        try:
            can_publish = self.trainer().health().get("publish") is True
        except TrainerError as e:
            logger.warning("Trainer unreachable while listing the models of %s: %s", source, e)
            can_publish = False
        return {"models": [self.models.describe(entry) for entry in self.models.entries()
                           if source_of_model(entry) == source],
                "publish": can_publish}

    def model(self, credentials: Optional[Credentials], model_id: str) -> dict[str, Any]:
        """One model version, if the caller may see the task (or project) it was trained on."""
        return self.models.describe(self._authorized_model(credentials, model_id))

    def model_report(self, credentials: Optional[Credentials], model_id: str, image: str) -> Path:
        """The file of one report image (``image``: a key of ``REPORT_IMAGES``) of a model the caller may see."""
        if image not in REPORT_IMAGES:
            raise GatewayError(404, f"no report image {image!r}; a model's report has {', '.join(REPORT_IMAGES)}")
        path = self._authorized_model(credentials, model_id).report_image(image)
        if path is None:
            raise GatewayError(404, f"model {model_id} has no {image} image (its run wrote no report, or was "
                                    f"cancelled before the report)")
        return path

    def publish_model(self, credentials: Optional[Credentials], model_id: str, *, replace: bool) -> dict[str, Any]:
        """Have the trainer publish a model version (replacing the task's published one with ``replace``)."""
        self.authorize_change(credentials, source_of_model(self._authorized_model(credentials, model_id)))
        try:
            self.trainer().publish_model(model_id, replace=replace)
        except TrainerError as e:
            raise from_trainer(e) from e
        return self.models.describe(self.models.entry(model_id))

    def unpublish_model(self, credentials: Optional[Credentials], model_id: str) -> dict[str, Any]:
        self.authorize_change(credentials, source_of_model(self._authorized_model(credentials, model_id)))
        try:
            self.trainer().unpublish_model(model_id)
        except TrainerError as e:
            raise from_trainer(e) from e
        return self.models.describe(self.models.entry(model_id))

    def _authorized_model(self, credentials: Optional[Credentials], model_id: str) -> ModelEntry:
        require_credentials(credentials)
        try:
            entry = self.models.entry(model_id)
        except ModelNotFound:
            raise GatewayError(404, f"no model {model_id!r}; a task's models are listed by GET "
                                    f"/models?task=<task id> (a project's by ?project=<project id>)") from None
        source = source_of_model(entry)
        if source is None:
            raise GatewayError(403, f"model {model_id} was not trained on a CVAT task or project; the DETR service "
                                    f"shows only models of tasks and projects you can see in CVAT")
        self.authorize(credentials, source)
        return entry

    def health(self) -> dict[str, Any]:
        """For probes and admins: the trainer's state and CVAT's (its public version endpoint, asked without
        credentials); names no addresses."""
        try:
            trainer = self.trainer().health().get("status", "ok")
        except TrainerError as e:
            logger.warning("Health check: %s", e)
            trainer = "unavailable"
        cvat_version = None
        try:
            with self.cvat(None) as client:
                cvat_version = str(client.server_version)
        except CvatError as e:
            logger.warning("Health check: %s", e)
        with self._lock:
            preparing = len(self._cancel_events)
        healthy = trainer == "ok" and cvat_version is not None
        return {"status": "ok" if healthy else "degraded", "version": _version(), "trainer": trainer,
                "cvat": "ok" if cvat_version else "unavailable", "cvat_version": cvat_version,
                "preparing": preparing, "webhooks": bool(self.settings.webhook_secret),
                "auto_retrain": self.settings.auto_retrain.enabled}

    # --- actions --------------------------------------------------------------------------------

    def start(self, credentials: Optional[Credentials], source: Source, options: Mapping[str, Any], *,
              trigger: str = "user") -> dict[str, Any]:
        """Start a training of the task (or project) as ``credentials`` (the caller, or the service account
        for a webhook); returns the preparing job. 409 with the job when it already has one running."""
        # A user needs the right to change the task; the webhook's service account acts as configured.
        found = (self.authorize_change if trigger == "user" else self.authorize)(credentials, source)
        if source.kind == "task":
            _require_images(found)
        trainer = self.trainer()
        try:
            health = trainer.health()
        except TrainerError as e:
            raise from_trainer(e) from e
        options = {**self._choices(source, health)[0], **options}
        self._check_capabilities(source, options, health)
        with self._lock:
            active = self._active_job(source, trainer)
            if active is not None:
                raise GatewayError(409, f"{source} is already training (job {active['id']}, "
                                        f"{active['state']}); follow that job, or cancel it to start another",
                                   job=active)
            dataset_id = new_id(source_name(**source.ids))
            prep = Preparation(new_preparation_id(), source.ids["task_id"], dataset_id, options, trigger=trigger,
                               project_id=source.ids["project_id"])
            self.preparations.save(prep)
            self._cancel_events[prep.id] = threading.Event()
        self._executor.submit(self._prepare, prep.id, credentials)
        logger.info("%s: training %s requested (%s), preparing the training set %s", source, prep.id,
                    trigger, prep.dataset_id)
        return prep.to_job()

    def cancel(self, credentials: Optional[Credentials], job_id: str) -> dict[str, Any]:
        """Cancel a preparation (its work stops at the next step) or the trainer's job."""
        prep, _, source = self._visible_job(credentials, job_id)
        self.authorize_change(credentials, source)
        if prep is not None:
            with self._lock:
                prep = self._preparation(job_id)
                if prep.state == "preparing":
                    prep.state, prep.finished = "cancelled", utc_now()
                    self.preparations.save(prep)
                    self._cancel_events.get(prep.id, threading.Event()).set()
                    logger.info("%s: training %s cancelled while preparing", prep.source, prep.id)
                    return prep.to_job()
            if prep.job_id is None:
                raise GatewayError(409, f"job {job_id} already {prep.state}; there is nothing to cancel")
            job_id = prep.job_id
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
        dataset_dir = self.home.dataset_dir(prep.dataset_id)
        try:
            with self.cvat(credentials, background=True) as client:
                export = export_task if prep.task_id is not None else export_project
                export(client, prep.source.id, dataset_dir, val_fraction=prep.options["val_fraction"],
                       pbar=CancelCheck(cancelled))
            with self._lock:
                prep = self._preparation(prep_id)
                if prep.state != "preparing":
                    raise PreparationCancelled()
                job = self.trainer().submit(prep.dataset_id, **prep.source.ids,
                                            options=self.trainer_options(prep.options),
                                            publish=prep.options["publish"])
                prep.state, prep.job_id = "submitted", job["id"]
                self.preparations.save(prep)
            logger.info("%s: training %s submitted to the trainer as job %s", prep.source, prep_id, job["id"])
        except PreparationCancelled:
            shutil.rmtree(dataset_dir, ignore_errors=True)
        except Exception as e:  # every failure becomes the job's error, in words
            message = failure_message(e, source=str(prep.source))
            logger.warning("%s: training %s failed while preparing: %s", prep.source, prep_id, message)
            shutil.rmtree(dataset_dir, ignore_errors=True)
            with self._lock:
                prep = self._preparation(prep_id)
                prep.state, prep.error, prep.finished = "failed", message, utc_now()
                self.preparations.save(prep)
        finally:
            with self._lock:
                self._cancel_events.pop(prep_id, None)

    def trainer_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The job's trainer options: DETR_TRAIN_DEFAULTS overridden by the job's own (model options one by
        one), less those the gateway handles itself. A default ``max_size`` that the job's ``image_size``
        reaches is left out, so that the trainer gives the image size a cap that fits."""
        chosen = {key: value for key, value in options.items() if key not in GATEWAY_OPTIONS}
        defaults = dict(self.settings.trainer_defaults)
        if "max_size" not in chosen and chosen.get("image_size", 0) >= defaults.get("max_size", float("inf")):
            del defaults["max_size"]
        model = {**defaults.get(MODEL, {}), **chosen.get(MODEL, {})}
        return {**defaults, **chosen, **({MODEL: model} if model else {})}

    def _check_capabilities(self, source: Source, options: Mapping[str, Any], health: Mapping[str, Any]) -> None:
        """Refuse before any export what the trainer would refuse after it."""
        if options["publish"] and health.get("publish") is False:
            raise GatewayError(400, f"{CANNOT_PUBLISH}; turn 'Publish when done' off")
        weights = options["weights"]
        if weights == "previous" and not self.has_model(source):
            raise GatewayError(400, f"{source} has no trained model to continue from; choose other "
                                    f"starting weights for its first training")
        available = health.get("weights")
        if isinstance(available, list) and weights not in available:
            raise GatewayError(400, f"the trainer has no {weights!r} weights; choose one of "
                                    f"{', '.join(map(repr, available))}")

    def _active_job(self, source: Source, trainer: TrainerClient) -> Optional[dict[str, Any]]:
        for prep in self.preparations.of_source(source):
            if prep.state == "preparing":
                return prep.to_job()
        try:
            jobs = trainer.list(**{key: value for key, value in source.ids.items() if value is not None})
        except TrainerError as e:
            raise from_trainer(e) from e
        return next((job for job in jobs if job.get("state") in ACTIVE_STATES), None)

    def has_model(self, source: Source) -> bool:
        """Whether a model was trained on the task or project (what weights ``previous`` continues from)."""
        return any(source_of_model(entry) == source for entry in self.models.entries())

    def _visible_job(self, credentials: Optional[Credentials],
                     job_id: str) -> tuple[Optional[Preparation], Optional[dict[str, Any]], Source]:
        """The preparation (ids ``prep-...``) or the trainer's job behind ``job_id``, and its task or project,
        once CVAT lets the caller see that. Otherwise the answer is the one for a job that does not exist, so
        that nobody learns which job ids exist by probing them."""
        require_credentials(credentials)
        prep, job = None, None
        if job_id.startswith(PREPARATION_PREFIX):
            prep = self._preparation(job_id)
            source: Optional[Source] = prep.source
        else:
            job = self._trainer_job(job_id)
            source = self._source_of(job)
        if source is None:  # started without a task or project (cvat-detr): not shown through the gateway
            raise _no_such_job(job_id)
        try:
            self.authorize(credentials, source)
        except GatewayError as e:
            if e.status in (403, 404):
                raise _no_such_job(job_id) from None
            raise
        return prep, job, source

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

    @staticmethod
    def _source_of(job: Mapping[str, Any]) -> Optional[Source]:
        """The task or project a job trains on; None for a job started without one (``cvat-detr``)."""
        if job.get("task_id") is not None:
            return Source("task", int(job["task_id"]))
        if job.get("project_id") is not None:
            return Source("project", int(job["project_id"]))
        return None


def source_of_model(entry: ModelEntry) -> Optional[Source]:
    """The task or project a model was trained on (None for one trained on neither)."""
    if entry.task_id is not None:
        return Source("task", entry.task_id)
    return Source("project", entry.project_id) if entry.project_id is not None else None


def _require_images(task: Mapping[str, Any]) -> None:
    try:
        require_images(task)
    except TrainingSetError as e:
        raise GatewayError(422, str(e)) from None


def _no_such_job(job_id: str) -> GatewayError:
    """The same answer for a job that does not exist and for one of a task the caller cannot see."""
    return GatewayError(404, f"no training job {job_id!r} in the tasks and projects you can see in CVAT; list a "
                             f"task's jobs with GET /detr/api/jobs?task=<task id> (a project's with ?project=<id>)")


def _version() -> str:
    try:
        return metadata.version("cvat-detr")
    except metadata.PackageNotFoundError:
        return "unknown"
