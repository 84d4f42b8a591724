"""Client of the trainer function's job API (``cvat_plugin.trainer.api``): submit, watch, cancel.

Our exception hierarchy:

    TrainerError               anything that went wrong talking to the trainer
    ├── TrainerUnavailable     not reachable, or still failing with 502/503/504 after retries
    └── TrainerRequestError    the trainer refused the request (4xx, or a 500 it explained);
                               ``status`` and the trainer's message, ``body`` for details

Connection errors are retried for every request (nothing reached the trainer); gateway
errors (502/503/504) only for reads, so a job is never submitted twice.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from cvat_plugin.cvat.auth import redact_url
from cvat_plugin.trainer.auth import HOW_TO_SET, authorization

logger = logging.getLogger(__name__)

#: States a job never leaves (``interrupted`` jobs resume after a trainer restart).
FINAL_STATES = ("succeeded", "failed", "cancelled")

#: (connect, read) seconds. Every trainer endpoint answers at once; training runs in the background.
DEFAULT_TIMEOUT = (5.0, 30.0)
DEFAULT_RETRIES = 3
DEFAULT_POLL_INTERVAL_S = 2.0
#: How long ``follow`` keeps polling through a trainer restart before giving up.
DEFAULT_MAX_UNAVAILABLE_S = 300.0


class TrainerError(Exception):
    """A trainer request failed; the message says what to do."""


class TrainerUnavailable(TrainerError):
    pass


class TrainerRequestError(TrainerError):
    def __init__(self, message: str, status: int, body: Any = None):
        super().__init__(message)
        self.status = status
        self.body = body


class TrainerClient:
    def __init__(
        self,
        url: str,
        *,
        token: str,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff_factor: float = 0.5,
        session: requests.Session | None = None,
    ):
        if not url.startswith(("http://", "https://")):
            raise TrainerError(f"trainer URL {redact_url(url)!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = session or requests.Session()
        self._session.headers["Authorization"] = authorization(token)
        retry = Retry(
            total=retries, connect=retries, read=retries, status=retries, other=0,
            allowed_methods=frozenset({"GET"}), status_forcelist=(502, 503, 504),
            backoff_factor=backoff_factor, raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    def submit(
        self,
        dataset_id: str,
        *,
        task_id: int | None = None,
        project_id: int | None = None,
        options: dict[str, Any] | None = None,
        resume_from: str | None = None,
        publish: bool | None = None,
    ) -> dict[str, Any]:
        """Queue a training job on a dataset under the trainer's ``DETR_HOME/datasets``; returns the job.

        ``publish``: serve the model as a CVAT detector when the job succeeds; None leaves it to the
        trainer (it publishes when it has a Nuclio dashboard)."""
        body: dict[str, Any] = {"dataset_id": dataset_id, "options": options or {}}
        if publish is not None:
            body["publish"] = publish
        if task_id is not None:
            body["task_id"] = task_id
        if project_id is not None:
            body["project_id"] = project_id
        if resume_from is not None:
            body["resume_from"] = resume_from
        return self._request("POST", "/jobs", json=body)

    def get(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/jobs/{quote(job_id, safe='')}")

    def list(self, *, task_id: int | None = None, project_id: int | None = None) -> list[dict[str, Any]]:
        """Jobs, newest first; only those of one CVAT task (or project) when ``task_id`` (``project_id``)
        is given."""
        params = {"task": str(task_id)} if task_id is not None else None
        if project_id is not None:
            params = {"project": str(project_id)}
        return self._request("GET", "/jobs", params=params)["jobs"]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/jobs/{quote(job_id, safe='')}/cancel")

    def metrics(self, job_id: str) -> list[dict[str, Any]]:
        """The job's loss and validation metrics per epoch, oldest first."""
        return self._request("GET", f"/jobs/{quote(job_id, safe='')}/metrics")["epochs"]

    def publish_model(self, model_id: str, *, replace: bool = False) -> dict[str, Any]:
        """Start publishing a model version (the trainer deploys it in the background)."""
        return self._request("POST", f"/models/{quote(model_id, safe='')}/publish", json={"replace": replace})

    def unpublish_model(self, model_id: str) -> dict[str, Any]:
        return self._request("POST", f"/models/{quote(model_id, safe='')}/unpublish")

    def follow(
        self,
        job_id: str,
        *,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
        timeout: float | None = None,
        max_unavailable: float = DEFAULT_MAX_UNAVAILABLE_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict[str, Any]:
        """Poll a job until it succeeds, fails or is cancelled; returns the final job.

        ``on_update`` gets the job whenever it changed. A trainer restart is waited out for up
        to ``max_unavailable`` seconds, as the trainer resumes interrupted jobs by itself.
        """
        started = last_seen = time.monotonic()
        previous: dict[str, Any] | None = None
        while True:
            try:
                job = self.get(job_id)
                last_seen = time.monotonic()
            except TrainerUnavailable:
                if time.monotonic() - last_seen > max_unavailable:
                    raise
                logger.warning("Trainer unreachable while following job %s; retrying", job_id)
                sleep(poll_interval)
                continue
            if job != previous and on_update is not None:
                on_update(job)
            previous = job
            if job.get("state") in FINAL_STATES:
                return job
            if timeout is not None and time.monotonic() - started > timeout:
                raise TrainerError(
                    f"job {job_id} is still {job.get('state')} after {timeout:.0f} s; "
                    f"check it later with `cvat-detr status {job_id}`"
                )
            sleep(poll_interval)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        where = f"{method} {redact_url(self.url)}{path}"
        try:
            response = self._session.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as e:
            raise TrainerUnavailable(
                f"cannot reach the trainer ({where}: {type(e).__name__}); check the trainer URL and that "
                "the detr-trainer function is deployed and ready (`nuctl get functions`)"
            ) from e
        body = _json_or_none(response)
        if response.ok:
            if body is None:
                raise TrainerError(f"{where} answered {response.status_code} without a JSON body; is this "
                                   "URL the detr-trainer function?")
            return body
        message = body.get("error") if isinstance(body, dict) else None
        if response.status_code in (502, 503, 504):
            raise TrainerUnavailable(
                f"the trainer is unavailable ({where} answered {response.status_code}"
                f"{': ' + message if message else ''}); retry in a minute"
            )
        if message is None:
            message = response.text[:200] or response.reason
        if response.status_code == 401:
            message = f"it does not accept our token ({message}); {HOW_TO_SET}"
        raise TrainerRequestError(
            f"the trainer refused {where} ({response.status_code}): {message}", response.status_code, body
        )


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
