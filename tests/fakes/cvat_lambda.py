"""CVAT's lambda manager for the fake CVAT: functions listed from a Nuclio dashboard, batch
auto-annotation requests, as ``cvat/apps/lambda_manager/views.py`` (2.42) and
``shared/reference/cvat.md`` (sections 6.1-6.8 and "Observed behaviour") describe them.

- Functions come from ``GET <dashboard>/api/functions`` with CVAT's headers (project ``cvat``);
  an unknown ``metadata.annotations.type`` is skipped, a missing ``spec.description`` fails
  the whole list (a ``KeyError`` in CVAT).
- A request is an RQ job keyed by task: a second one while it runs is a 409 with CVAT's
  message. It advances one step per status poll: ``queued`` -> ``started`` -> one frame per
  poll (deleted frames skipped, ``progress`` = percent of frames) -> ``finished`` (shapes saved)
  or ``failed`` (``exc_info``).
- Each frame is sent through the dashboard (``/api/function_invocations``,
  ``x-nuclio-function-name``) as ``{"image": <base64>}`` plus ``threshold`` when truthy;
  results are mapped to task labels by name (unmapped labels dropped), saved as ``source: auto``.
- Errors are bare JSON strings, with the status CVAT's ``return_response`` gives them.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Optional

import requests

from tests.fakes.serving import utc_now

KINDS = ("detector", "interactor", "reid", "tracker")
#: What CVAT sends to the dashboard on every call (LambdaGateway._http).
TIMEOUT_S = 120


class LambdaError(Exception):
    """An answer of the lambda views: ``status`` and a bare string body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class LambdaFunction:
    id: str
    kind: str
    labels: list[dict]
    description: str
    name: str
    version: int

    @classmethod
    def from_nuclio(cls, data: dict) -> Optional["LambdaFunction"]:
        """``LambdaFunction.__init__``; None for a kind CVAT skips."""
        annotations = data["metadata"].get("annotations") or {}
        if annotations.get("type") not in KINDS:
            return None
        labels = [{"name": label["name"], "type": label.get("type", "any"),
                   "attributes": label.get("attributes", [])} for label in json.loads(annotations.get("spec") or "[]")]
        if len(labels) != len({label["name"] for label in labels}):
            return None  # "non-unique labels": logged and skipped
        return cls(id=data["metadata"]["name"], kind=annotations["type"], labels=labels,
                   description=data["spec"]["description"], name=annotations.get("name", data["metadata"]["name"]),
                   version=int(annotations.get("version", "1")))

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "labels_v2": self.labels, "description": self.description,
                "name": self.name, "version": self.version}


class NuclioGateway:
    """CVAT's ``LambdaGateway`` with ``CVAT_NUCLIO_INVOKE_METHOD=dashboard``."""

    def __init__(self, url: Optional[str], namespace: str = "nuclio") -> None:
        self.url, self.namespace = url, namespace

    def _http(self, method: str, path: str, *, headers: Optional[dict] = None, data: Any = None) -> Any:
        if not self.url:  # CVAT without its serverless compose file: nothing listens on nuclio:8070
            raise LambdaError(503, "HTTPConnectionPool(host='nuclio', port=8070): Max retries exceeded")
        all_headers = {"x-nuclio-project-name": "cvat", "x-nuclio-function-namespace": self.namespace,
                       "x-nuclio-invoke-via": "domain-name", "X-Nuclio-Invoke-Timeout": f"{TIMEOUT_S}s",
                       **(headers or {})}
        try:
            reply = requests.request(method, self.url + path, headers=all_headers, json=data, timeout=TIMEOUT_S)
            reply.raise_for_status()
            return reply.json()
        except requests.ConnectionError as e:
            raise LambdaError(503, str(e)) from e
        except requests.HTTPError as e:
            raise LambdaError(e.response.status_code, str(e)) from e

    def list(self) -> list[LambdaFunction]:
        functions = [LambdaFunction.from_nuclio(item) for item in self._http("GET", "/api/functions").values()]
        return [function for function in functions if function is not None]

    def get(self, function_id: str) -> LambdaFunction:
        function = LambdaFunction.from_nuclio(self._http("GET", f"/api/functions/{function_id}"))
        if function is None:
            raise LambdaError(400, f"{function_id} lambda function has unknown type")
        return function

    def invoke(self, function: LambdaFunction, payload: dict) -> Any:
        return self._http("POST", "/api/function_invocations", data=payload,
                          headers={"x-nuclio-function-name": function.id, "x-nuclio-path": "/"})


def compatible(model_type: str, task_type: str) -> bool:
    """``labels_compatible`` of the lambda views."""
    masks = ("mask", "polygon")
    return (model_type == task_type or (task_type == "any" and model_type != "skeleton")
            or (model_type == "any" and task_type != "skeleton") or (model_type in masks and task_type in masks))


@dataclass
class LambdaRequest:
    """One batch auto-annotation of a task (an RQ job of the AUTO_ANNOTATION queue)."""

    function: LambdaFunction
    task_id: int
    owner_id: int
    threshold: Optional[float]
    cleanup: bool
    mapping: dict[str, str]
    """model label name -> task label name"""
    frames: list[int]
    """Frames still to annotate (deleted frames left out)."""
    size: int
    status: str = "queued"
    progress: Optional[int] = None
    results: list[dict] = field(default_factory=list)
    """Detector outputs with ``frame`` added, mapped to task label names."""
    exc_info: Optional[str] = None
    enqueued: str = field(default_factory=utc_now)
    started: Optional[str] = None
    ended: Optional[str] = None

    @property
    def id(self) -> str:
        return f"action=autoannotate&target=task&target_id={self.task_id}"

    @property
    def running(self) -> bool:
        return self.status in ("queued", "started")

    def to_dict(self) -> dict:
        return {"id": self.id, "function": {"id": self.function.id, "threshold": self.threshold,
                                            "task": self.task_id},
                "status": self.status, "progress": self.progress, "enqueued": self.enqueued,
                "started": self.started, "ended": self.ended, "exc_info": self.exc_info}

    def step(self, gateway: NuclioGateway, frame_data: list[bytes]) -> None:
        """One poll's worth of the worker: start, or annotate the next frame, or finish."""
        if self.status == "queued":
            self.status, self.started = "started", utc_now()
            return
        if self.status != "started":
            return
        if not self.frames:
            self.status, self.progress, self.ended = "finished", 100, utc_now()
            return
        frame = self.frames.pop(0)
        payload: dict[str, Any] = {"image": base64.b64encode(frame_data[frame]).decode()}
        if self.threshold:  # CVAT forwards only a truthy threshold
            payload["threshold"] = self.threshold
        try:
            items = self._checked(gateway.invoke(self.function, payload))
        except LambdaError as e:
            self.status, self.ended = "failed", utc_now()
            self.exc_info = f"Traceback (most recent call last):\n  ...\nrequests.exceptions.HTTPError: {e.message}"
            return
        for item in items:
            if item["label"] in self.mapping:
                self.results.append({**item, "label": self.mapping[item["label"]], "frame": frame})
        self.progress = int((frame + 1) / self.size * 100)

    @staticmethod
    def _checked(items: Any) -> list[dict]:
        if not isinstance(items, list) or not all(isinstance(item, dict) and "label" in item for item in items):
            raise LambdaError(500, f"the detector answered {json.dumps(items)[:200]}, not a list of shapes")
        return items
