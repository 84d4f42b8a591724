"""CVAT REST client: authentication, version detection, dataset export, labels,
frame metadata and annotations, on ``requests``.

Only the few endpoints the product needs are called directly (see
``shared/reference/cvat.md``): cvat-sdk supports only the server minor version it
was built for, and this client must work against every CVAT from 2.14 on.
Credentials live in ``cvat_plugin.cvat.auth``. This module must not import torch: the gateway imports it.

Our exception hierarchy::

    CvatError                      anything this module raises
    ├── CvatConnectionError        the server could not be reached (after retries)
    ├── CvatHTTPError              CVAT answered with an unexpected status (``.status``)
    │   ├── AuthenticationError    401: missing or wrong credentials
    │   ├── PermissionDeniedError  403: the user may not do this
    │   ├── NotFoundError          404: no such task (or other resource)
    │   ├── ConflictError          409: a conflicting operation is running
    │   └── GoneError              410: the endpoint was removed in this CVAT version
    └── ExportError                the export failed, timed out, or its file arrived incomplete
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Optional, Union
from urllib.parse import quote, urlencode, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from cvat_plugin.cvat.auth import AccessToken, Credentials
from cvat_plugin.progress import NullProgressReporter, ProgressReporter

logger = logging.getLogger(__name__)

#: The first server with ``POST /api/tasks/{id}/dataset/export`` + ``/api/requests`` (CHANGELOG 2.16.0, #7537).
CURRENT_EXPORT_SINCE = (2, 16)
#: Personal access tokens landed after 2.42 (PR #9680); the exact release is not pinned down.
ACCESS_TOKENS_SINCE = (2, 43)
#: (connect, read) seconds for every call; a large export download streams, so read is per chunk.
DEFAULT_TIMEOUT = (10.0, 120.0)
#: Retries after the first attempt, on connection errors, 429 and 5xx (never on other 4xx).
DEFAULT_RETRIES = 4
#: Exponential backoff base in seconds: 0.5, 1, 2, 4, ... between attempts.
DEFAULT_BACKOFF = 0.5
RETRY_STATUSES = (429, 500, 502, 503, 504)
#: Seconds between two polls of a running export.
DEFAULT_POLL_INTERVAL = 1.0
#: An export that has not finished after this many seconds is given up.
DEFAULT_EXPORT_TIMEOUT = 3600.0
DEFAULT_EXPORT_FORMAT = "COCO 1.0"
LABELS_PAGE_SIZE = 100
ANNOTATION_ACTIONS = ("create", "update", "delete")
_CHUNK_SIZE = 1 << 20


class CvatError(Exception):
    """Base of every error raised by this module; the message says what to do."""


class CvatConnectionError(CvatError):
    """The server could not be reached, even after retries."""


class CvatHTTPError(CvatError):
    """CVAT answered with a status the call did not expect."""

    def __init__(self, message: str, *, status: int, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class AuthenticationError(CvatHTTPError):
    """401: no credentials, or CVAT did not accept them."""


class PermissionDeniedError(CvatHTTPError):
    """403: the user is known but may not do this."""


class NotFoundError(CvatHTTPError):
    """404: the task (or other resource) does not exist."""


class ConflictError(CvatHTTPError):
    """409: a conflicting operation (e.g. an export) is running."""


class GoneError(CvatHTTPError):
    """410: the endpoint was removed in this CVAT version."""


class ExportError(CvatError):
    """The export failed on the server, timed out, or its file arrived incomplete."""


_STATUS_ERRORS: dict[int, type[CvatHTTPError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
}


# --- versions ----------------------------------------------------------------------------------


class ServerVersion(NamedTuple):
    """``major.minor.patch`` of a CVAT server; compares with plain tuples: ``v >= (2, 16)``."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> "ServerVersion":
        match = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
        if not match:
            raise CvatError(f"cannot read the CVAT version {text!r} from /api/server/about; is this a CVAT server?")
        return cls(int(match[1]), int(match[2]), int(match[3] or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def _server_message(response: requests.Response) -> str:
    """The error text of a CVAT reply: ``{"detail": ...}``, a list of strings, a bare JSON
    string, or plain text. HTML pages (Django's 500) give ""."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return "" if text.lower().startswith(("<!doctype", "<html")) else text[:300]
    if isinstance(body, dict):
        body = body.get("detail") or body.get("message") or body.get("error") or body
    if isinstance(body, list):
        body = "; ".join(str(item) for item in body)
    return str(body)[:300]


# --- the client --------------------------------------------------------------------------------


class CvatClient:
    """A CVAT server as the product uses it. Thread-unsafe: one client per thread.

    ``retries``/``backoff`` apply to connection errors, 429 and 5xx; ``timeout`` is
    ``(connect, read)`` seconds for every call.
    """

    def __init__(
        self,
        url: str,
        credentials: Optional[Credentials] = None,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        export_timeout: float = DEFAULT_EXPORT_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CvatError(f"CVAT URL {url!r} is not valid: give it in full, e.g. https://cvat.example.com")
        if parts.username or parts.password:
            raise CvatError("do not put credentials in the CVAT URL: use --username/--password or a token")
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.credentials = credentials
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.poll_interval = poll_interval
        self.export_timeout = export_timeout
        self._sleep = sleep
        self._version: Optional[ServerVersion] = None

        self._session = requests.Session()
        retry = Retry(
            total=retries, connect=retries, read=retries, status=retries, other=0,
            backoff_factor=backoff, status_forcelist=RETRY_STATUSES,
            # PATCH ?action=create is not idempotent: a retry could duplicate shapes.
            allowed_methods=frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "POST"}),
            raise_on_status=False, respect_retry_after_header=True,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        if credentials is not None:
            credentials.apply(self._session, parts.hostname)

    def __repr__(self) -> str:
        return f"CvatClient(url={self.url!r}, credentials={self.credentials!r})"

    def __enter__(self) -> "CvatClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    # -- plumbing --

    def _absolute(self, url: str) -> str:
        """Resolve ``url`` against the server; refuse other hosts, so credentials stay with CVAT."""
        if urlsplit(url).scheme:
            absolute = url
        else:  # keep a path prefix such as https://example.com/cvat
            absolute = self.url + "/" + url.lstrip("/")
        if urlsplit(absolute).netloc != urlsplit(self.url).netloc:
            raise CvatError(f"CVAT pointed at another host ({urlsplit(absolute).netloc}); refusing to send "
                            f"credentials there. Check the server's public URL setting")
        return absolute

    def _request(
        self, method: str, url: str, *, action: str, resource: str,
        expected: tuple[int, ...] = (200,), params: Optional[Mapping[str, Any]] = None, **kwargs: Any,
    ) -> requests.Response:
        """One call with timeouts and retries; an unexpected status becomes a ``CvatHTTPError``."""
        full = self._absolute(url)
        if params:
            # %20 rather than '+' for spaces: CVAT documents format=COCO%201.0.
            full += ("&" if "?" in full else "?") + urlencode(params, quote_via=quote)
        try:
            response = self._session.request(method, full, timeout=self.timeout, **kwargs)
        except requests.RequestException as e:
            raise CvatConnectionError(
                f"cannot reach CVAT at {self.url} to {action} {resource} after {self.retries + 1} attempts "
                f"({type(e).__name__}); check the URL (--url / CVAT_URL) and that the server is running"
            ) from e
        if response.status_code not in expected:
            response.close()
            raise self._error(response, action=action, resource=resource)
        return response

    def _error(self, response: requests.Response, *, action: str, resource: str) -> CvatHTTPError:
        status = response.status_code
        detail = _server_message(response)
        said = f" (CVAT said: {detail})" if detail else ""
        if status == 401:
            if self.credentials is None:
                message = (f"CVAT at {self.url} needs credentials to {action} {resource}{said}: pass --access-token, "
                           f"--token or --username/--password, or set CVAT_ACCESS_TOKEN, CVAT_TOKEN or "
                           f"CVAT_USERNAME/CVAT_PASSWORD")
            else:
                message = (f"CVAT at {self.url} did not accept {self.credentials.describe()}{said}; "
                           f"check {self.credentials.source}")
                version = self._probe_version() if isinstance(self.credentials, AccessToken) else None
                if version is not None and version < ACCESS_TOKENS_SINCE:
                    message += (f". This server is CVAT {version}, which has no personal access tokens: "
                                f"use --token with an API key (CVAT's 'POST /api/auth/login' answers one as "
                                f"\"key\"), or --username/--password")
        elif status == 403:
            message = (f"no permission to {action} {resource} on CVAT at {self.url}{said}; ask the task owner or "
                       f"a CVAT admin to give your user access, or use credentials of a user who has it")
        elif status == 404 and self._probe_version() is None:
            message = (f"{self.url} does not answer as a CVAT server (no version at /api/server/about); check "
                       f"--url / CVAT_URL: it is the address you open CVAT at in the browser")
        elif status == 404:
            kind = resource.split(" ")[0] if resource.startswith(("task ", "project ")) else "task"
            message = (f"{resource} does not exist on CVAT at {self.url}{said}; check the id (it is the number "
                       f"in the {kind}'s address, {self.url}/{kind}s/<id>)")
        elif status == 409:
            message = (f"cannot {action} {resource}: a conflicting operation is running on CVAT{said}; "
                       f"wait for it to finish and retry")
        elif status == 410:
            message = (f"CVAT at {self.url} no longer supports this way to {action} {resource}{said}; "
                       f"this client should not have used it: please report it")
        elif status >= 500 or status == 429:
            message = (f"CVAT at {self.url} failed to {action} {resource}: HTTP {status} after "
                       f"{self.retries + 1} attempts{said}; the server is overloaded or failing, check its logs "
                       f"and retry later")
        else:
            message = f"CVAT at {self.url} refused to {action} {resource}: HTTP {status}{said}"
        return _STATUS_ERRORS.get(status, CvatHTTPError)(message, status=status, detail=detail)

    def _get_json(self, url: str, *, action: str, resource: str, **kwargs: Any) -> Any:
        return self._request("GET", url, action=action, resource=resource, **kwargs).json()

    def _paginate(self, url: str, params: Mapping[str, Any], *, action: str, resource: str) -> list[dict]:
        """All ``results`` of a DRF-paginated list (``{"count", "next", "previous", "results"}``)."""
        results: list[dict] = []
        page = 1
        while True:
            body = self._get_json(url, params={**params, "page": page, "page_size": LABELS_PAGE_SIZE},
                                  action=action, resource=resource)
            results.extend(body.get("results", []))
            if not body.get("next"):
                return results
            page += 1

    # -- server --

    def about(self) -> dict:
        """``GET /api/server/about`` (no credentials needed): name, version, ..."""
        return self._get_json("/api/server/about", action="read", resource="the server version")

    def _probe_version(self) -> Optional[ServerVersion]:
        """The server's version if it answers as CVAT, else None; for error messages, so it never raises
        (and never recurses through ``_error``)."""
        if self._version is None:
            try:
                response = self._session.get(self._absolute("/api/server/about"), timeout=self.timeout)
                self._version = ServerVersion.parse(str(response.json().get("version", "")))
            except (requests.RequestException, ValueError, AttributeError, CvatError):
                return None
        return self._version

    @property
    def server_version(self) -> ServerVersion:
        if self._version is None:
            self._version = ServerVersion.parse(str(self.about().get("version", "")))
            logger.info("CVAT at %s is version %s", self.url, self._version)
        return self._version

    # -- who the user is --

    def get_self(self) -> dict:
        """``GET /api/users/self``: the user's id, name, ``groups`` and ``is_superuser``."""
        return self._get_json("/api/users/self", action="read", resource="the current user")

    def get_membership_role(self, organization_id: int, username: str) -> Optional[str]:
        """The user's role in an organization (worker, supervisor, maintainer, owner), or None."""
        members = self._paginate("/api/memberships", {"org_id": int(organization_id), "user": username},
                                 action="read the memberships of", resource=f"organization {organization_id}")
        return next((m.get("role") for m in members
                     if (m.get("user") or {}).get("username") == username and m.get("is_active", True)), None)

    # -- tasks --

    def get_task(self, task_id: int) -> dict:
        return self._get_json(f"/api/tasks/{int(task_id)}", action="read", resource=f"task {task_id}")

    def get_project(self, project_id: int) -> dict:
        return self._get_json(f"/api/projects/{int(project_id)}", action="read", resource=f"project {project_id}")

    def get_project_tasks(self, project_id: int) -> list[dict]:
        """The project's tasks (as ``get_task`` gives them) that the user can see, each with its ``subset``."""
        return self._paginate("/api/tasks", {"project_id": int(project_id)},
                              action="list the tasks of", resource=f"project {project_id}")

    def get_project_labels(self, project_id: int) -> list[dict]:
        """The project's labels in CVAT order, shared (same ids) by all its tasks; sublabels left out."""
        labels = self._paginate("/api/labels", {"project_id": int(project_id)},
                                action="list the labels of", resource=f"project {project_id}")
        return [label for label in labels if label.get("parent_id") is None]

    def get_labels(self, task_id: int) -> list[dict]:
        """The task's labels in CVAT order (``id``, ``name``, ``type``, ...); skeleton sublabels left out."""
        labels = self._paginate("/api/labels", {"task_id": int(task_id)},
                                action="list the labels of", resource=f"task {task_id}")
        return [label for label in labels if label.get("parent_id") is None]

    def get_jobs(self, task_id: int) -> list[dict]:
        """The task's CVAT jobs (``id``, ``state``, ``stage``, ``start_frame``, ...); ``state`` is one of
        ``new``, ``in progress``, ``completed``, ``rejected``."""
        return self._paginate("/api/jobs", {"task_id": int(task_id)},
                              action="list the jobs of", resource=f"task {task_id}")

    def get_data_meta(self, task_id: int) -> dict:
        """``frames`` (name, width, height), ``deleted_frames``, ``start_frame``, ``frame_filter``, ..."""
        return self._get_json(f"/api/tasks/{int(task_id)}/data/meta",
                              action="read the frame list of", resource=f"task {task_id}")

    # -- annotations --

    def get_annotations(self, task_id: int) -> dict:
        """The task's annotations as CVAT ``LabeledData``: ``{"version", "tags", "shapes", "tracks"}``."""
        return self._get_json(f"/api/tasks/{int(task_id)}/annotations",
                              action="read the annotations of", resource=f"task {task_id}")

    def replace_annotations(self, task_id: int, data: Mapping[str, Any]) -> dict:
        """``PUT``: replace all annotations of the task with ``data`` (``LabeledData``)."""
        return self._request("PUT", f"/api/tasks/{int(task_id)}/annotations", json=dict(data),
                             action="replace the annotations of", resource=f"task {task_id}").json()

    def update_annotations(self, task_id: int, data: Mapping[str, Any], *, action: str = "create") -> dict:
        """``PATCH ?action=create|update|delete``: change part of the task's annotations."""
        if action not in ANNOTATION_ACTIONS:
            raise ValueError(f"action={action!r} is invalid; choose one of {', '.join(ANNOTATION_ACTIONS)}")
        return self._request("PATCH", f"/api/tasks/{int(task_id)}/annotations", params={"action": action},
                             json=dict(data), action=f"{action} annotations of", resource=f"task {task_id}").json()

    # -- automatic annotation (CVAT's lambda API over Nuclio functions) --

    def list_functions(self) -> list[dict]:
        """``GET /api/lambda/functions``: the models CVAT offers (``id``, ``kind``, ``name``, ``labels_v2``, ...)."""
        return self._get_json("/api/lambda/functions", action="list", resource="the models (serverless functions)")

    def get_function(self, function_id: str) -> dict:
        return self._get_json(f"/api/lambda/functions/{quote(function_id, safe='')}", action="read",
                              resource=f"model {function_id!r}")

    def start_auto_annotation(self, task_id: int, function_id: str, *, threshold: Optional[float] = None,
                              cleanup: bool = False) -> dict:
        """``POST /api/lambda/requests``: annotate every frame of the task with the function; returns the
        request (``id``, ``status``, ``progress``). A 409 means one is already running on the task."""
        body: dict[str, Any] = {"function": function_id, "task": int(task_id), "cleanup": cleanup}
        if threshold is not None:
            body["threshold"] = threshold
        return self._request("POST", "/api/lambda/requests", json=body, expected=(200, 201, 202),
                             action=f"start automatic annotation of task {task_id} with",
                             resource=f"model {function_id!r}").json()

    def list_auto_annotations(self) -> list[dict]:
        return self._get_json("/api/lambda/requests", action="list", resource="the automatic annotation requests")

    def get_auto_annotation(self, request_id: str) -> dict:
        return self._get_json(f"/api/lambda/requests/{quote(request_id, safe='')}", action="follow",
                              resource=f"automatic annotation request {request_id!r}")

    def cancel_auto_annotation(self, request_id: str) -> None:
        self._request("DELETE", f"/api/lambda/requests/{quote(request_id, safe='')}", expected=(200, 204),
                      action="cancel", resource=f"automatic annotation request {request_id!r}").close()

    # -- export --

    def export_dataset(
        self,
        task_id: int,
        dest: Union[str, os.PathLike],
        *,
        format: str = DEFAULT_EXPORT_FORMAT,
        save_images: bool = True,
        pbar: Optional[ProgressReporter] = None,
    ) -> Path:
        """Export the task in ``format`` and download the zip to ``dest``; returns ``dest``.

        The flow follows the server version: ``POST .../dataset/export`` + ``/api/requests`` polling
        from 2.16, the legacy ``GET .../dataset?format=`` 202/201 polling before.
        """
        pbar = pbar or NullProgressReporter()
        task_id = int(task_id)
        if self.server_version >= CURRENT_EXPORT_SINCE:
            result_url = self._start_and_wait_export(task_id, format, save_images)
            return self.download(result_url, dest, pbar=pbar, desc=f"Downloading task {task_id}")
        try:
            return self._legacy_export(task_id, dest, format, pbar)
        except GoneError:
            logger.warning("CVAT %s said the legacy export is gone; using the current export flow", self.url)
            result_url = self._start_and_wait_export(task_id, format, save_images)
            return self.download(result_url, dest, pbar=pbar, desc=f"Downloading task {task_id}")

    def _start_and_wait_export(self, task_id: int, fmt: str, save_images: bool) -> str:
        resource = f"task {task_id}"
        try:
            response = self._request(
                "POST", f"/api/tasks/{task_id}/dataset/export", expected=(202, 409),
                params={"format": fmt, "save_images": "true" if save_images else "false"},
                action="export", resource=resource,
            )
        except CvatHTTPError as e:
            if e.status in (400, 405):
                raise ExportError(f"CVAT refused to export {resource} as {fmt!r} (HTTP {e.status}: {e.detail}); "
                                  f"check the format name and that the admin has not disabled it") from e
            raise
        rq_id = response.json().get("rq_id") if response.content else None
        if not rq_id:
            raise ExportError(f"CVAT started no export request for {resource} (HTTP {response.status_code}, "
                              f"no rq_id); retry, and report it if it persists")
        if response.status_code == 409:
            logger.info("An export of task %d is already running on CVAT; following it", task_id)
        request = self._wait_request(rq_id, resource=resource)
        if not request.get("result_url"):
            raise ExportError(f"CVAT finished exporting {resource} but gave no download link; the task's export "
                              f"target may be cloud storage: set it to local in the task settings")
        return request["result_url"]

    def _wait_request(self, rq_id: str, *, resource: str) -> dict:
        """Poll ``GET /api/requests/{rq_id}`` until ``finished``; ``failed`` or a timeout raise ``ExportError``."""
        deadline = time.monotonic() + self.export_timeout
        last = None
        while True:
            request = self._get_json(f"/api/requests/{quote(rq_id, safe='')}",
                                     action="follow the export of", resource=resource)
            status = request.get("status")
            if status != last:
                logger.info("Export of %s: %s", resource, status)
                last = status
            if status == "finished":
                return request
            if status == "failed":
                raise ExportError(f"CVAT failed to export {resource}: {request.get('message') or 'no reason given'}; "
                                  f"fix the cause in CVAT (or ask the admin to check the export worker) and retry")
            if time.monotonic() > deadline:
                raise ExportError(f"the export of {resource} did not finish within {self.export_timeout:.0f} s "
                                  f"(still {status!r}); CVAT's export workers may be busy or down: retry later "
                                  f"or raise --export-timeout")
            self._sleep(self.poll_interval)

    def _legacy_export(self, task_id: int, dest: Union[str, os.PathLike], fmt: str,
                       pbar: ProgressReporter) -> Path:
        """CVAT < 2.16: repeat ``GET .../dataset?format=`` (202 while running, 201 when ready), then
        ``&action=download``."""
        resource = f"task {task_id}"
        url = f"/api/tasks/{task_id}/dataset"
        deadline = time.monotonic() + self.export_timeout
        while True:
            try:
                response = self._request("GET", url, params={"format": fmt}, expected=(201, 202),
                                         action="export", resource=resource)
            except CvatHTTPError as e:
                if e.status >= 500 or e.status == 400:
                    raise ExportError(f"CVAT failed to export {resource} as {fmt!r}: {e.detail or e.status}; "
                                      f"fix the cause in CVAT (or ask the admin to check the server logs) and retry"
                                      ) from e
                raise
            response.close()
            if response.status_code == 201:
                break
            if time.monotonic() > deadline:
                raise ExportError(f"the export of {resource} did not finish within {self.export_timeout:.0f} s; "
                                  f"retry later or raise --export-timeout")
            self._sleep(self.poll_interval)
        download_url = url + "?" + urlencode({"format": fmt, "action": "download"}, quote_via=quote)
        return self.download(download_url, dest, pbar=pbar, desc=f"Downloading task {task_id}")

    # -- downloads --

    def download(self, url: str, dest: Union[str, os.PathLike], *, pbar: Optional[ProgressReporter] = None,
                 desc: str = "Downloading") -> Path:
        """Stream ``url`` (on this server) into a temporary file beside ``dest`` and rename it when
        complete; a transfer cut short is retried, then raises ``ExportError``. Nothing partial is left."""
        pbar = pbar or NullProgressReporter()
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(self.retries + 1):
            try:
                self._download_once(url, dest, pbar, desc)
                return dest
            except _Truncated as e:
                problem = str(e)
                logger.warning("Download of %s was cut short (%s); attempt %d of %d", dest.name, problem,
                               attempt + 1, self.retries + 1)
                if attempt < self.retries:
                    self._sleep(self.backoff * 2 ** attempt)
        raise ExportError(f"the export file arrived incomplete {self.retries + 1} times ({problem}); the connection "
                          f"to CVAT at {self.url} keeps breaking off: retry later, or check proxy timeouts and "
                          f"body size limits")

    def _download_once(self, url: str, dest: Path, pbar: ProgressReporter, desc: str) -> None:
        response = self._request("GET", url, stream=True, headers={"Accept-Encoding": "identity"},
                                 action="download", resource="the export file")
        with response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
            received = 0
            try:
                with os.fdopen(fd, "wb") as out, pbar.task(total, desc=desc, unit="B"):
                    try:
                        for chunk in response.iter_content(_CHUNK_SIZE):
                            out.write(chunk)
                            received += len(chunk)
                            pbar.advance(len(chunk))
                    except requests.RequestException as e:
                        raise _Truncated(f"{received} of {total or '?'} bytes, {type(e).__name__}") from e
                if total is not None and received != total:
                    raise _Truncated(f"{received} of {total} bytes")
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)


class _Truncated(Exception):
    """A download ended before all its bytes arrived."""
