"""Dependencies run one way (``serverless`` -> ``cvat_plugin`` -> ``detr``), and the gateway and the
``cvat-detr`` commands that need no model start without torch: its import costs seconds and the
gateway's image has none. Each check runs in a fresh interpreter, so that what this test process
imported cannot hide an import."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.nuclio import TRAINER_TOKEN

REPO = Path(__file__).resolve().parents[1]

#: Python run in a fresh interpreter; the last line prints the heavy modules it loaded.
STARTS = {
    "import the gateway": "import cvat_plugin.gateway.app",
    "import the CLI": "import cvat_plugin.cli",
    "cvat-detr models": "from cvat_plugin.cli.app import main; assert main(['models', '--home', {home!r}]) == 0",
    # An unreachable trainer: the command starts, fails with exit 5, and loads no engine on its way out.
    "cvat-detr status": "from cvat_plugin.cli.app import main; "
                        "assert main(['status', '--trainer', 'http://127.0.0.1:9', 'job-1']) == 5",
    "cvat-detr cancel": "from cvat_plugin.cli.app import main; "
                        "assert main(['cancel', '--trainer', 'http://127.0.0.1:9', 'job-1']) == 5",
    # A bad option is refused by the schema, which needs no torch either.
    "cvat-detr train --epochs 0": "from cvat_plugin.cli.app import main; "
                                  "assert main(['train', '--task', '1', '--local', '--home', {home!r}, "
                                  "'--epochs', '0']) == 2",
}


@pytest.mark.parametrize("name", STARTS)
def test_starts_without_torch(name, tmp_path):
    code = STARTS[name].format(home=str(tmp_path)) + (
        "\nimport sys, json; print(json.dumps(sorted(m for m in ('torch', 'torchvision') if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path),
                                 "DETR_TRAINER_TOKEN": TRAINER_TOKEN})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == [], f"{name} imported torch"


def test_the_check_sees_torch_when_it_is_imported():
    """The check above can fail: a module that loads torch is seen."""
    code = "import detr.checkpoint, sys; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert result.stdout.strip() == "True", result.stderr


def imported_modules(path: Path) -> set[str]:
    """Every absolute module a file imports, at the top or inside functions."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def test_nothing_in_cvat_plugin_imports_serverless():
    files = sorted((REPO / "cvat_plugin").rglob("*.py"))
    assert len(files) > 30
    offending = {str(path.relative_to(REPO)): sorted(m for m in imported_modules(path) if m.split(".")[0] ==
                                                     "serverless")
                 for path in files}
    assert {path: modules for path, modules in offending.items() if modules} == {}


def test_the_ast_walk_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from serverless.trainer import main\n    import serverless.detector\n")
    assert imported_modules(module) == {"serverless.trainer", "serverless.detector"}
