"""The DETR gateway: the small HTTP service behind CVAT's reverse proxy that the Train DETR UI
plugin calls same-origin, and that receives CVAT's webhook.

API, under ``/detr/api`` (JSON in and out; every error is ``{"error": "<what happened, what to do>"}``)::

    GET  /health                 {"status", "version", "trainer", "cvat", "cvat_version", "preparing", "webhooks",
                                  "auto_retrain"}
    GET  /options                {"options": [{"name", "section", "type", "default", "minimum"?, "maximum"?,
                                  "choices"?, "help"}]}: the training options (``cvat_plugin.training.schema``),
                                  defaults after DETR_TRAIN_DEFAULTS
    GET  /tasks/{id}/summary     {"task": {"id", "name", "frames"}, "labels": [{"id", "name", "boxes"}],
                                  "annotated_frames", "warnings", "weights_options", "publish_unavailable"}
    POST /tasks/{id}/train       {<option>: <value>, ...} (each optional; model options in "model"), e.g.
                                 {"epochs", "image_size", "weights", "val_fraction", "publish"}
                                 -> 202 job in state "preparing"; 409 {"error", "job"} while the task trains
    GET  /projects/{id}/summary  as a task's, with "project": {"id", "name", "frames", "tasks"} for "task"
    POST /projects/{id}/train    as a task's: trains on all the project's tasks (their subsets split them)
    GET  /jobs?task={id}         {"jobs": [job, ...]}, newest first (or ?project={id})
    GET  /jobs/{id}              job (a submitted preparation answers with the trainer's job)
    GET  /jobs/{id}/metrics      {"epochs": [{"epoch", "time_s", "train_loss", "AP", "AP50", ...}]}, oldest first
    POST /jobs/{id}/cancel       job
    GET  /models?task={id}       {"models": [model, ...], "publish": <the trainer can publish>}, newest first
                                 (or ?project={id})
    GET  /models/{id}            model: {"id", "version", "created", "weights", "epochs", "images", "metrics",
                                  "per_class", "threshold", "labels", "function", "published", "publishing",
                                  "publish_error", "report": [image, ...], ...} (``ModelStore.describe``)
    GET  /models/{id}/report/{image}   PNG: curves, pr_curves, confusion_matrix or samples
    POST /models/{id}/publish    {"replace"?} -> 202 model (publishing: true; the trainer deploys it)
    POST /models/{id}/unpublish  model
    POST /webhooks/cvat          CVAT's webhook, signed (``cvat_plugin.gateway.webhooks``)

A job is the trainer's Job object (``cvat_plugin.home.jobs``); before it reaches the trainer
the gateway answers for it with ``state`` ``preparing`` (``cvat_plugin.gateway.preparations``).

Every request except ``/health`` and the webhook is authorized by CVAT: the caller's credentials
(its session cookie, or its ``Authorization`` header) are forwarded to ``GET /api/tasks/{id}``
(``/api/projects/{id}``; ``/api/users/self`` for ``/options``), and the gateway acts only if CVAT lets
the caller see the task (project); the export runs as the caller.
CVAT's 401/403/404 pass through. POSTs made with a session must carry ``X-CSRFToken``. The
gateway stores no user credential and logs none. Configuration: ``cvat_plugin.gateway.settings``.

Run it with ``detr-gateway [--host 127.0.0.1] [--port 8000]`` or ``python -m cvat_plugin.gateway.app``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Optional, Sequence

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Mount, Route
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError("the DETR gateway needs its extra: pip install 'cvat-detr[gateway]'") from e

from cvat_plugin.cvat.auth import Credentials
from cvat_plugin.gateway.auth import caller_credentials, check_csrf
from cvat_plugin.gateway.errors import GatewayError
from cvat_plugin.gateway.jobs import TrainingService
from cvat_plugin.gateway.preparations import Source
from cvat_plugin.gateway.settings import GatewayConfigError, GatewaySettings, settings_repr
from cvat_plugin.gateway.webhooks import SIGNATURE_HEADER, handle_delivery, signature_ok
from cvat_plugin.nuclio.publish import replace_option
from detr.config import OptionError

logger = logging.getLogger(__name__)

API_PREFIX = "/detr/api"
DEFAULT_PORT = 8000
#: Ids as CVAT and the trainer make them; anything else (dots, slashes, encoded or not) is refused.
TASK_ID = re.compile(r"[1-9][0-9]{0,17}")
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,79}")
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
#: Bodies: training options are a few keys; CVAT's job payloads a few KiB.
MAX_OPTIONS_BODY = 16 * 1024
MAX_WEBHOOK_BODY = 1024 * 1024


def _task_id(value: str, what: str = "task id") -> int:
    if not TASK_ID.fullmatch(value):
        raise GatewayError(400, f"the {what} must be a positive whole number such as 42, got {value!r}")
    return int(value)


def _job_id(value: str) -> str:
    if not JOB_ID.fullmatch(value):
        raise GatewayError(400, f"the job id {value!r} is not valid: job ids have only letters, digits, '-' and '_'")
    return value


def _model_id(value: str) -> str:
    if not MODEL_ID.fullmatch(value):
        raise GatewayError(400, f"the model id {value!r} is not valid: model ids have only letters, digits, '-' "
                                f"and '_', such as task-42-v3")
    return value


def _source_query(request: Request) -> Source:
    tasks, projects = request.query_params.getlist("task"), request.query_params.getlist("project")
    if len(tasks) + len(projects) != 1:
        raise GatewayError(400, "pass the task as ?task=<task id> or the project as ?project=<project id>, once")
    if tasks:
        return Source("task", _task_id(tasks[0], "task query parameter"))
    return Source("project", _task_id(projects[0], "project query parameter"))


def _source(request: Request) -> Source:
    """The task or project of a ``/tasks/{task_id}/...`` or ``/projects/{project_id}/...`` path."""
    if "project_id" in request.path_params:
        return Source("project", _task_id(request.path_params["project_id"], "project id"))
    return Source("task", _task_id(request.path_params["task_id"]))


def _json(body: Any, status: int = 200) -> JSONResponse:
    # Per-user answers that change from poll to poll: never cached by a proxy or the browser.
    return JSONResponse(body, status, headers={"Cache-Control": "no-store"})


async def _read_body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise GatewayError(413, f"the request body is larger than {limit // 1024} KiB")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise GatewayError(400, f"the request body is not valid JSON ({e})") from None
    except RecursionError:  # e.g. '[' x 5000: the parser's stack, not ours, gives up
        raise GatewayError(400, "the request body is nested too deeply; send a flat JSON object") from None


class _Endpoints:
    """The routes over one ``TrainingService``; blocking work runs in Starlette's thread pool."""

    def __init__(self, service: TrainingService) -> None:
        self.service = service

    @staticmethod
    def _caller(request: Request) -> Optional[Credentials]:
        """The caller's CVAT credentials, after the CSRF check of unsafe requests made with a session."""
        credentials = caller_credentials(request.headers, request.cookies)
        check_csrf(request.method, request.headers, credentials)
        return credentials

    async def health(self, request: Request) -> JSONResponse:
        return _json(await run_in_threadpool(self.service.health))

    async def options(self, request: Request) -> JSONResponse:
        return _json(await run_in_threadpool(self.service.options, self._caller(request)))

    async def summary(self, request: Request) -> JSONResponse:
        source = _source(request)
        return _json(await run_in_threadpool(self.service.summary, self._caller(request), source))

    async def train(self, request: Request) -> JSONResponse:
        source = _source(request)
        credentials = self._caller(request)
        options = _parse_json(await _read_body(request, MAX_OPTIONS_BODY))
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise GatewayError(400, 'the body must be a JSON object of training options such as {"epochs": 50}')
        try:
            options = self.service.check_options(options)
        except OptionError as e:
            raise GatewayError(400, str(e)) from None
        return _json(await run_in_threadpool(self.service.start, credentials, source, options), 202)

    async def jobs(self, request: Request) -> JSONResponse:
        source = _source_query(request)
        return _json({"jobs": await run_in_threadpool(self.service.jobs, self._caller(request), source)})

    async def job(self, request: Request) -> JSONResponse:
        job_id = _job_id(request.path_params["job_id"])
        return _json(await run_in_threadpool(self.service.job, self._caller(request), job_id))

    async def cancel(self, request: Request) -> JSONResponse:
        job_id = _job_id(request.path_params["job_id"])
        return _json(await run_in_threadpool(self.service.cancel, self._caller(request), job_id))

    async def job_metrics(self, request: Request) -> JSONResponse:
        job_id = _job_id(request.path_params["job_id"])
        return _json({"epochs": await run_in_threadpool(self.service.job_metrics, self._caller(request), job_id)})

    async def models(self, request: Request) -> JSONResponse:
        source = _source_query(request)
        return _json(await run_in_threadpool(self.service.models_of, self._caller(request), source))

    async def model(self, request: Request) -> JSONResponse:
        model_id = _model_id(request.path_params["model_id"])
        return _json(await run_in_threadpool(self.service.model, self._caller(request), model_id))

    async def model_report(self, request: Request) -> FileResponse:
        model_id = _model_id(request.path_params["model_id"])
        path = await run_in_threadpool(self.service.model_report, self._caller(request), model_id,
                                       request.path_params["image"])
        # Streamed from a path the service chose; nothing of the request reaches the file system.
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-store"})

    async def publish_model(self, request: Request) -> JSONResponse:
        model_id = _model_id(request.path_params["model_id"])
        credentials = self._caller(request)
        try:
            replace = replace_option(_parse_json(await _read_body(request, MAX_OPTIONS_BODY)))
        except ValueError as e:
            raise GatewayError(400, str(e)) from None
        answer = await run_in_threadpool(self.service.publish_model, credentials, model_id, replace=replace)
        return _json(answer, 202)

    async def unpublish_model(self, request: Request) -> JSONResponse:
        model_id = _model_id(request.path_params["model_id"])
        return _json(await run_in_threadpool(self.service.unpublish_model, self._caller(request), model_id))

    async def webhook(self, request: Request) -> JSONResponse:
        body = await _read_body(request, MAX_WEBHOOK_BODY)
        secret = self.service.settings.webhook_secret
        if not secret:
            raise GatewayError(403, "webhooks are off: set DETR_WEBHOOK_SECRET on the DETR gateway and the same "
                                    "secret in CVAT's webhook")
        if not signature_ok(secret, body, request.headers.get(SIGNATURE_HEADER)):
            logger.warning("Refused a webhook delivery with a missing or wrong %s", SIGNATURE_HEADER)
            raise GatewayError(403, f"missing or wrong {SIGNATURE_HEADER}: give CVAT's webhook the secret in the "
                                    f"gateway's DETR_WEBHOOK_SECRET")
        status, answer = await run_in_threadpool(handle_delivery, self.service, _parse_json(body))
        return _json(answer, status)


async def _gateway_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, GatewayError)
    return _json(error.body(), error.status)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    """Starlette's own 404/405 (no such route), in our JSON shape."""
    assert isinstance(error, HTTPException)
    if error.status_code == 404:
        message = (f"no such path {request.url.path!r}; the DETR API serves {API_PREFIX}/options, /tasks/<id>/summary, "
                   f"/tasks/<id>/train, /projects/<id>/summary, /projects/<id>/train, /jobs, /jobs/<id>, "
                   f"/jobs/<id>/metrics, /jobs/<id>/cancel, /models, /models/<id>, /models/<id>/report/<image>, "
                   f"/models/<id>/publish, /models/<id>/unpublish and /health")
    elif error.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(error.detail)
    return _json({"error": message}, error.status_code)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    logger.error("Unexpected error answering %s %s", request.method, request.url.path, exc_info=error)
    return _json({"error": "unexpected error in the DETR gateway; ask a CVAT admin to check its log"}, 500)


def create_app(settings: GatewaySettings) -> Starlette:
    """The ASGI application; the service (and its preparation threads) lives as long as the app."""
    service = TrainingService(settings)
    endpoints = _Endpoints(service)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        service.close()

    api = [
        Route("/health", endpoints.health, methods=["GET"]),
        Route("/options", endpoints.options, methods=["GET"]),
        Route("/tasks/{task_id}/summary", endpoints.summary, methods=["GET"]),
        Route("/tasks/{task_id}/train", endpoints.train, methods=["POST"]),
        Route("/projects/{project_id}/summary", endpoints.summary, methods=["GET"]),
        Route("/projects/{project_id}/train", endpoints.train, methods=["POST"]),
        Route("/jobs", endpoints.jobs, methods=["GET"]),
        Route("/jobs/{job_id}", endpoints.job, methods=["GET"]),
        Route("/jobs/{job_id}/metrics", endpoints.job_metrics, methods=["GET"]),
        Route("/jobs/{job_id}/cancel", endpoints.cancel, methods=["POST"]),
        Route("/models", endpoints.models, methods=["GET"]),
        Route("/models/{model_id}", endpoints.model, methods=["GET"]),
        Route("/models/{model_id}/report/{image}", endpoints.model_report, methods=["GET"]),
        Route("/models/{model_id}/publish", endpoints.publish_model, methods=["POST"]),
        Route("/models/{model_id}/unpublish", endpoints.unpublish_model, methods=["POST"]),
        Route("/webhooks/cvat", endpoints.webhook, methods=["POST"]),
    ]
    app = Starlette(
        routes=[Mount(API_PREFIX, routes=api)],
        exception_handlers={GatewayError: _gateway_error, HTTPException: _http_error, Exception: _unexpected},
        lifespan=lifespan,
    )
    app.state.service = service
    return app


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="detr-gateway", description="Serve the DETR gateway (the Train DETR plugin's API and CVAT's webhook) "
                                         "under /detr/api. Configuration comes from the environment: see "
                                         "cvat_plugin/gateway/settings.py or the README.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 for every interface, as the gateway's container "
                             "does (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on (default: %(default)s)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                        help="(default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = GatewaySettings.from_env()
    except GatewayConfigError as e:
        print(f"detr-gateway: {e}", file=sys.stderr)
        return 2
    logger.info("DETR gateway: %s", settings_repr(settings))
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level,
                server_header=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
