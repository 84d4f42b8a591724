"""The UI plugin in headless Chromium against the real gateway, on the fake CVAT, the in-process
trainer and a fake Nuclio dashboard: Actions -> Train DETR, start, close and reopen while it trains,
watch the job succeed with its curves, open the Models tab and its sample predictions, unpublish
and publish the version, then the older <Menu.Item> contract.

e2e/run.mjs serves the harness page and proxies /detr/api to the gateway (the page's origin, as
CVAT's reverse proxy would); the browser holds alice's CVAT session, which the gateway forwards
to CVAT. Screenshots (train-detr.png shows the finished job) land in $DETR_UI_ARTIFACTS, default
cvat_plugin/ui/e2e/artifacts/ (ignored by git; CI keeps it as an artifact).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import requests
from ui_node import UI_DIR, require_node_modules, run

from tests.gateway_sandbox import sandbox

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("restore_logging")]

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_train_detr_end_to_end_in_chromium(tmp_path: Path) -> None:
    require_node_modules()
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (Debian) or set CHROMIUM_PATH")
    artifacts = Path(os.environ.get("DETR_UI_ARTIFACTS", UI_DIR / "e2e" / "artifacts"))
    started = time.time()

    with sandbox(tmp_path, nuclio=True) as box:
        session = box.login(box.alice)
        command = ["node", "e2e/run.mjs", "--base-url", box.api, "--task", str(box.task.id), "--epochs", "2",
                   "--timeout-s", "120", "--publish"]
        for name, value in session.items():
            command += ["--cookie", f"{name}={value}"]
        result = run(command, timeout=300,
                     env={**os.environ, "DETR_UI_ARTIFACTS": str(artifacts), "CHROMIUM_PATH": CHROMIUM})
        jobs = requests.get(f"{box.api}/jobs", params={"task": box.task.id}, cookies=session, timeout=30).json()

    assert result.returncode == 0, f"e2e/run.mjs failed:\n{result.stdout[-6000:]}"
    screenshot = artifacts / "train-detr.png"
    assert screenshot.read_bytes()[:8] == PNG_SIGNATURE
    assert screenshot.stat().st_mtime >= started
    assert "reopened and resumed following the job" in result.stdout
    assert "curves of the finished run: 2 epochs" in result.stdout
    assert "model view: samples image loaded" in result.stdout
    assert "model view: unpublished" in result.stdout and "model view: published again" in result.stdout
    assert (artifacts / "model-view.png").read_bytes()[:8] == PNG_SIGNATURE
    # CVAT accepted the forwarded session throughout, and exported the task once, as alice.
    assert [(method, path, status) for method, path, status in box.cvat.log if status in (401, 403)] == []
    assert [request.owner.username for request in box.cvat.requests.values()] == ["alice"]
    assert [(job["state"], job["epochs"]) for job in jobs["jobs"]] == [("succeeded", 2)]
