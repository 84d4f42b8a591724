"""cvat-detr publish / unpublish / models against the fake Nuclio dashboard: output and exit codes."""

from __future__ import annotations

import io
import json
import socket

import pytest

from cvat_plugin import cli
from cvat_plugin.cli import exits
from cvat_plugin.nuclio.client import NuclioClient
from tests.fakes.trained_models import add_model, base_config

LABELS = ["car", "person", "bike"]


@pytest.fixture(autouse=True)
def environment(monkeypatch, tmp_path):
    for name in ("NUCLIO_DASHBOARD_URL", "NUCLIO_NAMESPACE", "DETR_BASE_FUNCTION", "DETR_PUBLISH_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DETR_HOME", str(tmp_path / "home"))


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture
def dashboard(fake_nuclio, monkeypatch):
    NuclioClient(fake_nuclio.url, poll_interval=0.0).deploy(base_config())
    monkeypatch.setenv("NUCLIO_DASHBOARD_URL", fake_nuclio.url)
    return fake_nuclio


def run(*argv: str) -> tuple[int, str, str]:
    """``cvat-detr ARGV`` with quick polls and no retries (each command takes the Nuclio options)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    code = cli.main(["--quiet", *argv, "--poll-interval", "0", "--retries", "0"], stdout=stdout, stderr=stderr)
    return code, stdout.getvalue(), stderr.getvalue()


def test_publish_list_update_and_unpublish(dashboard, home):
    add_model(home, "task-7-v1", LABELS)
    add_model(home, "task-7-v2", LABELS, version=2, ap=0.5)
    add_model(home, "task-8-v1", ["tree"], task_id=8, task_name="forest")

    code, out, err = run("models")
    assert code == exits.EXIT_OK, err
    lines = out.splitlines()
    assert lines[0].split() == ["MODEL", "TASK", "AP", "AP50", "LABELS", "CREATED", "FUNCTION"]
    assert [line.split()[0] for line in lines[1:]] == ["task-8-v1", "task-7-v2", "task-7-v1"]  # newest first
    assert lines[3].split()[1:5] == ["7", "cars", "0.412", "0.613"] and lines[3].split()[-1] == "-"

    code, out, err = run("publish", "task-7-v1")
    assert code == exits.EXIT_OK, err
    assert out.startswith('Published detr-task-7-v1 (cpu): "DETR · cars v1 · mAP 0.412" serves model task-7-v1')
    code, out, _ = run("publish", "run-task-7-v2", "--device", "gpu")
    assert code == exits.EXIT_OK and out.startswith("Published detr-task-7-v2 (gpu)")
    code, out, _ = run("publish", str(home / "models" / "task-7-v1"))
    assert code == exits.EXIT_OK and out.startswith("Updated detr-task-7-v1 (cpu)")

    code, out, _ = run("models", "--task", "7", "--json")
    rows = {row["id"]: row for row in json.loads(out)}
    assert sorted(rows) == ["task-7-v1", "task-7-v2"]
    assert rows["task-7-v1"]["function"] == "detr-task-7-v1" and rows["task-7-v1"]["state"] == "ready"
    assert rows["task-7-v1"]["labels"] == LABELS and rows["task-7-v1"]["metrics"]["AP"] == pytest.approx(0.4125)
    assert rows["task-7-v2"]["task_name"] == "cars" and rows["task-7-v2"]["version"] == 2

    code, out, err = run("unpublish", "detr-task-7-v1")
    assert code == exits.EXIT_OK, err
    assert out == "Removed function detr-task-7-v1 (model task-7-v1)\n"
    code, out, _ = run("models", "--json")
    functions = {row["id"]: row["function"] for row in json.loads(out)}
    assert functions == {"task-8-v1": None, "task-7-v2": "detr-task-7-v2", "task-7-v1": None}


def test_models_reports_functions_missing_on_the_dashboard_and_models_stored_elsewhere(dashboard, home, tmp_path):
    add_model(home, "task-7-v1", LABELS)
    add_model(tmp_path / "other-home", "task-9-v1", LABELS, task_id=9)
    assert run("publish", "task-7-v1")[0] == exits.EXIT_OK
    assert run("publish", "task-9-v1", "--home", str(tmp_path / "other-home"))[0] == exits.EXIT_OK
    NuclioClient(dashboard.url).delete_function("detr-task-7-v1")

    code, out, _ = run("models")
    assert code == exits.EXIT_OK
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert rows["task-7-v1"].endswith("detr-task-7-v1 (missing on the dashboard)")
    assert rows["task-9-v1"].endswith("detr-task-9-v1 (model not in this DETR_HOME)")


def test_models_without_a_dashboard_lists_the_cards(home):
    add_model(home, "task-7-v1", LABELS)
    code, out, _ = run("models")
    assert code == exits.EXIT_OK and "task-7-v1" in out
    code, out, _ = run("models", "--task", "99")
    assert code == exits.EXIT_OK and out.startswith("No models in ")


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("case, argv, code, message", [
    ("no dashboard", ("publish", "task-7-v1"), exits.EXIT_USAGE, "no Nuclio dashboard address: pass --nuclio-url"),
    ("unknown model", ("publish", "task-7-v9", "--nuclio-url", "http://127.0.0.1:9"), exits.EXIT_NOT_FOUND,
     "no model, run or job 'task-7-v9'"),
    ("bad device", ("publish", "task-7-v1", "--device", "tpu"), exits.EXIT_USAGE, "invalid choice: 'tpu'"),
    ("unreachable", ("publish", "task-7-v1", "--nuclio-url", "CLOSED"), exits.EXIT_UNREACHABLE,
     "cannot reach the Nuclio dashboard"),
    ("no base function", ("publish", "task-7-v1", "--nuclio-url", "EMPTY"), exits.EXIT_PUBLISH,
     "'detr-r50-coco' is not deployed"),
    ("missing function", ("unpublish", "detr-task-7-v9", "--nuclio-url", "EMPTY"), exits.EXIT_NOT_FOUND,
     "not found in namespace 'nuclio'"),
    ("not ours", ("unpublish", "detr-r50-coco"), exits.EXIT_PUBLISH, "not published by cvat-detr"),
])
def test_errors_have_exit_codes_and_messages(dashboard, home, capsys, monkeypatch, case, argv, code, message):
    add_model(home, "task-7-v1", LABELS)
    if case == "no dashboard":
        monkeypatch.delenv("NUCLIO_DASHBOARD_URL")
    if "EMPTY" in argv:
        dashboard.functions.clear()
    argv = tuple({"CLOSED": closed_port_url(), "EMPTY": dashboard.url}.get(arg, arg) for arg in argv)
    got, _, err = run(*argv)
    err += capsys.readouterr().err  # argparse prints its own usage errors
    assert got == code, err
    assert message in err


def test_models_show_gives_one_models_training_metrics_per_class_ap_and_report(home):
    folder = add_model(home, "task-7-v2", LABELS, version=2)
    card = json.loads((folder / "model.json").read_text())
    card.update(epochs_done=20, options={"weights": "scratch"}, config={"model": {"architecture": "fast",
                                                                                  "backbone": "resnet18"}},
                metrics={**card["metrics"], "AP75": 0.4, "epoch": 18, "per_class": {
                    "car": {"AP": 0.5, "AP50": 0.8, "boxes": 120}, "person": {"AP": 0.325, "AP50": 0.5, "boxes": 40},
                    "bike": {"AP": None, "AP50": None, "boxes": 0}}})
    (folder / "model.json").write_text(json.dumps(card))
    (folder / "report").mkdir()
    (folder / "report" / "samples.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    stdout, stderr = io.StringIO(), io.StringIO()
    assert cli.main(["models", "show", "task-7-v2"], stdout=stdout, stderr=stderr) == exits.EXIT_OK, stderr.getvalue()
    lines = stdout.getvalue().splitlines()
    assert lines[0].startswith('Model task-7-v2 (task 7 "cars", version 2), created ')
    assert lines[1] == "  trained: from scratch, fast (resnet18), 20 epochs (best 18), images -"
    assert lines[2] == "  metrics: AP 0.412  AP50 0.613  AP75 0.400  threshold 0.500"
    assert lines[3] == "  published: no"
    assert [line.split() for line in lines[5:9]] == [["LABEL", "AP", "AP50", "BOXES"], ["car", "0.500", "0.800", "120"],
                                                    ["person", "0.325", "0.500", "40"], ["bike", "-", "-", "0"]]
    assert lines[-1].split() == ["samples", str(folder / "report" / "samples.png")]

    code, out, _ = run("models", "show", "run-task-7-v2", "--json")  # found by the run that trained it too
    view = json.loads(out)
    assert code == exits.EXIT_OK and view["id"] == "task-7-v2" and view["report"] == ["samples"]
    assert run("models", "show")[0] == exits.EXIT_USAGE
    code, _, err = run("models", "task-7-v2")
    assert code == exits.EXIT_USAGE and "cvat-detr models show task-7-v2" in err
    assert run("models", "show", "task-7-v9")[0] == exits.EXIT_NOT_FOUND


def test_models_of_a_project(home):
    add_model(home, "task-7-v1", LABELS)
    folder = add_model(home, "project-5-v1", LABELS, task_id=None, task_name=None)
    card = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**card, "project_id": 5, "project_name": "streets"}))

    code, out, err = run("models", "--project", "5")
    assert code == exits.EXIT_OK, err
    (header, row) = out.splitlines()
    assert row.split()[:4] == ["project-5-v1", "project", "5", "streets"]
    code, out, _ = run("models", "--task", "7", "--json")
    assert [model["id"] for model in json.loads(out)] == ["task-7-v1"]
