"""The real DETR gateway, served by uvicorn, on the fake CVAT and the in-process trainer function:
for the gateway's tests, the UI plugin's browser test, and working on the plugin by hand.

    python -m tests.gateway_sandbox --port 8765      # from the repository root

prints the API root and a CVAT session (cookies) for ``npm run e2e -- --base-url ... --cookie ...``
in cvat_plugin/ui. Jobs train a tiny DETR on the CPU in seconds.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional
from unittest import mock

import requests
import uvicorn

from cvat_plugin.cvat.auth import LegacyToken
from cvat_plugin.gateway.app import API_PREFIX, create_app
from cvat_plugin.gateway.settings import GatewaySettings
from cvat_plugin.nuclio.client import NuclioClient
from detr.config import TINY_MODEL
from serverless.trainer import main as trainer_main
from tests.fakes.cvat_server import FakeCvat, Task, User
from tests.fakes.cvat_tasks import add_synthetic_task
from tests.fakes.nuclio import TRAINER_TOKEN, NuclioHttpServer
from tests.fakes.nuclio_dashboard import FakeNuclioDashboard
from tests.fakes.trained_models import base_config

#: DETR_TRAIN_DEFAULTS for jobs of a few seconds per epoch on a CPU (the dialog accepts 128 px and up).
TINY_TRAINING: dict[str, Any] = {
    "model": TINY_MODEL.to_dict(), "batch_size": 4, "image_size": 128, "max_size": 192, "num_workers": 0,
    "device": "cpu", "random_crop": False, "multi_scale": False, "epochs": 1, "weights": "scratch",
}


class UvicornThread:
    """An ASGI app served by a real uvicorn server on an ephemeral port of 127.0.0.1."""

    def __init__(self, app: Any, port: int = 0) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", port))
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]},
                                        name="gateway-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "UvicornThread":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self._socket.close()


@dataclass
class Sandbox:
    cvat: FakeCvat
    alice: User
    """Owns ``task``."""
    task: Task
    trainer: NuclioHttpServer
    gateway: UvicornThread
    settings: GatewaySettings
    service: Optional[User] = None
    """The gateway's service account (a CVAT admin), when the sandbox has one."""
    nuclio: Optional[FakeNuclioDashboard] = None
    """The Nuclio dashboard the trainer publishes to, when the sandbox has one."""

    @property
    def api(self) -> str:
        return self.gateway.url + API_PREFIX

    def login(self, user: User) -> dict[str, str]:
        """A CVAT session of ``user``: the ``sessionid`` and ``csrftoken`` cookies a browser would hold."""
        answer = requests.post(f"{self.cvat.url}/api/auth/login", json={"username": user.username,
                                                                         "password": user.password}, timeout=10)
        answer.raise_for_status()
        return {"sessionid": answer.cookies["sessionid"], "csrftoken": answer.cookies["csrftoken"]}


@contextmanager
def trainer_environment(home: Path, dashboard_url: Optional[str] = None) -> Iterator[None]:
    """What the trainer function reads from the environment at its first request: DETR_HOME, its token, no
    baked weights (weights ``scratch`` and ``previous`` only), and the Nuclio dashboard it publishes to
    (none: no publishing)."""
    with mock.patch.dict(os.environ, {"DETR_HOME": str(home), "DETR_WEIGHTS": str(home / "no-baked-weights"),
                                      "DETR_TRAINER_TOKEN": TRAINER_TOKEN}):
        os.environ.pop("NUCLIO_DASHBOARD_URL", None)
        if dashboard_url:
            os.environ["NUCLIO_DASHBOARD_URL"] = dashboard_url
        yield


@contextmanager
def sandbox(workdir: Path, *, port: int = 0, train_defaults: Optional[dict[str, Any]] = None,
            service_account: bool = False, nuclio: bool = False, **settings: Any) -> Iterator[Sandbox]:
    """Fake CVAT with user alice and her 16-image task, the trainer, and the gateway between them.
    ``service_account``: the gateway gets the API token of a CVAT admin; ``nuclio``: the trainer
    publishes to a fake Nuclio dashboard with the base detector deployed; ``settings`` are more
    ``GatewaySettings`` fields."""
    home = workdir / "detr-home"
    with ExitStack() as stack:
        dashboard = stack.enter_context(FakeNuclioDashboard()) if nuclio else None
        if dashboard is not None:
            NuclioClient(dashboard.url, poll_interval=0.0).deploy(base_config())
        stack.enter_context(trainer_environment(home, dashboard.url if dashboard else None))
        cvat = stack.enter_context(FakeCvat(workdir / "cvat"))
        alice = cvat.add_user("alice", "alice-password")
        task = add_synthetic_task(cvat, alice, workdir, name="shapes", num_images=16)
        service = cvat.add_user("detr-service", "service-password", superuser=True) if service_account else None
        if service is not None:
            settings["service_credentials"] = LegacyToken(service.token)
        trainer = stack.enter_context(NuclioHttpServer(trainer_main.handler))
        stack.callback(lambda: trainer.platform.terminate())  # stops the training thread
        gateway_settings = GatewaySettings(
            cvat_url=cvat.url, trainer_url=trainer.url, home=home,
            trainer_token=settings.pop("trainer_token", TRAINER_TOKEN),
            train_defaults=TINY_TRAINING if train_defaults is None else train_defaults,
            export_poll_interval=0.01, **settings)
        gateway = stack.enter_context(UvicornThread(create_app(gateway_settings), port))
        yield Sandbox(cvat, alice, task, trainer, gateway, gateway_settings, service, dashboard)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765, help="the gateway's port on 127.0.0.1 (default 8765)")
    parser.add_argument("--nuclio", action="store_true", help="publish models to a fake Nuclio dashboard")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="detr-sandbox-") as tmp, \
            sandbox(Path(tmp), port=args.port, nuclio=args.nuclio) as box:
        cookies = box.login(box.alice)
        print(f"gateway API at {box.api}; task {box.task.id} of user alice")
        print(f"npm run e2e -- --base-url {box.api} --task {box.task.id} "
              + " ".join(f"--cookie {name}={value}" for name, value in cookies.items()))
        print("Ctrl-C stops it")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
