"""The DETR gateway: the small HTTP service behind CVAT's reverse proxy that the Train DETR UI
plugin calls same-origin, and that receives CVAT's webhook.

API, under ``/detr/api`` (JSON in and out; every error is ``{"error": "<what happened, what to do>"}``)::

    GET  /health                 {"status", "version", "trainer", "preparing", "webhooks", "auto_retrain"}
    GET  /tasks/{id}/summary     {"task": {"id", "name", "frames"}, "labels": [{"id", "name", "boxes"}],
                                  "annotated_frames", "warnings", "defaults", "weights_options"}
    POST /tasks/{id}/train       {"epochs", "image_size", "weights", "val_fraction", "publish"} (each optional)
                                 -> 202 job in state "preparing"; 409 {"error", "job"} while the task trains
    GET  /jobs?task={id}         {"jobs": [job, ...]}, newest first
    GET  /jobs/{id}              job (a submitted preparation answers with the trainer's job)
    POST /jobs/{id}/cancel       job
    GET  /models?task={id}       {"models": [{"id", "task_id", "version", "created", "metrics", "labels", "function"}]}
    POST /webhooks/cvat          CVAT's webhook, signed (``cvat_plugin.gateway_webhooks``)

A job is the trainer's Job object (``serverless/trainer/jobs.py``); before it reaches the trainer
the gateway answers for it with ``state`` ``preparing`` (``cvat_plugin.gateway_preparations``).

Every request except ``/health`` and the webhook is authorized by CVAT: the caller's credentials
(its session cookie, or its ``Authorization`` header) are forwarded to ``GET /api/tasks/{id}``,
and the gateway acts only if CVAT lets the caller see the task; the export runs as the caller.
CVAT's 401/403/404 pass through. POSTs made with a session must carry ``X-CSRFToken``. The
gateway stores no user credential and logs none. Configuration: ``cvat_plugin.gateway_settings``.

Run it with ``detr-gateway [--host 0.0.0.0] [--port 8000]`` or ``python -m cvat_plugin.gateway``.
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
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError("the DETR gateway needs its extra: pip install 'cvat-detr[gateway]'") from e

from cvat_plugin.auth import Credentials
from cvat_plugin.gateway_auth import caller_credentials, check_csrf
from cvat_plugin.gateway_errors import GatewayError
from cvat_plugin.gateway_jobs import TrainingService
from cvat_plugin.gateway_settings import GatewayConfigError, GatewaySettings, OptionError, check_options, settings_repr
from cvat_plugin.gateway_webhooks import SIGNATURE_HEADER, handle_delivery, signature_ok

logger = logging.getLogger(__name__)

API_PREFIX = "/detr/api"
DEFAULT_PORT = 8000
#: Ids as CVAT and the trainer make them; anything else (dots, slashes, encoded or not) is refused.
TASK_ID = re.compile(r"[1-9][0-9]{0,17}")
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,79}")
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


def _task_query(request: Request) -> int:
    values = request.query_params.getlist("task")
    if len(values) != 1:
        raise GatewayError(400, "pass the task as ?task=<task id>, once")
    return _task_id(values[0], "task query parameter")


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

    async def summary(self, request: Request) -> JSONResponse:
        task_id = _task_id(request.path_params["task_id"])
        return _json(await run_in_threadpool(self.service.summary, self._caller(request), task_id))

    async def train(self, request: Request) -> JSONResponse:
        task_id = _task_id(request.path_params["task_id"])
        credentials = self._caller(request)
        options = _parse_json(await _read_body(request, MAX_OPTIONS_BODY))
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise GatewayError(400, 'the body must be a JSON object of training options such as {"epochs": 50}')
        try:
            options = check_options(options)
        except OptionError as e:
            raise GatewayError(400, str(e)) from None
        return _json(await run_in_threadpool(self.service.start, credentials, task_id, options), 202)

    async def jobs(self, request: Request) -> JSONResponse:
        task_id = _task_query(request)
        return _json({"jobs": await run_in_threadpool(self.service.jobs, self._caller(request), task_id)})

    async def job(self, request: Request) -> JSONResponse:
        job_id = _job_id(request.path_params["job_id"])
        return _json(await run_in_threadpool(self.service.job, self._caller(request), job_id))

    async def cancel(self, request: Request) -> JSONResponse:
        job_id = _job_id(request.path_params["job_id"])
        return _json(await run_in_threadpool(self.service.cancel, self._caller(request), job_id))

    async def models(self, request: Request) -> JSONResponse:
        task_id = _task_query(request)
        return _json({"models": await run_in_threadpool(self.service.task_models, self._caller(request), task_id)})

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
        message = (f"no such path {request.url.path!r}; the DETR API serves {API_PREFIX}/tasks/<id>/summary, "
                   f"/tasks/<id>/train, /jobs, /jobs/<id>, /jobs/<id>/cancel, /models and /health")
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
        Route("/tasks/{task_id}/summary", endpoints.summary, methods=["GET"]),
        Route("/tasks/{task_id}/train", endpoints.train, methods=["POST"]),
        Route("/jobs", endpoints.jobs, methods=["GET"]),
        Route("/jobs/{job_id}", endpoints.job, methods=["GET"]),
        Route("/jobs/{job_id}/cancel", endpoints.cancel, methods=["POST"]),
        Route("/models", endpoints.models, methods=["GET"]),
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
                                         "cvat_plugin/gateway_settings.py or the README.")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s)")
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
