"""The cvat-detr command: exit codes and messages for every bad input, export, and local training end to end."""

from __future__ import annotations

import http.server
import io
import json
import re
import socket
import threading

import pytest

from cvat_plugin import cli
from cvat_plugin.cli import exits
from cvat_plugin.cli.options import redact_argv
from tests.fakes.cvat_server import FakeCvat, Shape
from tests.fakes.cvat_tasks import add_shapes_task, add_synthetic_task, make_frames


@pytest.fixture
def alice(fake_cvat):
    return fake_cvat.add_user("alice", "alice-password")


def run(*argv: str, env_token: str | None = None) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = cli.main(["--quiet", *argv], stdout=stdout, stderr=stderr)
    return code, stdout.getvalue(), stderr.getvalue()


def connection(fake: FakeCvat, token: str) -> list[str]:
    return ["--url", fake.url, "--token", token, "--poll-interval", "0.001", "--retries", "1"]


@pytest.fixture(autouse=True)
def no_cvat_environment(monkeypatch, tmp_path):
    for name in ("CVAT_URL", "CVAT_ACCESS_TOKEN", "CVAT_TOKEN", "CVAT_USERNAME", "CVAT_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DETR_HOME", str(tmp_path / "home"))


def test_export_builds_a_training_set(fake_cvat, alice, tmp_path):
    task = add_shapes_task(fake_cvat, alice, num_frames=8)
    code, out, err = run("export", "--task", str(task.id), "--out", str(tmp_path / "ds"),
                         *connection(fake_cvat, alice.token))
    assert code == exits.EXIT_OK, err
    assert f"Training set: {tmp_path / 'ds'}" in out and "car:" in out
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["source"]["task_id"] == task.id and manifest["source"]["server_version"] == "2.42.0"


def test_credentials_from_the_environment(fake_cvat, alice, tmp_path, monkeypatch):
    task = add_shapes_task(fake_cvat, alice, num_frames=4)
    monkeypatch.setenv("CVAT_URL", fake_cvat.url)
    monkeypatch.setenv("CVAT_USERNAME", "alice")
    monkeypatch.setenv("CVAT_PASSWORD", "alice-password")
    code, _, err = run("export", "--task", str(task.id), "--out", str(tmp_path / "ds"), "--poll-interval", "0.001")
    assert code == exits.EXIT_OK, err


@pytest.mark.parametrize("case, code, message", [
    ("no url", exits.EXIT_USAGE, "no CVAT address: pass --url or set CVAT_URL"),
    ("no credentials", exits.EXIT_AUTH, "needs credentials"),
    ("wrong token", exits.EXIT_AUTH, r"did not accept the API token \(CVAT said: Invalid token\.\); check --token"),
    ("no access", exits.EXIT_AUTH, "no permission to read task"),
    ("unknown task", exits.EXIT_NOT_FOUND, "task 999 does not exist"),
    ("server down", exits.EXIT_UNREACHABLE, "cannot reach CVAT"),
    ("server failing", exits.EXIT_UNREACHABLE, "HTTP 503 after 2 attempts"),
    ("export failed", exits.EXIT_EXPORT, "failed to export task .*: worker crashed"),
    ("truncated download", exits.EXIT_EXPORT, "arrived incomplete 2 times"),
    ("empty task", exits.EXIT_DATA, r"task \d+ \('empty'\) has no images: upload images or a video to it"),
    ("labels with no boxes", exits.EXIT_DATA, "has no boxes to train on"),
    ("access token on 2.42", exits.EXIT_AUTH, "This server is CVAT 2.42.0, which has no personal access tokens: "
                                            "use --token"),
    ("not a CVAT server", exits.EXIT_NOT_FOUND, "does not answer as a CVAT server .*check --url / CVAT_URL"),
    ("existing --out", exits.EXIT_USAGE, "already exists and is not empty: choose another folder, or pass "
                                       "--overwrite"),
])
def test_bad_input_gives_a_clear_message_and_exit_code(fake_cvat, alice, tmp_path, other_server, case, code,
                                                       message):
    task = add_shapes_task(fake_cvat, alice, num_frames=4)
    argv = ["export", "--task", str(task.id), "--out", str(tmp_path / "ds")]
    conn = connection(fake_cvat, alice.token)
    if case == "no url":
        conn = []
    elif case == "no credentials":
        conn = ["--url", fake_cvat.url]
    elif case == "wrong token":
        conn = connection(fake_cvat, "0" * 40)
    elif case == "no access":
        conn = connection(fake_cvat, fake_cvat.add_user("mallory", "pw").token)
    elif case == "unknown task":
        argv[2] = "999"
    elif case == "server down":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            conn[1] = f"http://127.0.0.1:{probe.getsockname()[1]}"
    elif case == "server failing":
        fake_cvat.fail("GET", f"/api/tasks/{task.id}", 503, times=10)
    elif case == "export failed":
        task.export_error = "worker crashed"
    elif case == "truncated download":
        fake_cvat.truncate_downloads = 10
    elif case == "empty task":
        argv[2] = str(fake_cvat.add_task("empty", owner=alice, labels=["car"], frames=[]).id)
    elif case == "access token on 2.42":
        conn[2:4] = ["--access-token", alice.access_token]
    elif case == "not a CVAT server":
        conn[1] = other_server
    elif case == "existing --out":
        (tmp_path / "ds").mkdir()
        (tmp_path / "ds" / "notes.txt").write_text("mine")
    elif case == "labels with no boxes":
        frames, _ = make_frames(3, 1)
        argv[2] = str(fake_cvat.add_task("points only", owner=alice, labels=["car"], frames=frames,
                                         shapes=[Shape("points", 0, -1, [1, 1])]).id)
    result, out, err = run(*argv, *conn)
    assert result == code, err
    *logged, last = err.strip().splitlines()
    assert last.startswith("cvat-detr export: ") and all(line.startswith("WARNING: ") for line in logged)
    assert re.search(message, last), err
    assert alice.token not in err and alice.password not in err
    if case == "existing --out":
        assert (tmp_path / "ds" / "notes.txt").read_text() == "mine" and exports(fake_cvat) == 0
    else:
        assert not (tmp_path / "ds").exists()


def exports(fake: FakeCvat) -> int:
    return fake.count("POST", r"/api/tasks/\d+/dataset/export")


@pytest.fixture
def other_server():
    """A web server that is not CVAT: every path is an HTML 404."""
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><h1>Not Found</h1>"
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_usage_errors_exit_2(tmp_path, capsys):
    assert cli.main(["export", "--out", str(tmp_path)]) == exits.EXIT_USAGE  # --task missing
    assert "--task" in capsys.readouterr().err
    code, _, _ = run("train", "--task", "1", "--local", "--url", "http://127.0.0.1:9", "--epochs", "0")
    # argparse refuses the flag with the option schema's message, on sys.stderr
    assert code == exits.EXIT_USAGE
    assert "option 'epochs' must be a whole number from 1 to 10000, got 0" in capsys.readouterr().err
    assert cli.main(["train", "--task", "1"]) == exits.EXIT_USAGE  # --local is required for now


def test_help_documents_exit_codes(capsys):
    assert cli.main(["--help"]) == 0
    assert "exit codes:" in capsys.readouterr().out
    assert cli.main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--lr-backbone" in text and "--model-preset" in text and "CVAT_ACCESS_TOKEN" in text


def test_secret_options_are_redacted():
    assert redact_argv(["--token", "abc", "--access-token=def", "--task", "1"]) == [
        "--token", "***", "--access-token=***", "--task", "1"]


@pytest.mark.slow
def test_train_local_end_to_end(fake_cvat, alice, tmp_path):
    """``cvat-detr train --task N --local`` on a generated task: a tiny model whose labels equal the task's."""
    import torch

    labels = [{"name": "circle", "id": 71}, {"name": "square", "id": 9}, {"name": "triangle", "id": 30}]
    task = add_synthetic_task(fake_cvat, alice, tmp_path, labels=labels, num_images=12, seed=3, image_size=(48, 64))
    task.shapes = [s for s in task.shapes if s.label_id != 30]  # a label without boxes keeps its class
    code, out, err = run(
        "train", "--task", str(task.id), "--local", *connection(fake_cvat, alice.token),
        "--model-preset", "tiny", "--epochs", "2", "--batch-size", "4", "--image-size", "48", "--max-size", "64",
        "--num-workers", "0", "--device", "cpu", "--lr-backbone", "0", "--precision", "fp32",
    )
    assert code == exits.EXIT_OK, err
    home = tmp_path / "home"
    (model_dir,) = (home / "models").iterdir()
    assert model_dir.name == f"task-{task.id}-v1"
    model = torch.load(model_dir / "model.pt", weights_only=True)
    assert model["labels"] == ["circle", "square", "triangle"]

    card = json.loads((model_dir / "model.json").read_text())
    assert card["labels"] == labels
    assert card["task_id"] == task.id and card["source_url"] == fake_cvat.url
    assert (card["id"], card["version"]) == (model_dir.name, 1)
    assert card["dataset_id"].startswith(f"task-{task.id}-") and card["options"]["weights"] == "scratch"
    assert (home / "datasets" / card["dataset_id"] / "labels.json").is_file()
    assert (home / "runs" / card["run_id"] / "checkpoint.pt").is_file()
    assert card["config"]["train"]["epochs"] == 2 and card["config"]["model"]["hidden_dim"] == 128
    assert set(card["metrics"]) >= {"AP", "AP50"}
    assert alice.token not in json.dumps(card) and "***" in card["command"]
    assert f"Model: {model_dir / 'model.pt'}" in out
    assert "small dataset: " in out and "using the small-data recipe" in out
    assert card["config"]["train"]["schedule"] == "cosine" and card["config"]["model"]["backbone_norm"] == "batch"


@pytest.mark.slow
def test_train_a_project_locally_and_publish_it_with_the_projects_labels(fake_cvat, alice, tmp_path, fake_nuclio):
    """``train --project N --local``: the Validation task is the val split, and the model, its card and the
    published detector's spec carry the project's labels."""
    import torch

    from cvat_plugin.nuclio.client import NuclioClient
    from tests.fakes.trained_models import base_config

    project = fake_cvat.add_project("shapes", owner=alice, labels=[{"name": "circle", "id": 40}, "square"])
    add_synthetic_task(fake_cvat, alice, tmp_path, name="a", num_images=8, seed=1, image_size=(48, 64),
                       project=project, subset="Train")
    val = add_synthetic_task(fake_cvat, alice, tmp_path, name="b", num_images=3, seed=2, image_size=(48, 64),
                             project=project, subset="Validation")
    code, out, err = run(
        "train", "--project", str(project.id), "--local", *connection(fake_cvat, alice.token),
        "--model-preset", "tiny", "--epochs", "1", "--batch-size", "4", "--image-size", "48", "--max-size", "64",
        "--num-workers", "0", "--device", "cpu", "--lr-backbone", "0", "--precision", "fp32",
    )
    assert code == exits.EXIT_OK, err
    (model_dir,) = (tmp_path / "home" / "models").iterdir()
    assert model_dir.name == f"project-{project.id}-v1"
    card = json.loads((model_dir / "model.json").read_text())
    assert card["labels"] == [{"id": 40, "name": "circle"}, {"id": project.labels[1].id, "name": "square"}]
    assert (card["project_id"], card["project_name"], card["task_id"]) == (project.id, "shapes", None)
    assert torch.load(model_dir / "model.pt", weights_only=True)["labels"] == ["circle", "square"]
    dataset = tmp_path / "home" / "datasets" / card["dataset_id"]
    val_images = json.loads((dataset / "annotations" / "val.json").read_text())["images"]
    assert sorted(image["file_name"] for image in val_images) == sorted(
        f"task_{val.id}/Validation/{frame.name}" for frame in val.frames)

    NuclioClient(fake_nuclio.url, poll_interval=0.0).deploy(base_config())
    code, out, err = run("publish", model_dir.name, "--nuclio-url", fake_nuclio.url, "--poll-interval", "0")
    assert code == exits.EXIT_OK, err
    (function,) = [f.config for f in fake_nuclio.functions.values() if f.name.startswith("detr-project")]
    annotations = function["metadata"]["annotations"]
    assert function["metadata"]["name"] == f"detr-project-{project.id}-v1" and annotations["version"] == "1"
    assert [label["name"] for label in json.loads(annotations["spec"])] == ["circle", "square"]
    assert "DETR · shapes v1 ·" in annotations["name"]
    assert f"CVAT project {project.id}" in function["spec"]["description"]


def test_export_a_project(fake_cvat, alice, tmp_path, capsys):
    project = fake_cvat.add_project("streets", owner=alice, labels=["car", "person"])
    add_shapes_task(fake_cvat, alice, num_frames=4, project=project, subset="Train")
    add_shapes_task(fake_cvat, alice, num_frames=2, project=project, subset="Validation", seed=1)
    add_shapes_task(fake_cvat, alice, num_frames=2, project=project, subset="Test", seed=2)
    code, out, err = run("export", "--project", str(project.id), "--out", str(tmp_path / "ds"),
                         *connection(fake_cvat, alice.token))
    assert code == exits.EXIT_OK, err
    assert f"project {project.id}: 3 task(s); split by subsets, 2 test images held out" in out
    assert "images: 4 train, 2 val" in out
    code, _, _ = run("export", "--task", "1", "--project", str(project.id), "--out", str(tmp_path / "x"))
    assert code == exits.EXIT_USAGE and "not allowed with argument" in capsys.readouterr().err
