"""The UI plugin in headless Chromium against a gateway: Actions -> Train DETR, start, close and
reopen while it runs, watch the job succeed, then the older <Menu.Item> contract.

The gateway here is tests/ui_gateway_stub.py; e2e/run.mjs serves the harness page and proxies
/detr/api to it (the page's origin, as CVAT's reverse proxy would). Screenshots land in
$DETR_UI_ARTIFACTS, default cvat_plugin/ui/e2e/artifacts/.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from ui_gateway_stub import StubGateway
from ui_node import UI_DIR, require_node_modules, run

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_train_detr_end_to_end_in_chromium() -> None:
    require_node_modules()
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (Debian) or set CHROMIUM_PATH")
    artifacts = Path(os.environ.get("DETR_UI_ARTIFACTS", UI_DIR / "e2e" / "artifacts"))
    started = time.time()

    with StubGateway(queue_s=1.0, epoch_s=1.5) as gateway:
        command = ["node", "e2e/run.mjs", "--base-url", gateway.api_url, "--task", "42", "--epochs", "3",
                   "--timeout-s", "120"]
        result = run(
            command,
            timeout=420,
            env={**os.environ, "DETR_UI_ARTIFACTS": str(artifacts), "CHROMIUM_PATH": CHROMIUM},
        )

    assert result.returncode == 0, f"e2e/run.mjs failed:\n{result.stdout[-6000:]}"
    screenshot = artifacts / "train-detr.png"
    assert screenshot.read_bytes()[:8] == PNG_SIGNATURE
    assert screenshot.stat().st_mtime >= started
    assert "reopened and resumed following the job" in result.stdout
    # The browser held a session and sent the CSRF token: the stub answers 401/403 otherwise.
    assert [status for _, _, status in gateway.requests if status in (401, 403)] == []
    assert [(method, path, status) for method, path, status in gateway.requests if method == "POST"] == [
        ("POST", "/detr/api/tasks/42/train", 202),
    ]
    assert [job.snapshot()["state"] for job in gateway.jobs.values()] == ["succeeded"]
