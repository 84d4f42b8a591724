"""A fake Kubernetes API server for the PyTorchJob backend: a real HTTP server on 127.0.0.1 that serves
``kubeflow.org/v1`` ``pytorchjobs`` the way the API server serves a custom resource, so that the
real ``kubernetes`` client talks to it (through a kubeconfig, ``FakeKubeApi.kubeconfig``):

- ``POST   /apis/kubeflow.org/v1/namespaces/<ns>/pytorchjobs`` -> 201 the object (409 AlreadyExists);
- ``GET    .../pytorchjobs`` -> 200 a ``PyTorchJobList``; ``GET .../pytorchjobs/<name>`` -> 200 (404 NotFound);
- ``DELETE .../pytorchjobs/<name>`` -> 200 the object (404 NotFound);
- errors are ``Status`` objects (``kind: Status``, ``reason``, ``message``, ``code``); a request
  without the kubeconfig's bearer token gets 401, a namespace in ``forbidden`` 403, and with
  ``installed=False`` (no training operator) every path 404s.

The "controller" is driven by the test (``set_condition``), or, with ``run_pods=True``, runs each
pod as a local process the way the training operator and the kubelet would: the operator's
environment (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK`` = the pod's index, ``WORLD_SIZE`` = pods),
``$(VAR)`` expanded in the command, the image's ``python`` being this interpreter and the volume
claim being this machine's filesystem. The job gets ``Created``, ``Running``, then ``Succeeded``
when every pod exits 0, or ``Failed`` naming the replicas that did not; deleting it sends the pods
SIGTERM (then SIGKILL after ``grace_s``), as deleting a pod does.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.fakes.serving import ServedFake, utc_now

TOKEN = "fake-kube-token"
_PATH = re.compile(r"/apis/kubeflow\.org/v1/namespaces/([^/]+)/pytorchjobs(?:/([^/]+))?")


class FakeKubeApi(ServedFake):
    thread_name = "fake-kube-api"

    def __init__(self, *, run_pods: bool = False, installed: bool = True, forbidden: tuple[str, ...] = (),
                 logs_dir: Path | None = None, grace_s: float = 30.0):
        self.run_pods = run_pods
        self.installed = installed
        self.forbidden = forbidden
        self.logs_dir = logs_dir
        self.grace_s = grace_s
        self.jobs: dict[tuple[str, str], dict] = {}
        self.created: list[dict] = []
        """Every manifest created, in order (the body the client sent)."""
        self.requests: list[tuple[str, str]] = []
        self.pods: dict[str, list[subprocess.Popen]] = {}
        self._lock = threading.Lock()

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig for this server (``KUBECONFIG``)."""
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": TOKEN}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }))
        return path

    def stop(self) -> None:
        super().stop()
        for name in list(self.pods):
            self._stop_pods(name, grace_s=5.0)

    # --- the test's controls ------------------------------------------------------------------
    def job(self, name: str, namespace: str = "training") -> dict | None:
        with self._lock:
            job = self.jobs.get((namespace, name))
            return copy.deepcopy(job) if job is not None else None

    def add(self, manifest: dict) -> None:
        """A job that exists already (submitted by an earlier trainer)."""
        with self._lock:
            self.jobs[(manifest["metadata"]["namespace"], manifest["metadata"]["name"])] = self._stored(manifest)

    def set_condition(self, name: str, kind: str, *, reason: str = "", message: str = "",
                      namespace: str = "training") -> None:
        """Set the job's condition ``kind`` true; Succeeded and Failed turn Running false, as the operator does."""
        with self._lock:
            job = self.jobs[(namespace, name)]
            conditions = job.setdefault("status", {}).setdefault("conditions", [])
            now = utc_now()
            if kind in ("Succeeded", "Failed"):
                for condition in conditions:
                    if condition["type"] == "Running":
                        condition["status"] = "False"
            conditions[:] = [c for c in conditions if c["type"] != kind]
            conditions.append({"type": kind, "status": "True", "reason": reason or f"PyTorchJob{kind}",
                               "message": message, "lastUpdateTime": now, "lastTransitionTime": now})

    def wait_for(self, name: str, *, timeout: float = 60.0, namespace: str = "training") -> dict:
        deadline = time.monotonic() + timeout
        while (job := self.job(name, namespace)) is None:
            assert time.monotonic() < deadline, f"PyTorchJob {name} was never created"
            time.sleep(0.02)
        return job

    def pod_logs(self, name: str) -> str:
        assert self.logs_dir is not None
        return "\n".join(p.read_text() for p in sorted(self.logs_dir.glob(f"{name}-*.log")))

    # --- the API ------------------------------------------------------------------------------
    def _stored(self, manifest: dict) -> dict:
        job = copy.deepcopy(manifest)
        job["metadata"].update(uid=str(uuid.uuid4()), resourceVersion="1", creationTimestamp=utc_now())
        job.setdefault("status", {})
        return job

    def _answer(self, method: str, path: str, query: str, body: Any, token: str | None) -> tuple[int, dict]:
        if token != f"Bearer {TOKEN}":
            return _status(401, "Unauthorized", "Unauthorized")
        match = _PATH.fullmatch(path)
        if not self.installed or match is None:
            return _status(404, "NotFound", "the server could not find the requested resource")
        namespace, name = match.groups()
        if namespace in self.forbidden:
            verb = {"GET": "get" if name else "list", "POST": "create", "DELETE": "delete"}.get(method, method)
            return _status(403, "Forbidden", f'pytorchjobs.kubeflow.org is forbidden: User "system:serviceaccount:'
                           f'{namespace}:default" cannot {verb} resource "pytorchjobs" in API group "kubeflow.org" '
                           f'in the namespace "{namespace}"')
        with self._lock:
            if name is None and method == "GET":
                items = [copy.deepcopy(j) for (ns, _), j in self.jobs.items() if ns == namespace]
                limit = re.search(r"(?:^|&)limit=(\d+)", query)
                return 200, {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJobList",
                             "metadata": {"resourceVersion": "1"},
                             "items": items[: int(limit.group(1))] if limit else items}
            if name is None and method == "POST":
                name = body["metadata"]["name"]
                if (namespace, name) in self.jobs:
                    return _status(409, "AlreadyExists", f'pytorchjobs.kubeflow.org "{name}" already exists', name)
                self.created.append(copy.deepcopy(body))
                job = self.jobs[(namespace, name)] = self._stored(body)
                answer = copy.deepcopy(job)
            elif name is not None and method in ("GET", "DELETE"):
                job = self.jobs.get((namespace, name))
                if job is None:
                    return _status(404, "NotFound", f'pytorchjobs.kubeflow.org "{name}" not found', name)
                if method == "GET":
                    return 200, copy.deepcopy(job)
                del self.jobs[(namespace, name)]
                threading.Thread(target=self._stop_pods, args=(name,), daemon=True).start()
                return 200, copy.deepcopy(job)
            else:
                return _status(405, "MethodNotAllowed", f"{method} is not supported here")
        self.set_condition(name, "Created", message=f"PyTorchJob {name} is created.", namespace=namespace)
        if self.run_pods:
            threading.Thread(target=self._run, args=(namespace, name, answer), daemon=True).start()
        return 201, answer

    # --- the "controller": pods as local processes ---------------------------------------------
    def _run(self, namespace: str, name: str, job: dict) -> None:
        replicas = job["spec"]["pytorchReplicaSpecs"]
        pods = [(kind, i) for kind in ("Master", "Worker") if kind in replicas
                for i in range(replicas[kind]["replicas"])]
        operator_env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(len(pods)),
                        "PYTHONUNBUFFERED": "0"}
        processes = self.pods[name] = []
        for rank, (kind, index) in enumerate(pods):
            (container,) = replicas[kind]["template"]["spec"]["containers"]
            env = {**os.environ, **{e["name"]: e["value"] for e in container.get("env", [])}, **operator_env,
                   "RANK": str(rank)}
            command = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), part)
                       for part in container["command"] + container.get("args", [])]
            if command[0] == "python":
                command[0] = sys.executable
            log = open(self.logs_dir / f"{name}-{kind.lower()}-{index}.log", "wb") if self.logs_dir else None
            processes.append(subprocess.Popen(command, env=env, stdout=log or subprocess.DEVNULL,
                                              stderr=subprocess.STDOUT))
            if log is not None:
                log.close()  # the process has its own copy
        self._set_if_exists(namespace, name, "Running", f"PyTorchJob {name} is running.")
        codes = [p.wait() for p in processes]
        failed = {kind for (kind, _), code in zip(pods, codes) if code != 0}
        if failed:
            counts = ", ".join(f"{sum(1 for (k, _), c in zip(pods, codes) if k == kind and c)} {kind}"
                               for kind in sorted(failed))
            self._set_if_exists(namespace, name, "Failed", f"PyTorchJob {name} is failed because {counts} "
                                "replica(s) failed.")
        else:
            self._set_if_exists(namespace, name, "Succeeded", f"PyTorchJob {name} is successfully completed.")

    def _set_if_exists(self, namespace: str, name: str, kind: str, message: str) -> None:
        if self.job(name, namespace) is not None:
            self.set_condition(name, kind, message=message, namespace=namespace)

    def _stop_pods(self, name: str, grace_s: float | None = None) -> None:
        processes = self.pods.pop(name, [])
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + (self.grace_s if grace_s is None else grace_s)
        for process in processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        fake: FakeKubeApi = self.server.fake  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        fake.requests.append((self.command, url.path))
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, answer = fake._answer(self.command, url.path, url.query, json.loads(raw) if raw else None,
                                      self.headers.get("Authorization"))
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve


FakeKubeApi.handler_class = _Handler


def _status(code: int, reason: str, message: str, name: str | None = None) -> tuple[int, dict]:
    details = {"name": name, "group": "kubeflow.org", "kind": "pytorchjobs"} if name else {}
    return code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                  "reason": reason, "details": details, "code": code}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
