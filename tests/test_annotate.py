"""cvat-detr annotate: through CVAT's lambda API (fake CVAT + fake Nuclio dashboard), and --local
through cvat-sdk."""

from __future__ import annotations

import io
import json
import os
import sys

import pytest

from cvat_plugin import cli
from cvat_plugin.cli import exits
from cvat_plugin.cvat.auth import LegacyToken
from cvat_plugin.cvat.client import CvatClient
from cvat_plugin.nuclio.client import NuclioClient
from tests.fakes.cvat_tasks import make_frames
from tests.fakes.trained_models import add_model

#: What the fixed function detects on every frame: a task label, a label the task lacks, one outside its spec.
DETECTIONS = [
    {"label": "person", "points": [1.0, 2.0, 30.0, 40.0], "type": "rectangle", "confidence": "0.9"},
    {"label": "bike", "points": [5.0, 5.0, 10.0, 10.0], "type": "rectangle", "confidence": "0.8"},
]


def detections_handler(context, event):
    """A detector function with a fixed answer ($DETECTIONS), or an error when $FAIL is set."""
    if os.environ.get("FAIL"):
        return context.Response(body=json.dumps({"error": os.environ["FAIL"]}), headers={},
                                content_type="application/json", status_code=400)
    return context.Response(body=os.environ["DETECTIONS"], headers={}, content_type="application/json",
                            status_code=200)


def fixed_function(name: str = "detr-fixed", *, labels=("person", "bike"), fail: str = "") -> dict:
    env = [{"name": "DETECTIONS", "value": json.dumps(DETECTIONS)}]
    if fail:
        env.append({"name": "FAIL", "value": fail})
    spec = json.dumps([{"id": i, "name": n, "type": "rectangle"} for i, n in enumerate(labels)])
    return {"metadata": {"name": name, "annotations": {"type": "detector", "name": "Fixed", "spec": spec,
                                                       "cvat-detr/model-id": "task-7-v1"}},
            "spec": {"description": "fixed detections", "runtime": "python:3.10", "image": "fixed:latest",
                     "handler": "tests.test_annotate:detections_handler", "env": env}}


@pytest.fixture
def alice(fake_cvat):
    return fake_cvat.add_user("alice", "alice-password")


@pytest.fixture
def task(fake_cvat, alice):
    frames, shapes = make_frames(4, 3, size=(64, 48))
    return fake_cvat.add_task("street", owner=alice, labels=["tree", "person", "car"], frames=frames, shapes=shapes,
                              deleted_frames=(2,))


@pytest.fixture
def serverless(fake_cvat, fake_nuclio):
    fake_cvat.connect_nuclio(fake_nuclio.url)
    nuclio = NuclioClient(fake_nuclio.url, poll_interval=0.0)
    nuclio.deploy(fixed_function())
    return nuclio


@pytest.fixture(autouse=True)
def environment(monkeypatch, tmp_path):
    for name in ("CVAT_URL", "CVAT_ACCESS_TOKEN", "CVAT_TOKEN", "CVAT_USERNAME", "CVAT_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DETR_HOME", str(tmp_path / "home"))


def annotate(fake_cvat, alice, *argv: str, quiet: bool = True) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = cli.main([*(["--quiet"] if quiet else []), "annotate", *argv, "--url", fake_cvat.url, "--token", alice.token,
                     "--poll-interval", "0", "--retries", "0"], stdout=stdout, stderr=stderr)
    return code, stdout.getvalue(), stderr.getvalue()


def label_id(task, name: str) -> int:
    return next(label.id for label in task.labels if label.name == name)


def test_annotate_through_cvat_saves_the_task_labels_only(fake_cvat, fake_nuclio, alice, task, serverless):
    manual = len(task.shapes)
    code, out, err = annotate(fake_cvat, alice, "--task", str(task.id), "--model", "detr-fixed")
    assert code == exits.EXIT_OK, err
    auto = [shape for shape in task.shapes if shape.source == "auto"]
    # one "person" per frame but the deleted one; "bike" is not a task label and is dropped
    assert [(s.frame, s.label_id, s.points) for s in auto] == [
        (frame, label_id(task, "person"), [1.0, 2.0, 30.0, 40.0]) for frame in (0, 1, 3)]
    assert out == f"Task {task.id}: 3 shapes added by detr-fixed ({manual + 3} in total)\n"
    assert f"Task {task.id} has no label 'bike': CVAT drops those detections" in err
    payloads = [body for name, _, body in fake_nuclio.invocations if name == "detr-fixed"]
    assert len(payloads) == 3 and all(set(payload) == {"image"} for payload in payloads)


def test_threshold_and_clear_existing_are_passed_to_cvat(fake_cvat, fake_nuclio, alice, task, serverless):
    code, out, err = annotate(fake_cvat, alice, "--task", str(task.id), "--model", "detr-fixed",
                              "--threshold", "0.7", "--clear-existing")
    assert code == exits.EXIT_OK, err
    assert all(shape.source == "auto" for shape in task.shapes) and len(task.shapes) == 3
    assert out == f"Task {task.id}: 3 shapes added by detr-fixed (3 in total)\n"
    assert {body["threshold"] for _, _, body in fake_nuclio.invocations} == {0.7}


def test_a_model_id_stands_for_its_published_function(fake_cvat, alice, task, serverless, tmp_path):
    folder = add_model(tmp_path / "home", "task-7-v1", ["person", "bike"])
    code, _, err = annotate(fake_cvat, alice, "--task", str(task.id), "--model", "task-7-v1")
    assert code == exits.EXIT_USAGE and "model task-7-v1 is not published: publish it with `cvat-detr publish" in err
    card = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**card, "function": "detr-fixed"}))
    code, out, err = annotate(fake_cvat, alice, "--task", str(task.id), "--model", "task-7-v1")
    assert code == exits.EXIT_OK, err
    assert "shapes added by detr-fixed" in out


def test_a_running_annotation_is_reported_clearly(fake_cvat, alice, task, serverless):
    client = CvatClient(fake_cvat.url, LegacyToken(alice.token))
    running = client.start_auto_annotation(task.id, "detr-fixed")
    code, _, err = annotate(fake_cvat, alice, "--task", str(task.id), "--model", "detr-fixed")
    assert code == exits.EXIT_ANNOTATE
    assert (f"an automatic annotation of task {task.id} is already running in CVAT (request {running['id']!r}, "
            f"model 'detr-fixed', queued); wait for it to finish, or cancel it") in err


@pytest.mark.parametrize("case, code, message", [
    ("unknown model", exits.EXIT_NOT_FOUND, "offers no model 'nope': publish it with `cvat-detr publish`"),
    ("function fails", exits.EXIT_ANNOTATE, "failed: requests.exceptions.HTTPError: 400 Client Error"),
    ("no common label", exits.EXIT_ANNOTATE, "none of the labels of 'detr-other' (cat, dog) is a label of task"),
    ("serverless off", exits.EXIT_UNREACHABLE, "HTTP 503"),
    ("missing task", exits.EXIT_NOT_FOUND, "does not exist"),
])
def test_annotation_errors(fake_cvat, alice, task, serverless, case, code, message):
    model, task_id = "detr-fixed", task.id
    if case == "unknown model":
        model = "nope"
    elif case == "function fails":
        serverless.deploy(fixed_function(fail="bad frame"))
    elif case == "no common label":
        serverless.deploy(fixed_function("detr-other", labels=("cat", "dog")))
        model = "detr-other"
    elif case == "serverless off":
        fake_cvat.connect_nuclio("")
    elif case == "missing task":
        task_id = 999
    got, _, err = annotate(fake_cvat, alice, "--task", str(task_id), "--model", model)
    assert got == code, err
    assert message in err


def test_annotate_locally_through_cvat_sdk(fake_cvat, alice, task, tmp_path):
    folder = add_model(tmp_path / "home", "task-7-v1", ["car", "person", "bike"], winner=1)
    code, out, err = annotate(fake_cvat, alice, "--task", str(task.id), "--model", "task-7-v1", "--local",
                              "--clear-existing")
    assert code == exits.EXIT_OK, err
    assert [(s.frame, s.label_id, s.source) for s in task.shapes] == [
        (frame, label_id(task, "person"), "auto") for frame in (0, 1, 3)]
    assert out == f"Task {task.id}: 3 shapes added by {folder / 'model.pt'} (3 in total)\n"


def test_annotate_locally_shows_progress(fake_cvat, alice, task, tmp_path):
    """Without --quiet cvat-sdk's progress bar is ours, on our stderr (it used to crash on a repeated 'unit')."""
    add_model(tmp_path / "home", "task-7-v1", ["car", "person", "bike"], winner=1)
    code, out, err = annotate(fake_cvat, alice, "--task", str(task.id), "--model", "task-7-v1", "--local",
                              quiet=False)
    assert code == exits.EXIT_OK, err
    assert "3 shapes added" in out
    assert "0/3 [" in err  # the bar over the 3 frames, drawn on our stderr


def test_annotate_locally_without_cvat_sdk_says_what_to_install(fake_cvat, alice, task, tmp_path, monkeypatch):
    add_model(tmp_path / "home", "task-7-v1", ["car", "person", "bike"], winner=1)
    monkeypatch.setitem(sys.modules, "cvat_sdk.auto_annotation", None)  # as if not installed
    code, _, err = annotate(fake_cvat, alice, "--task", str(task.id), "--model", "task-7-v1", "--local")
    assert code == exits.EXIT_ANNOTATE
    assert "pip install 'cvat-detr[cvat]'" in err


@pytest.mark.parametrize("local", [False, True])
def test_a_task_without_data_says_it_has_no_images(fake_cvat, alice, serverless, tmp_path, local):
    add_model(tmp_path / "home", "task-7-v1", ["car", "person", "bike"], winner=1)
    empty = fake_cvat.add_task("no data", owner=alice, labels=["person"], frames=[])
    code, _, err = annotate(fake_cvat, alice, "--task", str(empty.id),
                            *(["--model", "task-7-v1", "--local"] if local else ["--model", "detr-fixed"]))
    assert code == exits.EXIT_DATA
    assert f"task {empty.id} ('no data') has no images: upload images or a video to it" in err
