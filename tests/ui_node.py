"""Locating and running the UI plugin's Node toolchain (cvat_plugin/ui) from pytest."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UI_DIR = Path(__file__).resolve().parents[1] / "cvat_plugin" / "ui"


def require_node_modules() -> None:
    """Skips without npm; fails when npm is there but the plugin's packages were not installed."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("npm and node are not installed; the UI plugin's tests need Node.js >= 20.19 with npm")
    if not (UI_DIR / "node_modules" / ".package-lock.json").is_file():
        pytest.fail(f"the UI plugin's packages are not installed: run `npm ci` in {UI_DIR} (.ci/run does)")


def run(command: list[str], *, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Runs a command in the plugin folder; stdout and stderr together, for failure messages."""
    return subprocess.run(command, cwd=UI_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout, check=False)
