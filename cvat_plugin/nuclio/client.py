"""Nuclio dashboard client: list, get, deploy (create or update), delete and invoke functions,
on ``requests``, as ``shared/reference/nuclio.md`` (section 6) describes the REST API.

Every call names the Nuclio project (``cvat``: CVAT lists only that project's functions)
and the function namespace (``nuclio``, what CVAT queries by default). A deploy returns
202 at once; :meth:`NuclioClient.deploy` then polls the function until it is ``ready``,
or ``error``/``unhealthy`` with Nuclio's message. This module must not import torch.

Our exception hierarchy::

    NuclioError                    anything this module raises
    ├── DashboardUnreachable       the dashboard could not be reached (after retries)
    ├── DashboardHTTPError         the dashboard answered with an unexpected status (``.status``)
    │   └── FunctionNotFound       404: no such function in the namespace
    ├── InvalidFunction            the name or config was refused (checked here, or 400 from Nuclio)
    ├── DeployError                the deploy ended in error/unhealthy, or was not ready in time
    └── InvocationError            the function answered with an error status (``.status``, ``.body``)
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any, Callable, Mapping, Optional
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from cvat_plugin.cvat.auth import redact_url

logger = logging.getLogger(__name__)

#: CVAT lists the functions of this Nuclio project only (its gateway hard-codes the header).
DEFAULT_PROJECT = "cvat"
#: CVAT's ``CVAT_NUCLIO_FUNCTION_NAMESPACE`` default.
DEFAULT_NAMESPACE = "nuclio"
#: (connect, read) seconds of every dashboard call except invocations.
DEFAULT_TIMEOUT = (10.0, 60.0)
DEFAULT_RETRIES = 4
DEFAULT_BACKOFF = 0.5
RETRY_STATUSES = (429, 500, 502, 503, 504)
#: Seconds between two polls of a deploying function.
DEFAULT_POLL_INTERVAL = 2.0
#: A deploy that has not become ready after this many seconds is given up (model loading included).
DEFAULT_DEPLOY_TIMEOUT = 600.0
#: Seconds an invocation may take; sent to the dashboard as ``x-nuclio-invoke-timeout``
#: (its own default is 60 s). CVAT allows 120 s per frame.
DEFAULT_INVOKE_TIMEOUT = 120.0

READY_STATE = "ready"
#: Deploy states that end the wait with a failure (``status.message`` says why).
FAILED_STATES = ("error", "unhealthy")
#: Kubernetes DNS-1123 label: what a function name must be to become a service and a container name.
_NAME_RULE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
MAX_NAME_LENGTH = 63


class NuclioError(Exception):
    """Base of every error raised by this module; the message says what to do."""


class DashboardUnreachable(NuclioError):
    """The dashboard could not be reached, even after retries."""


class DashboardHTTPError(NuclioError):
    """The dashboard answered with a status the call did not expect."""

    def __init__(self, message: str, *, status: int, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class FunctionNotFound(DashboardHTTPError):
    """404: the function does not exist in the namespace."""


class InvalidFunction(NuclioError):
    """The function name or config is not acceptable to Nuclio."""


class DeployError(NuclioError):
    """The deploy failed (``state`` and Nuclio's ``message``) or timed out."""

    def __init__(self, message: str, *, state: str, nuclio_message: str = "") -> None:
        super().__init__(message)
        self.state = state
        self.nuclio_message = nuclio_message


class InvocationError(NuclioError):
    """The function answered an invocation with an error status."""

    def __init__(self, message: str, *, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def check_function_name(name: str) -> str:
    """``name`` if it is a valid function name, else :class:`InvalidFunction` saying the rule."""
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not _NAME_RULE.fullmatch(name):
        raise InvalidFunction(
            f"function name {name!r} is not valid: use at most {MAX_NAME_LENGTH} lowercase letters, digits "
            f"and '-', starting and ending with a letter or digit (a Kubernetes DNS-1123 label)")
    return name


def _dashboard_message(response: requests.Response) -> str:
    """Nuclio's error text: ``{"error": ...}`` from the dashboard, or the body as text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500]
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])[:500]
    return json.dumps(body)[:500]


class NuclioClient:
    """The Nuclio dashboard (port 8070) of one namespace and project. Thread-unsafe.

    Credentials for a dashboard behind a proxy may be given in the URL
    (``http://user:password@host:8070``); they are sent as HTTP Basic auth and never logged.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        project: str = DEFAULT_PROJECT,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        deploy_timeout: float = DEFAULT_DEPLOY_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise NuclioError(f"Nuclio dashboard URL {redact_url(url)!r} is not valid: give it in full, "
                              f"e.g. http://nuclio:8070")
        self.url = redact_url(url.strip()).rstrip("/")
        self.namespace = namespace
        self.project = project
        self.timeout = timeout
        self.retries = retries
        self.poll_interval = poll_interval
        self.deploy_timeout = deploy_timeout
        self._sleep = sleep
        self._session = requests.Session()
        if parts.username:
            self._session.auth = (parts.username, parts.password or "")
        self._session.headers.update({
            "x-nuclio-project-name": project,
            "x-nuclio-function-namespace": namespace,
        })
        retry = Retry(
            total=retries, connect=retries, read=retries, status=retries, other=0,
            backoff_factor=backoff, status_forcelist=RETRY_STATUSES,
            # A create (POST) is not retried on a status: the first may have been accepted.
            # Invocations are POSTs too: a detector call is not repeated behind the caller's back.
            allowed_methods=frozenset({"GET", "PUT", "DELETE"}),
            raise_on_status=False, respect_retry_after_header=True,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def __repr__(self) -> str:
        return f"NuclioClient(url={self.url!r}, namespace={self.namespace!r}, project={self.project!r})"

    def __enter__(self) -> "NuclioClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    # -- plumbing --

    def _request(self, method: str, path: str, *, action: str, expected: tuple[int, ...] = (200,),
                 timeout: Optional[tuple[float, float]] = None, **kwargs: Any) -> requests.Response:
        try:
            response = self._session.request(method, self.url + path, timeout=timeout or self.timeout, **kwargs)
        except requests.RequestException as e:
            raise DashboardUnreachable(
                f"cannot reach the Nuclio dashboard at {self.url} to {action} ({type(e).__name__}); check "
                f"NUCLIO_DASHBOARD_URL (or --nuclio-url) and that the dashboard is running") from e
        if response.status_code in expected:
            return response
        status, detail = response.status_code, _dashboard_message(response)
        said = f" (Nuclio said: {detail})" if detail else ""
        if status == 404:
            raise FunctionNotFound(f"cannot {action}: not found in namespace {self.namespace!r} of the Nuclio "
                                   f"dashboard at {self.url}{said}", status=status, detail=detail)
        if status == 400:
            raise InvalidFunction(f"the Nuclio dashboard refused to {action}{said}")
        if status >= 500 or status == 429:
            raise DashboardHTTPError(f"the Nuclio dashboard at {self.url} failed to {action}: HTTP {status} after "
                                     f"{self.retries + 1} attempts{said}; check the dashboard's logs and retry",
                                     status=status, detail=detail)
        raise DashboardHTTPError(f"the Nuclio dashboard at {self.url} refused to {action}: HTTP {status}{said}",
                                 status=status, detail=detail)

    # -- functions --

    def list_functions(self) -> dict[str, dict]:
        """The functions of the project, by name: ``{name: {metadata, spec, status}}``."""
        body = self._request("GET", "/api/functions", action="list functions").json()
        return body if isinstance(body, dict) else {}

    def get_function(self, name: str) -> dict:
        """One function (``metadata``, ``spec``, ``status``); :class:`FunctionNotFound` if it does not exist."""
        return self._request("GET", f"/api/functions/{quote(name, safe='')}",
                             action=f"read function {name!r}").json()

    def find_function(self, name: str) -> Optional[dict]:
        """Like :meth:`get_function`, but None when the function does not exist."""
        try:
            return self.get_function(name)
        except FunctionNotFound:
            return None

    def deploy(self, config: Mapping[str, Any], *, wait: bool = True) -> dict:
        """Create the function, or update it when it exists (idempotent); returns the function,
        ready unless ``wait`` is false. Raises :class:`DeployError` with Nuclio's message on failure."""
        config = dict(config)
        metadata = {**config.get("metadata", {}), "namespace": self.namespace}
        name = check_function_name(metadata.get("name", ""))
        config["metadata"] = metadata
        if self.find_function(name) is None:
            logger.info("Creating Nuclio function %s on %s", name, self.url)
            response = self._request("POST", "/api/functions", json=config, expected=(201, 202, 409),
                                     action=f"create function {name!r}")
            if response.status_code == 409:  # created meanwhile (or by a retried request): update it
                self._update(name, config)
        else:
            self._update(name, config)
        return self.wait_ready(name) if wait else self.get_function(name)

    def _update(self, name: str, config: Mapping[str, Any]) -> None:
        logger.info("Updating Nuclio function %s on %s", name, self.url)
        self._request("PUT", f"/api/functions/{quote(name, safe='')}", json=dict(config), expected=(200, 202, 204),
                      action=f"update function {name!r}")

    def wait_ready(self, name: str) -> dict:
        """Poll the function until it is ``ready``; ``error``/``unhealthy`` or the deploy timeout raise."""
        deadline = time.monotonic() + self.deploy_timeout
        last = None
        while True:
            function = self.get_function(name)
            status = function.get("status") or {}
            state = status.get("state", "")
            if state != last:
                logger.info("Function %s: %s", name, state or "(no state yet)")
                last = state
            if state == READY_STATE:
                return function
            if state in FAILED_STATES:
                message = status.get("message", "")
                raise DeployError(
                    f"Nuclio could not deploy function {name!r} (state {state}): {message or 'no reason given'}; "
                    f"fix the cause (the function's logs: `nuctl get function {name}`, `docker logs "
                    f"nuclio-{self.namespace}-{name}`) and deploy again", state=state, nuclio_message=message)
            if time.monotonic() > deadline:
                raise DeployError(
                    f"function {name!r} was not ready within {self.deploy_timeout:.0f} s (still {state!r}); "
                    f"the image may be pulling or the model loading slowly: check the dashboard, or wait longer "
                    f"with --deploy-timeout", state=state)
            self._sleep(self.poll_interval)

    def delete_function(self, name: str) -> None:
        """Delete the function; :class:`FunctionNotFound` when there is none of that name."""
        logger.info("Deleting Nuclio function %s on %s", name, self.url)
        self._request("DELETE", "/api/functions", json={"metadata": {"name": name, "namespace": self.namespace}},
                      expected=(200, 202, 204), action=f"delete function {name!r}")

    # -- invocation --

    def invoke(self, name: str, body: Any = None, *, path: str = "/", method: str = "POST",
               timeout: float = DEFAULT_INVOKE_TIMEOUT) -> requests.Response:
        """Call the function through the dashboard (``/api/function_invocations``); ``body`` is sent as
        JSON. Returns the function's response; an error status raises :class:`InvocationError`."""
        headers = {
            "x-nuclio-function-name": name,
            "x-nuclio-path": path,
            "x-nuclio-invoke-timeout": f"{timeout:g}s",
        }
        response = self._request(method, "/api/function_invocations", headers=headers, expected=tuple(range(100, 600)),
                                 json=body, timeout=(self.timeout[0], timeout + self.timeout[0]),
                                 action=f"invoke function {name!r}")
        if response.status_code >= 400:
            text = response.text.strip()[:500]
            raise InvocationError(f"function {name!r} answered HTTP {response.status_code}: {text or '(no body)'}",
                                  status=response.status_code, body=text)
        return response
