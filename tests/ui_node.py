"""Locating and running the UI plugin's Node toolchain (cvat_plugin/ui) from pytest."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import pytest

UI_DIR = Path(__file__).resolve().parents[1] / "cvat_plugin" / "ui"


def require_node_modules() -> None:
    """Skips without npm; installs the plugin's packages (``npm ci``, once) when they are missing, and
    skips, saying why, when that cannot be done (no registry)."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("npm and node are not installed; the UI plugin's tests need Node.js >= 20.19 with npm")
    problem = _install_packages()
    if problem:
        pytest.skip(problem)


@functools.cache
def _install_packages() -> str:
    """``npm ci`` in the plugin folder unless its packages are there; an empty string when they are."""
    if (UI_DIR / "node_modules" / ".package-lock.json").is_file():
        return ""
    print(f"\nthe UI plugin's packages are not installed: running `npm ci` in {UI_DIR} (about a minute)")
    try:
        result = run(["npm", "ci", "--no-audit", "--no-fund"], timeout=900)
    except subprocess.TimeoutExpired:
        return f"`npm ci` in {UI_DIR} took over 15 minutes; run it by hand, then the UI tests again"
    if result.returncode != 0:
        return f"`npm ci` in {UI_DIR} failed (is the npm registry reachable?):\n{result.stdout[-2000:]}"
    return ""


def run(command: list[str], *, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Runs a command in the plugin folder; stdout and stderr together, for failure messages."""
    return subprocess.run(command, cwd=UI_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout, check=False)
