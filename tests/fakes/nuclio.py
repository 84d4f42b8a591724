"""Nuclio stand-ins: the SDK's test platform with termination hooks, and handlers over real HTTP.

``Platform`` is ``nuclio_sdk.test.Platform`` plus ``set_termination_callback`` and the
``_on_signal`` the Python wrapper calls on SIGUSR1, taken from the real ``nuclio_sdk.Platform``.

``NuclioHttpServer`` serves a handler the way a Nuclio HTTP trigger and processor do: the
request becomes a ``nuclio_sdk.Event`` (the body JSON-decoded only for exactly
``application/json``, query arguments in ``fields``), the handler runs through
``nuclio_sdk.test.Platform`` (so its ``init_context`` runs once), its return value is
encoded by the SDK's own ``Response.from_entrypoint_output``, and an exception becomes
a text/plain 500, as the Python wrapper does. One event at a time, like one worker.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

import nuclio_sdk
import nuclio_sdk.json_encoder
import nuclio_sdk.test

#: The trainer's shared token in tests (``DETR_TRAINER_TOKEN``, set for every test by conftest).
TRAINER_TOKEN = "test-trainer-token-0123456789abcdef"
#: The headers of a request that carries it.
TRAINER_AUTH = {"Authorization": f"Bearer {TRAINER_TOKEN}"}


class Platform(nuclio_sdk.test.Platform):
    set_termination_callback = nuclio_sdk.Platform.set_termination_callback
    set_drain_callback = nuclio_sdk.Platform.set_drain_callback
    _on_signal = nuclio_sdk.Platform._on_signal

    def __init__(self) -> None:
        super().__init__()
        self._termination_callback = None
        self._drain_callback = None

    def terminate(self) -> Any:
        """What the wrapper does on SIGUSR1."""
        return self._on_signal(callback_type="termination")


def make_event(method: str = "POST", path: str = "/", body: Any = None, *, fields: dict | None = None,
               content_type: str = "application/json", headers: dict | None = None) -> nuclio_sdk.Event:
    """An HTTP event as the wrapper builds it (a dict body stands for decoded JSON)."""
    return nuclio_sdk.Event(body=body, content_type=content_type, fields=fields or {}, headers=headers or {},
                            method=method, path=path, trigger=nuclio_sdk.TriggerInfo(kind="http", name="http"))


def to_wire(output: Any) -> dict[str, Any]:
    """What the Python wrapper sends to the processor for a handler's return value."""
    return nuclio_sdk.Response.from_entrypoint_output(nuclio_sdk.json_encoder.Encoder().encode, output)


def wire_body(wire: dict[str, Any]) -> bytes:
    body = wire["body"]
    return base64.b64decode(body) if wire.get("body_encoding") == "base64" else str(body).encode("utf-8")


class NuclioHttpServer:
    def __init__(self, handler: Callable[[Any, Any], Any], platform: Any = None):
        self.handler = handler
        self.platform = platform or Platform()
        self.requests: list[tuple[str, str]] = []
        self._server = HTTPServer(("127.0.0.1", 0), self._request_class())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> NuclioHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _request_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Request(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                url = urlsplit(self.path)
                fake.requests.append((self.command, url.path))
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                content_type = self.headers.get("Content-Type", "")
                body: Any = raw
                if content_type == "application/json":
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        pass
                event = make_event(self.command, url.path, body, fields=dict(parse_qsl(url.query)),
                                   content_type=content_type, headers=dict(self.headers.items()))
                try:
                    wire = to_wire(fake.platform.call_handler(fake.handler, event))
                except Exception as e:
                    wire = {"status_code": 500, "content_type": "text/plain", "headers": {},
                            "body": f"Exception caught in handler - \"{e}\"", "body_encoding": "text"}
                payload = wire_body(wire)
                self.send_response(wire["status_code"])
                self.send_header("Content-Type", wire["content_type"])
                self.send_header("Content-Length", str(len(payload)))
                for name, value in wire["headers"].items():
                    if isinstance(value, (str, int)):
                        self.send_header(name, str(value))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        return Request
