"""A fake Nuclio dashboard for tests: a real HTTP server on 127.0.0.1 that speaks the part of
the dashboard REST API the product and CVAT use, as ``shared/reference/nuclio.md`` (section 6)
and nuclio's ``pkg/dashboard/resource/function.go`` describe it:

- ``GET /api/functions`` (filtered by ``x-nuclio-project-name``), ``GET /api/functions/<name>``
  (404 ``{"error": "Function not found"}``);
- ``POST /api/functions`` -> 202 (409 for an existing name, 400 for a name that breaks the
  k8s rules), ``PUT /api/functions/<name>`` -> 202, ``DELETE /api/functions`` -> 204;
- a deploy moves through ``building`` (only when the config needs a build, by Nuclio's own
  rule) or ``waitingForResourceConfiguration``, then ``ready`` or ``error``: one state per
  ``GET`` of the function, so tests are deterministic;
- ``/api/function_invocations`` routed by ``x-nuclio-function-name`` (and ``x-nuclio-path``).

A function whose handler imports (e.g. ``serverless.detector.main:handler``) really runs:
when it becomes ready its "container" starts, i.e. the handler module's ``init_context`` runs
under ``nuclio_sdk``'s test platform with the config's ``spec.env`` in ``os.environ``; an
exception there fails the deploy with state ``error``, as a container that never gets ready
does. Invocations go through the same platform, and the handler's return value is encoded by
the SDK's own ``Response.from_entrypoint_output``, as the Python wrapper does.
"""

from __future__ import annotations

import copy
import importlib
import itertools
import json
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Iterator, Optional
from unittest import mock
from urllib.parse import unquote, urlsplit

import pytest

from tests.fakes.nuclio import Platform, make_event, to_wire, wire_body
from tests.fakes.serving import ServedFake

DEFAULT_NAMESPACE = "nuclio"
PROJECT_LABEL = "nuclio.io/project-name"
#: k8s validation.IsQualifiedName (name part), which the dashboard applies to function names.
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
#: ``os.environ`` is process-wide: one function "container" runs at a time.
_ENV_LOCK = threading.Lock()


class HttpError(Exception):
    def __init__(self, status: int, message: str = ""):
        super().__init__(message)
        self.status, self.message = status, message


# --- a running function -------------------------------------------------------------------------


class Container:
    """One function replica: its handler, its env and its own SDK platform (so ``init_context``
    runs once per container and two functions with the same handler keep separate models)."""

    def __init__(self, config: dict) -> None:
        spec = config["spec"]
        module_name, _, function_name = spec["handler"].partition(":")
        self.env = {item["name"]: str(item.get("value", "")) for item in spec.get("env", [])}
        self.handler = getattr(importlib.import_module(module_name), function_name)
        self.platform = Platform()

    def start(self) -> None:
        """Run ``init_context`` (what a container does before it reports ready)."""
        with self._environment():
            self.platform._get_handler_context(self.handler)

    def invoke(self, method: str, path: str, content_type: str, raw: bytes) -> tuple[int, str, bytes]:
        body: Any = raw
        if content_type == "application/json":  # the only content type Nuclio decodes (reference 1.2)
            try:
                body = json.loads(raw)
            except ValueError:
                pass
        event = make_event(method, path, body, content_type=content_type)
        try:
            with self._environment():
                wire = to_wire(self.platform.call_handler(self.handler, event))
        except Exception as e:  # the wrapper's answer to an exception in the handler
            return 500, "text/plain", f'Exception caught in handler - "{e}"'.encode()
        return wire["status_code"], wire["content_type"], wire_body(wire)

    @contextmanager
    def _environment(self) -> Iterator[None]:
        with _ENV_LOCK, mock.patch.dict(os.environ, self.env):
            yield


@dataclass
class Function:
    config: dict
    """``metadata`` and ``spec`` as stored (after Nuclio's enrichment)."""
    state: str
    http_port: int
    message: str = ""
    container: Optional[Container] = None

    @property
    def name(self) -> str:
        return self.config["metadata"]["name"]

    def to_json(self) -> dict:
        status = {"state": self.state, "httpPort": self.http_port,
                  "internalInvocationUrls": [f"nuclio-{self.config['metadata']['namespace']}-{self.name}:8080"],
                  "externalInvocationUrls": [f"127.0.0.1:{self.http_port}"]}
        if self.message:
            status["message"] = self.message
        return {**copy.deepcopy(self.config), "status": status}


def build_required(spec: dict) -> bool:
    """Nuclio's ``functionBuildRequired`` (pkg/platform/abstract/platform.go)."""
    build = spec.get("build") or {}
    if build.get("mode") == "neverBuild":
        return False
    if build.get("functionSourceCode") or build.get("path") or build.get("image") or \
            build.get("codeEntryType") == "s3":
        return True
    if spec.get("image"):
        return False
    raise HttpError(400, "Function must have either spec.build.path, spec.build.functionSourceCode, "
                         "spec.build.image or spec.image set in order to create")


# --- the dashboard ------------------------------------------------------------------------------


class FakeNuclioDashboard(ServedFake):
    """The fake dashboard and its functions. Start it with ``start()`` or a ``with`` block."""

    def __init__(self, *, polls_per_state: int = 1, default_namespace: str = DEFAULT_NAMESPACE) -> None:
        """``polls_per_state``: GETs of a function it spends in each deploy state."""
        self.polls_per_state = polls_per_state
        self.default_namespace = default_namespace
        self.functions: dict[tuple[str, str], Function] = {}
        self.builds: list[str] = []
        """Names of the functions whose deploys built an image, in order."""
        self.invocations: list[tuple[str, str, Any]] = []
        """``(function name, path, decoded JSON body)`` of every invocation."""
        self.log: list[tuple[str, str, int]] = []
        self.faults: list[list] = []
        """``[method, path regex, status, times left]``: see :meth:`fail`."""
        self.lock = threading.RLock()
        self._polls: dict[tuple[str, str], int] = {}
        self._ports = itertools.count(32768)

    thread_name = "fake-nuclio"

    @property
    def handler_class(self) -> type:
        return _Handler

    def fail(self, method: str, path: str, status: int, *, times: int = 1) -> None:
        """Answer the next ``times`` requests matching ``method`` and the ``path`` regex with ``status``."""
        self.faults.append([method, re.compile(path), status, times])

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p, _ in self.log if m == method and re.fullmatch(path, p))

    # -- deploys --

    def store(self, config: dict, namespace: str, project: str) -> Function:
        """Validate and store a create/update, as the dashboard does before answering 202."""
        metadata = config.setdefault("metadata", {})
        spec = config.setdefault("spec", {})
        metadata["namespace"] = namespace
        if project:
            metadata.setdefault("labels", {})[PROJECT_LABEL] = project
        name = metadata.get("name", "")
        if not name:
            raise HttpError(400, "Function name must be provided in metadata")
        if len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
            raise HttpError(400, "Function name doesn't conform to k8s naming convention. Errors: a qualified "
                                 "name must consist of alphanumeric characters, '-', '_' or '.', and must start "
                                 "and end with an alphanumeric character")
        built = build_required(spec)
        if not built and not spec.get("runtime"):
            raise HttpError(400, "If image is passed, runtime must be specified")
        previous = self.functions.get((namespace, name))
        function = Function(config=config, state="building" if built else "waitingForResourceConfiguration",
                            http_port=previous.http_port if previous else next(self._ports))
        self.functions[(namespace, name)] = function
        self._polls[(namespace, name)] = 0
        if built:
            self.builds.append(name)
        return function

    def advance(self, function: Function, namespace: str) -> None:
        """One poll's worth of deploying: building -> waitingForResourceConfiguration -> ready | error."""
        key = (namespace, function.name)
        self._polls[key] = self._polls.get(key, 0) + 1
        if self._polls[key] <= self.polls_per_state or function.state in ("ready", "error"):
            return
        self._polls[key] = 0
        if function.state == "building":
            spec = function.config["spec"]
            spec["image"] = (spec.get("build") or {}).get("image") or f"nuclio/processor-{function.name}:latest"
            function.state = "waitingForResourceConfiguration"
        elif function.state == "waitingForResourceConfiguration":
            self._start_container(function)

    def _start_container(self, function: Function) -> None:
        if not function.config["spec"].get("handler"):
            function.state = "ready"
            return
        try:
            container = Container(function.config)
            container.start()
        except Exception as e:
            function.state = "error"
            function.message = (f"Function wasn't ready in time. Logs:\nException raised while running "
                                f"init_context: {type(e).__name__}: {e}")
            return
        function.container, function.state, function.message = container, "ready", ""


class _Handler(BaseHTTPRequestHandler):
    server_version = "nuclio-dashboard"

    @property
    def fake(self) -> FakeNuclioDashboard:
        return self.server.fake  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _raw_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self) -> Any:
        try:
            return json.loads(self._raw_body() or b"null")
        except ValueError:
            raise HttpError(400, "Failed to parse JSON body") from None

    def _send(self, status: int, body: Any = None, *, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
        self.fake.log.append((self.command, self._path, status))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    @property
    def namespace(self) -> str:
        return self.headers.get("x-nuclio-function-namespace") or self.fake.default_namespace

    def _dispatch(self) -> None:
        self._path = urlsplit(self.path).path.rstrip("/") or "/"
        try:
            with self.fake.lock:
                for fault in self.fake.faults:
                    if fault[3] > 0 and fault[0] == self.command and fault[1].fullmatch(self._path):
                        fault[3] -= 1
                        raise HttpError(fault[2], "injected failure")
            if self._path == "/api/function_invocations":
                self.invoke()
                return
            with self.fake.lock:
                if self._path == "/api/functions":
                    {"GET": self.list_functions, "POST": self.create, "DELETE": self.delete}.get(
                        self.command, self.not_allowed)()
                elif match := re.fullmatch(r"/api/functions/([^/]+)", self._path):
                    {"GET": self.get_function, "PUT": self.update}.get(
                        self.command, self.not_allowed)(unquote(match[1]))
                else:
                    raise HttpError(404, "Not found")
        except HttpError as e:
            self._send(e.status, {"error": e.message})
        except (BrokenPipeError, ConnectionResetError):
            pass

    def not_allowed(self, *args: Any) -> None:
        raise HttpError(405, "Method not allowed")

    def _lookup(self, name: str) -> Function:
        function = self.fake.functions.get((self.namespace, name))
        project = self.headers.get("x-nuclio-project-name")
        if function is None or (project and function.config["metadata"].get("labels", {}).get(PROJECT_LABEL)
                                != project):
            raise HttpError(404, "Function not found")
        return function

    def list_functions(self) -> None:
        project = self.headers.get("x-nuclio-project-name")
        self._send(200, {
            name: function.to_json() for (namespace, name), function in self.fake.functions.items()
            if namespace == self.namespace and (
                not project or function.config["metadata"].get("labels", {}).get(PROJECT_LABEL) == project)
        })

    def get_function(self, name: str) -> None:
        function = self._lookup(name)
        self.fake.advance(function, self.namespace)
        self._send(200, function.to_json())

    def _config(self) -> dict:
        config = self._json_body()
        if not isinstance(config, dict):
            raise HttpError(400, "Failed to parse JSON body")
        return {"metadata": dict(config.get("metadata") or {}), "spec": copy.deepcopy(config.get("spec") or {})}

    def _target_namespace(self, config: dict) -> str:
        return (self.headers.get("x-nuclio-function-namespace") or config["metadata"].get("namespace")
                or self.fake.default_namespace)

    def create(self) -> None:
        config = self._config()
        namespace = self._target_namespace(config)
        if (namespace, config["metadata"].get("name")) in self.fake.functions:
            raise HttpError(409, "Cannot create two functions with the same name")
        self.fake.store(config, namespace, self.headers.get("x-nuclio-project-name", ""))
        self._send(202)

    def update(self, name: str) -> None:
        config = self._config()
        self.fake.store(config, self._target_namespace(config), self.headers.get("x-nuclio-project-name", ""))
        self._send(202)

    def delete(self) -> None:
        body = self._json_body()
        metadata = (body or {}).get("metadata") or {}
        namespace = metadata.get("namespace") or self.namespace
        if (namespace, metadata.get("name")) not in self.fake.functions:
            raise HttpError(404, "Function not found")
        del self.fake.functions[(namespace, metadata["name"])]
        self._send(204)

    def invoke(self) -> None:
        name = self.headers.get("x-nuclio-function-name")
        if not name:
            raise HttpError(400, "Function name must be provided in header")
        raw = self._raw_body()
        with self.fake.lock:
            function = self._lookup(name)
            if function.state != "ready":
                # The fake's choice: the real dashboard finds no invocation URL for a function that is not ready.
                raise HttpError(500, f"Function {name} is not ready (state {function.state})")
            container = function.container
            try:
                decoded = json.loads(raw) if raw else None
            except ValueError:
                decoded = raw
            self.fake.invocations.append((name, "/" + self.headers.get("x-nuclio-path", "").lstrip("/"), decoded))
        if container is None:
            raise HttpError(500, f"Function {name} has no handler to run")
        status, content_type, body = container.invoke(
            self.command, "/" + self.headers.get("x-nuclio-path", "").lstrip("/"),
            self.headers.get("Content-Type", ""), raw)
        self._send(status, body, content_type=content_type)


# --- test helpers -------------------------------------------------------------------------------


def echo_handler(context: Any, event: Any) -> Any:
    """A tiny function for client tests: answers with what it received and its env."""
    body = event.body.decode() if isinstance(event.body, bytes) else event.body
    return context.Response(body=json.dumps({"path": event.path, "method": event.method, "body": body,
                                             "greeting": os.environ.get("GREETING")}),
                            headers={}, content_type="application/json", status_code=200)


def echo_config(name: str, **spec: Any) -> dict:
    """A function config that builds from source and runs :func:`echo_handler`."""
    return {"metadata": {"name": name, "annotations": {"type": "detector", "spec": "[]"}},
            "spec": {"description": "echo", "runtime": "python:3.10",
                     "handler": "tests.fakes.nuclio_dashboard:echo_handler",
                     "build": {"path": ".", "image": f"tests/{name}:latest"}, **spec}}


def deploy_yaml(fake: FakeNuclioDashboard, path: Path, *, env: dict[str, str], volume_path: Path) -> dict:
    """Deploy a function.yaml as ``nuctl deploy --project-name cvat`` would, with ``env`` overriding
    its env values and every hostPath volume pointing at ``volume_path``; returns the stored config."""
    import yaml

    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["spec"]["env"] = [{"name": item["name"], "value": env.get(item["name"], item["value"])}
                             for item in config["spec"].get("env", [])]
    for volume in config["spec"].get("volumes", []):
        volume["volume"]["hostPath"]["path"] = str(volume_path)
    config["spec"]["build"]["path"] = "."
    with fake.lock:
        function = fake.store(config, fake.default_namespace, "cvat")
        while function.state not in ("ready", "error"):
            fake.advance(function, fake.default_namespace)
    assert function.state == "ready", function.message
    return function.to_json()


@pytest.fixture
def fake_nuclio() -> Iterator[FakeNuclioDashboard]:
    """A running fake Nuclio dashboard (namespace ``nuclio``)."""
    with FakeNuclioDashboard() as fake:
        yield fake
