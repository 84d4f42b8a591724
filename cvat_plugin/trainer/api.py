"""The trainer's HTTP API, routed by method and path.

```
POST /jobs                 {"dataset_id", "task_id"?, "options"?, "resume_from"?, "publish"?} -> 202 job
GET  /jobs[?task=&state=]  {"jobs": [job, ...], "problems": [...]}, newest first
GET  /jobs/{id}            job
GET  /jobs/{id}/metrics    {"job_id", "epochs": [{"epoch", "time_s", "lr", "train_loss", "AP", "AP50", ...}]}
POST /jobs/{id}/cancel     job
POST /models/{id}/publish  {"replace"?} -> 202 {"model_id", "publishing": true, "replace"}; the card follows it
POST /models/{id}/unpublish                -> {"model_id", "removed": <function name>}
GET  /health               {"status", "version", "device", "precision", "running", "queued", "publish", "weights",
                             "problems"}
```
Every route but ``/health`` needs the trainer's shared token (``Authorization: Bearer <token>``,
``cvat_plugin.trainer.auth``); without it the answer is a 401, whatever the path.
Every error is ``{"error": "<what is wrong and what to do>"}`` with a 4xx (a 500 only for
state the trainer itself cannot read, a 507 or 503 when the shared volume is full or cannot be
written). The volume, job and weights code raise their own errors (an invalid id, an unknown or
unreadable job, missing weights, the ``OSError`` of a failed write); :meth:`TrainerApi.handle` is
where they become these statuses.
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from typing import Any, Callable, Mapping

import torch

from cvat_plugin.home.jobs import STATES, Job, JobNotFound, JobStore, JobUnreadable
from cvat_plugin.home.layout import DetrHome, InvalidId, new_id
from cvat_plugin.nuclio.publish import replace_option
from cvat_plugin.responses import RequestError
from cvat_plugin.trainer.auth import HOW_TO_SET, token_matches
from cvat_plugin.trainer.publishing import ModelPublisher
from cvat_plugin.trainer.runner import JobRunner
from cvat_plugin.training.options import REQUEST_EXAMPLE, parse_job_request, training_setup
from cvat_plugin.training.weights import WeightsError, available_weights, starting_point
from detr.config import OptionError
from detr.files import DISK_FULL_ERRNOS
from detr.precision import resolve_precision
from detr.train import CHECKPOINT_FILE

Reply = tuple[int, Any]

METRICS_FILE = "metrics.jsonl"
#: The per-epoch values a curve needs (``metrics.jsonl`` holds every loss term too).
CURVE_KEYS = ("epoch", "time_s", "lr", "train_loss", "AP", "AP50", "AP75", "dense_AP50", "best")
#: More epochs than any run has: a bound on what one answer carries.
MAX_CURVE_EPOCHS = 5000


class TrainerApi:
    def __init__(self, store: JobStore, runner: JobRunner, home: DetrHome, *, token: str,
                 publisher: ModelPublisher | None = None):
        """``token``: the shared secret every route but ``/health`` requires; ``publisher``: set when a
        Nuclio dashboard is configured; jobs then publish their model unless they say ``"publish": false``,
        and models can be published and unpublished on request."""
        self.token = token
        self.store = store
        self.runner = runner
        self.home = home
        self.publisher = publisher

    @property
    def can_publish(self) -> bool:
        return self.publisher is not None and self.publisher.settings.enabled

    def handle(self, method: str, path: str, query: Mapping[str, Any], body: Callable[[], Any], *,
               authorization: str | None) -> Reply:
        """Answer one request; ``body()`` parses the JSON body when a route needs it, ``authorization``
        is the request's ``Authorization`` header."""
        path = "/" + path.strip("/")
        # Checked before routing, so that without the token not even the routes can be probed.
        if path != "/health" and not token_matches(self.token, authorization):
            raise RequestError(f"missing or wrong trainer token: send 'Authorization: Bearer <token>'; "
                               f"{HOW_TO_SET}", status=401)
        for pattern, routes in self._routes():
            match = re.fullmatch(pattern, path)
            if match is None:
                continue
            if method not in routes:
                allowed = " or ".join(sorted(routes))
                raise RequestError(f"{method} is not allowed on {path}; use {allowed}", status=405)
            try:
                return routes[method](*match.groups(), query=query, body=body)
            except OptionError as e:  # a wrong training option: its message as the gateway and the CLI give it
                raise RequestError(str(e)) from e
            except (InvalidId, WeightsError) as e:
                raise RequestError(str(e)) from e
            except JobNotFound as e:
                raise RequestError(f"{e}; list jobs with GET /jobs", status=404) from e
            except JobUnreadable as e:
                raise RequestError(str(e), status=500) from e
            except OSError as e:  # the volume: full (507) or unwritable (503), said in JSON
                raise self._write_error(e, writing=f"the job files of {method} {path}") from e
        raise RequestError(
            f"no route {method} {path}; the trainer serves POST /jobs, GET /jobs, GET /jobs/<id>, "
            "GET /jobs/<id>/metrics, POST /jobs/<id>/cancel, POST /models/<id>/publish, "
            "POST /models/<id>/unpublish and GET /health", status=404
        )

    def _write_error(self, error: OSError, *, writing: str) -> RequestError:
        """A failed write on the volume as an answer: 507 when it is full, else 503."""
        if error.errno in DISK_FULL_ERRNOS:
            return RequestError(self.home.disk_full(1, writing=writing, then="try again"), status=507)
        return RequestError(f"cannot write {writing} on the shared volume DETR_HOME {self.home.root} "
                            f"({error.strerror or error}); check the volume's mount and permissions, then try "
                            "again", status=503)

    def _routes(self) -> list[tuple[str, dict[str, Callable[..., Reply]]]]:
        return [
            (r"/health", {"GET": self.health}),
            (r"/jobs", {"GET": self.list_jobs, "POST": self.submit}),
            (r"/jobs/([^/]+)", {"GET": self.get_job}),
            (r"/jobs/([^/]+)/metrics", {"GET": self.job_metrics}),
            (r"/jobs/([^/]+)/cancel", {"POST": self.cancel}),
            (r"/models/([^/]+)/publish", {"POST": self.publish_model}),
            (r"/models/([^/]+)/unpublish", {"POST": self.unpublish_model}),
        ]

    # --- routes -------------------------------------------------------------------------------
    def health(self, *, query: Mapping[str, Any], body: Callable[[], Any]) -> Reply:
        status = 200 if self.runner.alive else 503
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return status, {
            "status": "ok" if self.runner.alive else "error",
            "version": _version(),
            "device": device.type,
            "precision": resolve_precision("auto", device),  # what jobs train in unless they say otherwise
            "running": self.runner.current,
            "queued": len(self.runner.queued),
            "publish": self.can_publish,
            "weights": available_weights(),
            "problems": self.store.problems
            + ([] if self.runner.alive else ["the training worker is not running; restart the function"]),
        }

    def list_jobs(self, *, query: Mapping[str, Any], body: Callable[[], Any]) -> Reply:
        jobs = self.store.jobs()
        if query.get("task") not in (None, ""):
            task_id = _int_query(query, "task")
            jobs = [job for job in jobs if job.task_id == task_id]
        if query.get("project") not in (None, ""):
            project_id = _int_query(query, "project")
            jobs = [job for job in jobs if job.project_id == project_id]
        if query.get("state") not in (None, ""):
            state = query["state"]
            if state not in STATES:
                raise RequestError(f"query 'state' must be one of {', '.join(STATES)}, got {state!r}")
            jobs = [job for job in jobs if job.state == state]
        return 200, {"jobs": [job.to_dict() for job in jobs], "problems": self.store.problems}

    def get_job(self, job_id: str, *, query: Mapping[str, Any], body: Callable[[], Any]) -> Reply:
        self.home.resolve(self.home.runs, job_id, what="job id")
        return 200, self.store.get(job_id).to_dict()

    def job_metrics(self, job_id: str, *, query: Mapping[str, Any], body: Callable[[], Any]) -> Reply:
        """The job's validation and loss values per epoch, for live curves (empty before the first epoch)."""
        folder = self.home.resolve(self.home.runs, job_id, what="job id")
        self.store.get(job_id)  # 404 for an unknown job
        epochs = []
        try:
            lines = (folder / METRICS_FILE).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines[-MAX_CURVE_EPOCHS:]:
            try:
                record = json.loads(line)
            except ValueError:  # a line being written, or damaged: the curve skips it
                continue
            if isinstance(record, dict):
                epochs.append({key: record[key] for key in CURVE_KEYS if key in record})
        return 200, {"job_id": job_id, "epochs": epochs}

    def publish_model(self, model_id: str, *, query: Mapping[str, Any], body: Callable[[], Any]) -> Reply:
        self.home.resolve(self.home.models, model_id, what="model id")
        try:
            replace = replace_option(body())
        except ValueError as e:
            raise RequestError(str(e)) from None
        return 202, self._publisher().publish(model_id, replace=replace)

    def unpublish_model(self, model_id: str, *, query: Mapping[str, Any], body: Callable[[], Any]) -> Reply:
        self.home.resolve(self.home.models, model_id, what="model id")
        return 200, self._publisher().unpublish(model_id)

    def _publisher(self) -> ModelPublisher:
        if self.publisher is None or not self.can_publish:
            raise RequestError("this trainer cannot publish models: set NUCLIO_DASHBOARD_URL (e.g. "
                               "http://nuclio:8070) in its function config and redeploy it", status=409)
        return self.publisher

    def cancel(self, job_id: str, *, query: Mapping[str, Any], body: Callable[[], Any]) -> Reply:
        self.home.resolve(self.home.runs, job_id, what="job id")
        return 200, self.runner.cancel(job_id).to_dict()

    def submit(self, *, query: Mapping[str, Any], body: Callable[[], Any]) -> Reply:
        data = body()
        if not isinstance(data, dict):
            raise RequestError(f"expected a JSON object such as {REQUEST_EXAMPLE}")
        request = parse_job_request(data)
        publish = self._publish(request.publish)
        labels = self._dataset_labels(request.dataset_id)
        if request.resume_from is not None:
            self._check_resumable(request.resume_from, request.options, labels)
        else:
            setup = training_setup(request.options)
            starting_point(setup.weights, setup.backbone, task_id=request.task_id, project_id=request.project_id,
                           models=self.runner.models)
        job = Job(
            id=new_id(), dataset_id=request.dataset_id, task_id=request.task_id, project_id=request.project_id,
            options=request.options,
            resume_from=request.resume_from, publish=publish,
        )
        self.store.add(job)
        self.runner.enqueue(job.id)
        return 202, job.to_dict()

    # --- checks -------------------------------------------------------------------------------
    def _publish(self, requested: bool | None) -> bool:
        if requested and not self.can_publish:
            raise RequestError(
                "this trainer cannot publish models: set NUCLIO_DASHBOARD_URL (e.g. http://nuclio:8070) in its "
                'function config and redeploy it, or send "publish": false'
            )
        return self.can_publish if requested is None else requested

    def _dataset_labels(self, dataset_id: str) -> list[str]:
        folder = self.home.resolve(self.home.datasets, dataset_id, what="dataset_id", nested=True)
        if not folder.is_dir():
            raise RequestError(
                f"dataset {dataset_id!r} not found in DETR_HOME/datasets; build it CVAT-side first "
                "(`cvat-detr train` does), then submit the job again", status=404
            )
        labels_file = folder / "labels.json"
        try:
            labels = json.loads(labels_file.read_text(encoding="utf-8"))
            return [label["name"] for label in labels]
        except FileNotFoundError:
            raise RequestError(
                f"dataset {dataset_id!r} has no labels.json; it is not a complete training set, build it again"
            ) from None
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise RequestError(f"dataset {dataset_id!r}: labels.json is unreadable ({e}); "
                               f"build the dataset again") from e

    def _check_resumable(self, source_id: str, options: Mapping[str, Any], labels: list[str]) -> None:
        folder = self.home.resolve(self.home.runs, source_id, what="resume_from")
        source = self.store.get(source_id)
        if source.state in ("queued", "running", "interrupted"):
            raise RequestError(
                f"job {source_id} is still {source.state}; wait until it ends or cancel it before resuming from it",
                status=409,
            )
        conflicting = [key for key in ("weights", "model") if key in options]
        if conflicting:
            raise RequestError(
                f"option {conflicting[0]!r} cannot be combined with resume_from: the checkpoint of job "
                f"{source_id} fixes the weights and the model; drop the option"
            )
        if not (folder / CHECKPOINT_FILE).is_file():
            raise RequestError(f"job {source_id} left no checkpoint to resume from; start a new job instead",
                               status=409)
        try:
            source_labels = json.loads((folder / "config.json").read_text(encoding="utf-8"))["labels"]
        except (OSError, ValueError, KeyError) as e:
            raise RequestError(f"job {source_id}: its config.json is unreadable ({e}); start a new job instead",
                               status=409) from e
        if source_labels != labels:
            raise RequestError(
                f"the dataset's labels {labels} differ from those of job {source_id} {source_labels}; resume only "
                "on a dataset with the same labels in the same order, or start a new job", status=409
            )


def _int_query(query: Mapping[str, Any], name: str) -> int:
    value = query[name]
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RequestError(f"query {name!r} must be an integer, got {value!r}") from None


def _version() -> str:
    try:
        return metadata.version("cvat-detr")
    except metadata.PackageNotFoundError:
        return "unknown"
