"""A stand-in for the DETR gateway, for the UI plugin's browser test.

It speaks the Gateway API and the Job object contracts (routes under /detr/api, JSON errors
``{"error": ...}``) and checks what the browser sends the way CVAT's Django would: 401 without a
``sessionid`` cookie, 403 when an unsafe request's ``X-CSRFToken`` differs from the ``csrftoken``
cookie. Jobs move queued -> running (epochs of steps) -> succeeded on the wall clock, and a second
train request for a task with a queued or running job gets 409 with that job.

Run it by hand to work on the plugin: ``python tests/ui_gateway_stub.py --port 8765``, then
``npm run e2e -- --base-url http://127.0.0.1:8765/detr/api`` in cvat_plugin/ui.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http import cookies
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_PREFIX = "/detr/api"
WEIGHTS_OPTIONS = ["coco", "imagenet", "scratch", "previous"]
TRAIN_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "epochs": (int,),
    "image_size": (int,),
    "weights": (str,),
    "val_fraction": (int, float),
    "publish": (bool,),
}

SUMMARIES: dict[int, dict[str, Any]] = {
    42: {
        "task": {"id": 42, "name": "street scenes", "frames": 120},
        "labels": [
            {"id": 1, "name": "car", "boxes": 230},
            {"id": 2, "name": "person", "boxes": 75},
            {"id": 3, "name": "bicycle", "boxes": 4},
        ],
        "annotated_frames": 96,
        "warnings": [
            "label 'bicycle' has only 4 boxes; the model will hardly learn it (aim for 10 or more)",
        ],
    },
    7: {
        "task": {"id": 7, "name": "empty task", "frames": 10},
        "labels": [{"id": 5, "name": "car", "boxes": 0}],
        "annotated_frames": 0,
        "warnings": ["the task has no annotated boxes: draw boxes in CVAT, then train"],
    },
}
DEFAULTS = {"epochs": 50, "image_size": 800, "weights": "coco", "val_fraction": 0.15, "publish": True}


class RequestError(Exception):
    """Answered as ``{"error": message}`` with the status (and the extra keys)."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class SimulatedJob:
    """A job whose state is a function of the time since it was created."""

    id: str
    task_id: int
    number: int
    options: dict[str, Any]
    queue_s: float
    epoch_s: float
    steps: int
    created: float = field(default_factory=time.monotonic)
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    cancelled_at: float | None = None

    def is_active(self) -> bool:
        return self.snapshot()["state"] in ("queued", "running")

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic() if self.cancelled_at is None else self.cancelled_at
        epochs = self.options["epochs"]
        run_s = now - self.created - self.queue_s
        done = min(max(run_s / self.epoch_s, 0.0), float(epochs))  # epochs of work done
        completed = int(done)
        if self.cancelled_at is not None:
            state = "cancelled"
        elif run_s < 0:
            state = "queued"
        elif done >= epochs:
            state = "succeeded"
        else:
            state = "running"
        ap = 0.6 * (1 - 0.5**completed)
        metrics = {"AP": round(ap, 4), "AP50": round(min(0.95, ap * 1.55), 4)} if completed else {}
        started = self.created_at + timedelta(seconds=self.queue_s)
        finished = state in ("succeeded", "cancelled")
        published = state == "succeeded" and self.options["publish"]
        return {
            "id": self.id,
            "task_id": self.task_id,
            "dataset_id": f"ds-{self.id}",
            "state": state,
            "epoch": 0 if state == "queued" else min(completed + 1, epochs),
            "epochs": epochs,
            "step": min(int((done - completed) * self.steps), self.steps) if state == "running" else 0,
            "steps": self.steps,
            "progress": round(done / epochs, 4),
            "loss": round(2.0 * math.exp(-done) + 0.3, 4) if state != "queued" else None,
            "metrics": metrics,
            "best_metrics": metrics,
            "eta_s": round((epochs - done) * self.epoch_s, 1) if state == "running" else None,
            "error": None,
            "model_id": f"model-{self.id}" if state == "succeeded" else None,
            "function": f"detr-task-{self.task_id}-v{self.number}" if published else None,
            "options": dict(self.options),
            "created": _iso(self.created_at),
            "started": _iso(started) if state != "queued" else None,
            "finished": _iso(started + timedelta(seconds=done * self.epoch_s)) if finished else None,
        }


def _parse_train_options(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError(400, "the body must be a JSON object of training options")
    unknown = sorted(set(body) - set(TRAIN_OPTION_TYPES))
    if unknown:
        raise RequestError(400, f"unknown option {unknown[0]!r}; known options: {', '.join(TRAIN_OPTION_TYPES)}")
    for name, types in TRAIN_OPTION_TYPES.items():
        value = body.get(name)
        # bool is an int in Python; only 'publish' may be one.
        if name not in body or not isinstance(value, types) or (name != "publish" and isinstance(value, bool)):
            raise RequestError(400, f"option {name!r} is missing or has the wrong type (got {value!r})")
    if body["epochs"] < 1:
        raise RequestError(400, f"'epochs' must be at least 1 (got {body['epochs']})")
    if body["weights"] not in WEIGHTS_OPTIONS:
        raise RequestError(400, f"'weights' must be one of {', '.join(WEIGHTS_OPTIONS)} (got {body['weights']!r})")
    if not 0 < body["val_fraction"] < 1:
        raise RequestError(400, f"'val_fraction' must be between 0 and 1 (got {body['val_fraction']})")
    return dict(body)


class StubGateway:
    """The stand-in server; a context manager that serves on 127.0.0.1 in a background thread."""

    def __init__(self, *, port: int = 0, queue_s: float = 1.0, epoch_s: float = 1.5, steps: int = 8) -> None:
        self.queue_s, self.epoch_s, self.steps = queue_s, epoch_s, steps
        self.jobs: dict[str, SimulatedJob] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) as answered
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def api_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{API_PREFIX}"

    def __enter__(self) -> StubGateway:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        url = urlsplit(target)
        if not url.path.startswith(f"{API_PREFIX}/"):
            raise RequestError(404, f"no such path {url.path!r}; the API lives under {API_PREFIX}/")
        path = url.path[len(API_PREFIX):]
        jar = cookies.SimpleCookie(headers.get("cookie", ""))
        if "sessionid" not in jar:
            raise RequestError(401, "Authentication credentials were not provided: log in to CVAT")
        if method == "POST":
            csrf = jar["csrftoken"].value if "csrftoken" in jar else None
            if not csrf or headers.get("x-csrftoken") != csrf:
                raise RequestError(403, "CSRF check failed: reload the CVAT page and try again")
        query = parse_qs(url.query)
        with self._lock:
            return self._route(method, path, query, body)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, Any]:
        if (method, path) == ("GET", "/health"):
            return 200, {"status": "ok", "trainer": "ok", "version": "stub"}
        if match := re.fullmatch(r"/tasks/(\d+)/(summary|train)", path):
            task_id, action = int(match[1]), match[2]
            if task_id not in SUMMARIES:
                raise RequestError(404, f"task {task_id} does not exist or you cannot see it")
            if (method, action) == ("GET", "summary"):
                return 200, {**SUMMARIES[task_id], "defaults": DEFAULTS, "weights_options": WEIGHTS_OPTIONS}
            if (method, action) == ("POST", "train"):
                return self._start(task_id, body)
        if match := re.fullmatch(r"/jobs/([A-Za-z0-9_-]+)(/cancel)?", path):
            job = self.jobs.get(match[1])
            if job is None:
                raise RequestError(404, f"job {match[1]!r} does not exist")
            if method == "GET" and not match[2]:
                return 200, job.snapshot()
            if method == "POST" and match[2]:
                if not job.is_active():
                    raise RequestError(409, f"job {job.id} has already ended ({job.snapshot()['state']})")
                job.cancelled_at = time.monotonic()
                return 200, job.snapshot()
        if (method, path) == ("GET", "/jobs"):
            return 200, {"jobs": [job.snapshot() for job in self._jobs_of(self._task_query(query))]}
        if (method, path) == ("GET", "/models"):
            task_id = self._task_query(query)
            labels = [label["name"] for label in SUMMARIES.get(task_id, {}).get("labels", [])]
            published = [(job, job.snapshot()) for job in self._jobs_of(task_id)]
            return 200, {"models": [
                {"id": snap["model_id"], "task_id": task_id, "version": job.number, "created": snap["finished"],
                 "metrics": snap["best_metrics"], "labels": labels, "function": snap["function"]}
                for job, snap in published if snap["function"]
            ]}
        raise RequestError(404 if method == "GET" else 405, f"{method} {API_PREFIX}{path} is not part of the API")

    def _jobs_of(self, task_id: int) -> list[SimulatedJob]:
        """Newest first."""
        return [job for job in reversed(self.jobs.values()) if job.task_id == task_id]

    @staticmethod
    def _task_query(query: dict[str, list[str]]) -> int:
        values = query.get("task", [])
        if len(values) != 1 or not values[0].isdigit():
            raise RequestError(400, "pass the task as ?task=<numeric task id>")
        return int(values[0])

    def _start(self, task_id: int, body: bytes) -> tuple[int, Any]:
        try:
            options = _parse_train_options(json.loads(body or b"null"))
        except json.JSONDecodeError as error:
            raise RequestError(400, f"the body is not valid JSON ({error})") from error
        for job in self.jobs.values():
            if job.task_id == task_id and job.is_active():
                raise RequestError(409, f"task {task_id} is already training (job {job.id})", job=job.snapshot())
        number = 1 + sum(job.task_id == task_id for job in self.jobs.values())
        job = SimulatedJob(f"job-{len(self.jobs) + 1}", task_id, number, options,
                           self.queue_s, self.epoch_s, self.steps)
        self.jobs[job.id] = job
        return 202, job.snapshot()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                try:
                    status, payload = gateway.handle(self.command, self.path, headers, body)
                except RequestError as error:
                    status, payload = error.status, {"error": str(error), **error.extra}
                gateway.requests.append((self.command, self.path, status))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765)")
    parser.add_argument("--epoch-s", type=float, default=1.5, help="seconds per simulated epoch (default 1.5)")
    args = parser.parse_args()
    with StubGateway(port=args.port, epoch_s=args.epoch_s) as gateway:
        print(f"stub gateway at {gateway.api_url}; Ctrl-C stops it")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
