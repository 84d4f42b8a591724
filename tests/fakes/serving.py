"""What the fake HTTP servers share: serving on 127.0.0.1 from a thread, and server timestamps."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional


def utc_now() -> str:
    """An ISO 8601 UTC timestamp as Django REST framework writes it (``...Z``)."""
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class ServedFake:
    """A fake answered by ``handler_class`` (which finds the fake as ``self.server.fake``) on a free
    port of 127.0.0.1. Start it with ``start()`` or a ``with`` block."""

    handler_class: type[BaseHTTPRequestHandler]
    thread_name = "fake-server"
    _httpd: Optional[ThreadingHTTPServer] = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start the fake server first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self.handler_class)
        self._httpd.daemon_threads = True
        self._httpd.fake = self  # type: ignore[attr-defined]
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=self.thread_name,
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
