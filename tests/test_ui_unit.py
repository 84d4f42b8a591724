"""The UI plugin's own checks, run from pytest so that the README's one test command covers them:
its vitest suite (registration, dialog, progress, polling, gateway client) and a TypeScript type
check (CVAT's UI build compiles plugins without one)."""

from ui_node import require_node_modules, run


def test_ui_unit_tests_pass() -> None:
    require_node_modules()
    result = run(["npm", "test"], timeout=600)
    assert result.returncode == 0, f"`npm test` in cvat_plugin/ui failed:\n{result.stdout[-6000:]}"


def test_ui_type_checks() -> None:
    require_node_modules()
    result = run(["npm", "run", "typecheck"], timeout=300)
    assert result.returncode == 0, f"`npm run typecheck` in cvat_plugin/ui failed:\n{result.stdout[-6000:]}"
