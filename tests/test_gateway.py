"""The DETR gateway through a real uvicorn server, on the fake CVAT 2.42 and the in-process
trainer function: CVAT decides who may do what, ids and options are checked before anything
reaches CVAT, a training goes from preparation to the trainer to a model, a second one is
refused while the first runs, failures become job errors, and CVAT's signed webhook retrains a
task whose jobs are all completed."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import secrets
import string
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional
from urllib.parse import urlsplit

import pytest
import requests

from cvat_plugin.cvat.auth import BrowserSession, ForwardedAuthorization
from cvat_plugin.cvat.task_summary import summarize_task
from cvat_plugin.gateway.app import API_PREFIX
from cvat_plugin.gateway.app import main as gateway_main
from cvat_plugin.gateway.auth import check_csrf
from cvat_plugin.gateway.errors import GatewayError
from cvat_plugin.gateway.preparations import Preparation, PreparationStore
from cvat_plugin.gateway.settings import AutoRetrain, GatewayConfigError, GatewaySettings, settings_repr
from cvat_plugin.gateway.webhooks import signature_ok
from cvat_plugin.home.layout import write_json_atomic
from cvat_plugin.training.options import training_setup
from tests.fakes.cvat_server import Task, User
from tests.fakes.cvat_tasks import add_synthetic_task
from tests.fakes.nuclio import TRAINER_TOKEN
from tests.gateway_sandbox import Sandbox, sandbox

pytestmark = pytest.mark.usefixtures("restore_logging")

WEBHOOK_SECRET = "s3cret-shared-with-cvat"
RETRAIN_PROJECT = 5
ACTIVE = ("preparing", "queued", "running")


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path) as box:
        yield box


@pytest.fixture
def retrain_box(tmp_path: Path) -> Iterator[Sandbox]:
    with sandbox(tmp_path, service_account=True, webhook_secret=WEBHOOK_SECRET,
                 auto_retrain=AutoRetrain(projects=frozenset({RETRAIN_PROJECT}))) as box:
        yield box


class Browser:
    """A CVAT user's browser calling the gateway as the UI plugin does: session cookies, and the
    CSRF token echoed in ``X-CSRFToken`` on POST."""

    def __init__(self, box: Sandbox, user: Optional[User]) -> None:
        self.api = box.api
        self.cookies = box.login(user) if user is not None else {}

    def get(self, path: str, **params: Any) -> requests.Response:
        return requests.get(self.api + path, params=params, cookies=self.cookies, timeout=30)

    def post(self, path: str, body: Any = None, *, csrf: Optional[str] = "cookie") -> requests.Response:
        headers = {}
        if csrf is not None:
            headers["X-CSRFToken"] = self.cookies.get("csrftoken", "") if csrf == "cookie" else csrf
        return requests.post(self.api + path, json=body, headers=headers, cookies=self.cookies, timeout=30)

    def wait(self, job_id: str, until: Callable[[dict], bool], timeout: float = 90) -> dict:
        """Polls ``GET /jobs/{id}`` and follows the id it answers with, as the UI plugin does."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self.get(f"/jobs/{job_id}")
            assert answer.status_code == 200, answer.text
            job = answer.json()
            if until(job):
                return job
            assert time.monotonic() < deadline, f"the job never got there: {job}"
            job_id = job["id"]
            time.sleep(0.1)


def exports(box: Sandbox) -> int:
    return box.cvat.count("POST", r"/api/tasks/\d+/dataset/export")


def error_of(answer: requests.Response) -> str:
    assert answer.headers["content-type"] == "application/json", answer.text
    return answer.json()["error"]


# --- reading a task -----------------------------------------------------------------------------


def test_summary_counts_the_tasks_boxes_and_offers_what_the_trainer_can_do(box):
    answer = Browser(box, box.alice).get(f"/tasks/{box.task.id}/summary")

    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    summary = answer.json()
    per_label = {label.name: sum(s.label_id == label.id for s in box.task.shapes) for label in box.task.labels}
    assert summary["task"] == {"id": box.task.id, "name": "shapes", "frames": 16}
    assert summary["labels"] == [{"id": label.id, "name": label.name, "boxes": per_label[label.name]}
                                 for label in box.task.labels]
    assert summary["annotated_frames"] == 16
    assert summary["warnings"] == ["only 16 images (fewer than 50): expect a weak model and noisy validation "
                                   "metrics; annotate more frames"]
    # The trainer has no baked weights and no dashboard: only 'scratch', and publishing off.
    assert summary["weights_options"] == ["scratch"]
    assert "defaults" not in summary  # GET /options has them, for every task alike
    assert summary["publish_unavailable"].startswith("this trainer cannot publish models (it has no Nuclio dashboard)")

    frames = box.cvat.tasks[box.task.id].frames
    bare = box.cvat.add_task("bare", owner=box.alice, labels=["car", "person", "bike"], frames=frames)
    summary = Browser(box, box.alice).get(f"/tasks/{bare.id}/summary").json()
    assert [w for w in summary["warnings"] if "box" in w] == [
        "no label has boxes yet: draw boxes (or polygons, masks) around the objects in CVAT"]


def test_summary_follows_the_export_rules():
    """Boxes from every box-like shape and from visible track frames; deleted frames count for nothing."""
    task = {"id": 3, "name": "street", "size": 10}
    labels = [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}]
    annotations = {
        "shapes": [
            {"type": "rectangle", "frame": 0, "label_id": 1}, {"type": "polygon", "frame": 1, "label_id": 1},
            {"type": "rectangle", "frame": 2, "label_id": 1},  # a deleted frame
            {"type": "points", "frame": 3, "label_id": 2}, {"type": "ellipse", "frame": 4, "label_id": 2},
        ],
        "tracks": [
            {"label_id": 2, "shapes": [{"type": "rectangle", "frame": 5, "outside": False},
                                       {"type": "rectangle", "frame": 7, "outside": True}]},
            {"label_id": 1, "shapes": [{"type": "rectangle", "frame": 8, "outside": False}]},
        ],
        "tags": [{"frame": 0, "label_id": 1}],
    }

    summary = summarize_task(task, labels, annotations, {"deleted_frames": [2]})

    assert summary["task"] == {"id": 3, "name": "street", "frames": 9}
    assert summary["labels"] == [{"id": 1, "name": "car", "boxes": 4}, {"id": 2, "name": "person", "boxes": 3}]
    assert summary["annotated_frames"] == 7  # frames 0, 1, 4, 5, 6, 8 and 9
    assert any("'car' has only 4 boxes" in w for w in summary["warnings"])
    assert any("skipped 1 points shape, 1 tag" in w for w in summary["warnings"])


# --- who may do what: CVAT decides --------------------------------------------------------------


def _calls(task_id: int) -> list[tuple[str, str, dict]]:
    return [("GET", f"/tasks/{task_id}/summary", {}), ("POST", f"/tasks/{task_id}/train", {}),
            ("GET", "/jobs", {"task": task_id}), ("GET", "/models", {"task": task_id})]


@pytest.mark.parametrize("caller, status, reason", [
    ("nobody", 401, "CVAT said: Authentication credentials were not provided"),
    ("expired session", 401, "CVAT said: Authentication credentials were not provided"),
    ("wrong API token", 401, "CVAT said: Invalid token"),
    ("another user's session", 403, "CVAT said: You do not have permission to perform this action"),
    ("another user's API token", 403, "CVAT said: You do not have permission to perform this action"),
])
def test_cvat_decides_who_may_see_a_task(box, caller, status, reason):
    bob = box.cvat.add_user("bob", "bob-password")
    headers, cookies = {}, {}
    if caller == "expired session":
        cookies = {"sessionid": "0" * 32, "csrftoken": "1" * 32}
        headers["X-CSRFToken"] = "1" * 32
    elif caller == "wrong API token":
        headers["Authorization"] = "Token " + "0" * 40
    elif caller == "another user's session":
        cookies = box.login(bob)
        headers["X-CSRFToken"] = cookies["csrftoken"]
    elif caller == "another user's API token":
        headers["Authorization"] = f"Token {bob.token}"

    for method, path, params in _calls(box.task.id):
        answer = requests.request(method, box.api + path, params=params, json={} if method == "POST" else None,
                                  headers=headers, cookies=cookies, timeout=30)
        assert answer.status_code == status, (method, path, answer.text)
        assert reason in error_of(answer), (method, path)
        assert bob.token not in answer.text
    assert exports(box) == 0


def test_the_options_show_the_schema_with_the_sites_defaults(box):
    answer = Browser(box, box.alice).get("/options")
    assert answer.status_code == 200, answer.text
    options = {item["name"]: item for item in answer.json()["options"]}
    # DETR_TRAIN_DEFAULTS (the sandbox's tiny training) over the schema's defaults; limits from detr.config.
    assert {name: options[name]["default"] for name in ("epochs", "image_size", "weights", "val_fraction",
                                                         "publish")} == {
        "epochs": 1, "image_size": 128, "weights": "scratch", "val_fraction": 0.15, "publish": True}
    assert (options["image_size"]["minimum"], options["image_size"]["maximum"]) == (32, 4096)
    assert options["hidden_dim"] == {**options["hidden_dim"], "section": "model", "default": 128}
    assert options["weights"]["choices"] == ["coco", "imagenet", "scratch", "previous"]
    assert answer.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("caller, status, reason", [
    ("nobody", 401, "CVAT said: Authentication credentials were not provided"),
    ("expired session", 401, "CVAT said: Authentication credentials were not provided"),
    ("wrong API token", 401, "CVAT said: Invalid token"),
    ("another user's API token", 200, None),
])
def test_cvat_decides_who_may_read_the_options(box, caller, status, reason):
    """Any user CVAT knows, as for the other reads; the options say nothing about a task."""
    bob = box.cvat.add_user("bob", "bob-password")
    cookies, headers = {}, {}
    if caller == "expired session":
        cookies = {"sessionid": "0" * 32, "csrftoken": "1" * 32}
    elif caller == "wrong API token":
        headers["Authorization"] = "Token " + "0" * 40
    elif caller == "another user's API token":
        headers["Authorization"] = f"Token {bob.token}"
    answer = requests.get(f"{box.api}/options", headers=headers, cookies=cookies, timeout=30)
    assert answer.status_code == status, answer.text
    if reason:
        assert reason in error_of(answer)
    assert box.cvat.count("GET", r"/api/users/self") == 1


def test_an_api_token_works_like_a_session(box):
    answer = requests.get(f"{box.api}/tasks/{box.task.id}/summary",
                          headers={"Authorization": f"Token {box.alice.token}"}, timeout=30)
    assert answer.status_code == 200, answer.text


def test_a_refused_authorization_header_is_not_called_a_session(box):
    answer = requests.get(f"{box.api}/tasks/{box.task.id}/summary", headers={"Authorization": "Token " + "0" * 40},
                          timeout=30)
    assert answer.status_code == 401
    assert error_of(answer) == ("CVAT did not accept the Token credentials of the Authorization header (CVAT said: "
                                "Invalid token): check the token the request sends (an API key as "
                                "'Authorization: Token <key>')")


def test_a_task_without_data_says_it_has_no_images(box):
    empty = box.cvat.add_task("no data yet", owner=box.alice, labels=["car"], frames=[])
    browser = Browser(box, box.alice)
    for answer in (browser.get(f"/tasks/{empty.id}/summary"), browser.post(f"/tasks/{empty.id}/train", {})):
        assert answer.status_code == 422, answer.text
        assert error_of(answer) == (f"task {empty.id} ('no data yet') has no images: upload images or a video to "
                                    f"it in CVAT (on the task's page), then try again")
    assert exports(box) == 0


def test_a_task_that_does_not_exist_is_a_404(box):
    answer = Browser(box, box.alice).get("/tasks/999/summary")
    assert answer.status_code == 404
    assert error_of(answer) == ("CVAT cannot see task 999: it does not exist (CVAT said: No Task matches the given "
                                "query); check the task id")


@pytest.mark.parametrize("csrf, expected", [(None, 403), ("0" * 32, 403), ("not-a-token", 403)])
def test_a_post_with_the_session_needs_its_csrf_token(box, csrf, expected):
    answer = Browser(box, box.alice).post(f"/tasks/{box.task.id}/train", {}, csrf=csrf)
    assert answer.status_code == expected
    assert "CSRF check failed" in error_of(answer)
    assert exports(box) == 0 and box.cvat.count("GET", r"/api/tasks/\d+") == 0


def _django_mask(secret: str) -> str:
    """A masked CSRF token as Django's ``get_token`` hands it out (``_mask_cipher_secret``)."""
    chars = string.ascii_letters + string.digits
    mask = "".join(secrets.choice(chars) for _ in range(32))
    return mask + "".join(chars[(chars.index(x) + chars.index(y)) % len(chars)] for x, y in zip(secret, mask))


def test_the_csrf_check_accepts_django_masked_tokens_and_ignores_api_tokens():
    secret = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
    session = BrowserSession("session", secret)
    check_csrf("POST", {"x-csrftoken": secret}, session)
    check_csrf("POST", {"x-csrftoken": _django_mask(secret)}, session)
    check_csrf("GET", {}, session)
    check_csrf("POST", {}, ForwardedAuthorization("Token abc"))  # no cookie, no cross-site risk
    with pytest.raises(GatewayError, match="CSRF check failed"):
        check_csrf("POST", {"x-csrftoken": _django_mask(secret[::-1])}, session)


# --- ids and options are checked first ---------------------------------------------------------


@pytest.mark.parametrize("path, status, message", [
    ("/tasks/abc/summary", 400, "the task id must be a positive whole number such as 42, got 'abc'"),
    ("/tasks/0/summary", 400, "got '0'"),
    ("/tasks/-3/summary", 400, "got '-3'"),
    ("/tasks/1e3/summary", 400, "got '1e3'"),
    ("/tasks/99999999999999999999999/summary", 400, "positive whole number"),
    ("/tasks/../tasks/1/summary", 404, "no such path"),
    ("/tasks/..%2F1/summary", 404, "no such path"),
    ("/tasks/1%2F..%2F2/summary", 404, "no such path"),
    ("/tasks/%2E%2E/summary", 400, "got '..'"),
    ("/jobs/%2E%2E", 400, "the job id '..' is not valid"),
    ("/jobs/..%2F..%2Fmodels", 404, "no such path"),
    ("/jobs/a.json", 400, "is not valid"),
    ("/jobs/x%00y", 400, "is not valid"),
    ("/jobs?task=abc", 400, "the task query parameter must be a positive whole number"),
    ("/jobs?task=..%2F1", 400, "the task query parameter must be a positive whole number"),
    ("/jobs?task=1&task=2", 400, "pass the task as ?task=<task id> or the project as ?project=<project id>, once"),
    ("/models", 400, "pass the task as ?task=<task id> or the project as ?project=<project id>, once"),
    ("/datasets/1", 404, "no such path"),
])
def test_path_tricks_are_refused_before_anything_reaches_cvat(box, path, status, message):
    cookies = box.login(box.alice)
    before = len(box.cvat.log)
    url = urlsplit(box.gateway.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:  # http.client sends the path as written: no normalising of dots, no re-encoding
        connection.request("GET", API_PREFIX + path,
                           headers={"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())})
        answer = connection.getresponse()
        body = json.loads(answer.read())
    finally:
        connection.close()
    assert (answer.status, answer.getheader("content-type")) == (status, "application/json")
    assert message in body["error"]
    assert box.cvat.log[before:] == []


@pytest.mark.parametrize("body, message", [
    ({"epochs": 0}, "option 'epochs' must be a whole number from 1 to 10000, got 0"),
    ({"epochs": 2.5}, "option 'epochs' must be a whole number"),
    ({"epochs": True}, "option 'epochs' must be a whole number"),
    ({"image_size": 16}, "option 'image_size' must be a whole number from 32 to 4096, got 16"),
    ({"epochs": 100000}, "option 'epochs' must be a whole number from 1 to 10000, got 100000"),
    ({"epochs": 10**400}, "option 'epochs' must be a whole number from 1 to 10000, got 1000"),
    ({"image_size": 1e9}, "option 'image_size' must be a whole number from 32 to 4096, got 1000000000.0"),
    ({"epoch": 3}, "unknown option 'epoch'; known options: weights, recipe, model_preset, model, epochs, "),
    ({"val_fraction": 1.5}, "option 'val_fraction' must be a finite number from 0.01 to 0.5, got 1.5"),
    ({"image_size": 2000, "max_size": 1500}, "train config: max_size=1500 is invalid; must be > image_size=2000"),
    ({"model": {"num_queries": 0}}, "model option 'num_queries' must be a whole number from 1 to 3000, got 0"),
    ({"weights": "imagenet21k"}, "option 'weights' must be one of coco, imagenet, scratch, previous"),
    ({"publish": "yes"}, "option 'publish' must be true or false"),
    ([1, 2], "the body must be a JSON object of training options"),
    ({"weights": "previous"}, "task {task} has no trained model to continue from"),
    ({"weights": "coco"}, "the trainer has no 'coco' weights; choose one of 'scratch', 'previous'"),
    ({"publish": True}, "this trainer cannot publish models (it has no Nuclio dashboard)"),
])
def test_bad_options_are_refused_before_the_export(box, body, message):
    answer = Browser(box, box.alice).post(f"/tasks/{box.task.id}/train", body)
    assert answer.status_code == 400
    assert message.format(task=box.task.id) in error_of(answer)
    assert exports(box) == 0


@pytest.mark.parametrize("text, message", [
    (b'{"epochs": Infinity}', "option 'epochs' must be a whole number from 1 to 10000, got inf"),
    (b'{"image_size": NaN}', "option 'image_size' must be a whole number from 32 to 4096, got nan"),
    (b'{"val_fraction": NaN}', "option 'val_fraction' must be a finite number from 0.01 to 0.5, got nan"),
])
def test_non_finite_numbers_are_refused(box, text, message):
    browser = Browser(box, box.alice)
    answer = requests.post(f"{box.api}/tasks/{box.task.id}/train", data=text, cookies=browser.cookies,
                           headers={"X-CSRFToken": browser.cookies["csrftoken"]}, timeout=30)
    assert answer.status_code == 400 and message in error_of(answer)
    assert exports(box) == 0


@pytest.mark.parametrize("path", ["/tasks/{task}/train", "/webhooks/cvat"])
def test_a_deeply_nested_body_gets_a_400_not_a_traceback(retrain_box, path):
    browser = Browser(retrain_box, retrain_box.alice)
    body = b"[" * 5000 + b"]" * 5000
    headers = {"X-CSRFToken": browser.cookies["csrftoken"]}
    if path == "/webhooks/cvat":
        headers = {"X-Signature-256": "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()}
    answer = requests.post(retrain_box.api + path.format(task=retrain_box.task.id), data=body,
                           cookies=browser.cookies, headers=headers, timeout=30)
    assert answer.status_code == 400 and answer.headers["content-type"] == "application/json"
    assert error_of(answer) == "the request body is nested too deeply; send a flat JSON object"


def test_a_body_that_is_not_json_is_refused(box):
    browser = Browser(box, box.alice)
    answer = requests.post(f"{box.api}/tasks/{box.task.id}/train", data=b"{epochs: 3", cookies=browser.cookies,
                           headers={"X-CSRFToken": browser.cookies["csrftoken"]}, timeout=30)
    assert answer.status_code == 400 and "the request body is not valid JSON" in error_of(answer)


# --- trainings ------------------------------------------------------------------------------------


def test_a_training_goes_from_the_dialog_to_a_model(box):
    alice = Browser(box, box.alice)

    answer = alice.post(f"/tasks/{box.task.id}/train", {"epochs": 2, "val_fraction": 0.25})
    assert answer.status_code == 202, answer.text
    preparing = answer.json()
    assert preparing["id"].startswith("prep-") and preparing["state"] == "preparing"
    assert preparing["task_id"] == box.task.id and preparing["epochs"] == 2 and preparing["error"] is None

    job = alice.wait(preparing["id"], lambda job: job["state"] not in ACTIVE)
    assert job["state"] == "succeeded", job["error"]
    assert not job["id"].startswith("prep-") and job["dataset_id"] == preparing["dataset_id"]
    assert (job["epoch"], job["epochs"], job["model_id"]) == (2, 2, f"task-{box.task.id}-v1")
    # The dialog's choices over DETR_TRAIN_DEFAULTS, and the validation share in the training set.
    assert job["options"]["image_size"] == 128 and job["options"]["batch_size"] == 4
    manifest = json.loads((box.settings.home / "datasets" / job["dataset_id"] / "manifest.json").read_text())
    assert manifest["split"]["val_fraction"] == 0.25 and manifest["source"]["task_id"] == box.task.id
    # Exported once, as alice, with her session: the fake CVAT checks the CSRF pair on the POST.
    assert [request.owner.username for request in box.cvat.requests.values()] == ["alice"]
    assert box.cvat.count("POST", r"/api/tasks/\d+/dataset/export") == 1

    jobs = alice.get("/jobs", task=box.task.id).json()["jobs"]
    assert [j["id"] for j in jobs] == [job["id"]]
    assert alice.get(f"/jobs/{preparing['id']}").json()["id"] == job["id"]  # the preparation now stands for it
    models = alice.get("/models", task=box.task.id).json()["models"]
    assert [(m["id"], m["version"], m["labels"], m["function"]) for m in models] == [
        (f"task-{box.task.id}-v1", 1, ["circle", "square"], None)]
    # Now the task can continue from its model.
    assert alice.get(f"/tasks/{box.task.id}/summary").json()["weights_options"] == ["scratch", "previous"]


def test_a_project_is_summarized_and_trained_from_the_dialog(box, tmp_path):
    """A project's tasks (one per subset) are summarized together and trained into the project's model line,
    with the Validation task as the val split; CVAT decides who may see the project."""
    project = box.cvat.add_project("shapes", owner=box.alice, labels=["circle", "square"])
    add_synthetic_task(box.cvat, box.alice, tmp_path / "a", name="day", num_images=6, project=project,
                       subset="Train")
    val = add_synthetic_task(box.cvat, box.alice, tmp_path / "b", name="night", num_images=2, seed=1,
                             project=project, subset="Validation")
    alice = Browser(box, box.alice)

    summary = alice.get(f"/projects/{project.id}/summary").json()
    assert summary["project"]["name"] == "shapes" and summary["project"]["frames"] == 8
    assert [(t["name"], t["subset"], t["frames"]) for t in summary["project"]["tasks"]] == [
        ("day", "Train", 6), ("night", "Validation", 2)]
    assert [label["id"] for label in summary["labels"]] == [label.id for label in project.labels]
    assert sum(label["boxes"] for label in summary["labels"]) == sum(
        len(task.shapes) for task in box.cvat.tasks.values() if task.project_id == project.id)

    answer = alice.post(f"/projects/{project.id}/train", {"epochs": 1})
    assert answer.status_code == 202, answer.text
    assert (answer.json()["project_id"], answer.json()["task_id"]) == (project.id, None)
    job = alice.wait(answer.json()["id"], lambda job: job["state"] not in ACTIVE)
    assert job["state"] == "succeeded", job["error"]
    assert (job["project_id"], job["model_id"]) == (project.id, f"project-{project.id}-v1")
    val_json = json.loads((box.settings.home / "datasets" / job["dataset_id"] / "annotations" / "val.json").read_text())
    assert sorted(image["file_name"] for image in val_json["images"]) == sorted(
        f"task_{val.id}/Validation/{frame.name}" for frame in val.frames)
    assert [j["id"] for j in alice.get("/jobs", project=project.id).json()["jobs"]] == [job["id"]]
    assert [m["id"] for m in alice.get("/models", project=project.id).json()["models"]] == [job["model_id"]]
    assert alice.get("/models", task=box.task.id).json()["models"] == []
    assert alice.get(f"/projects/{project.id}/summary").json()["weights_options"] == ["scratch", "previous"]

    bob = Browser(box, box.cvat.add_user("bob", "bob-password"))
    answer = bob.get(f"/projects/{project.id}/summary")
    assert answer.status_code == 403 and f"CVAT does not let you see project {project.id}" in error_of(answer)


def test_a_user_who_may_only_see_a_task_cannot_train_it_cancel_or_publish(box):
    """Seeing is not changing: a viewer (here an assignee of one of its jobs) reads the summary and the jobs,
    but training, cancelling and publishing need what CVAT grants to change the task."""
    box.task.members.add("vera")
    vera = Browser(box, box.cvat.add_user("vera", "vera-password"))
    assert vera.get(f"/tasks/{box.task.id}/summary").status_code == 200
    refused = vera.post(f"/tasks/{box.task.id}/train", {"epochs": 1})
    assert refused.status_code == 403
    assert f"CVAT lets you see task {box.task.id} but not change it" in error_of(refused)
    assert exports(box) == 0

    started = Browser(box, box.alice).post(f"/tasks/{box.task.id}/train", {"epochs": 50}).json()
    assert vera.get(f"/jobs/{started['id']}").status_code == 200
    assert vera.post(f"/jobs/{started['id']}/cancel").status_code == 403
    assert Browser(box, box.alice).post(f"/jobs/{started['id']}/cancel").status_code == 200


@pytest.mark.parametrize("who", ["task assignee", "project owner", "project assignee", "organization maintainer",
                                 "organization owner", "admin"])
def test_who_may_change_a_task_follows_cvats_rules(box, tmp_path, who):
    user = box.cvat.add_user("carol", "carol-password", superuser=who == "admin")
    project = box.cvat.add_project("streets", owner=box.alice if who != "project owner" else user,
                                   labels=["circle", "square"])
    task = add_synthetic_task(box.cvat, box.alice, tmp_path, name="street", num_images=4, project=project)
    if who == "task assignee":
        task.assignee = user
    elif who == "project assignee":
        project.assignee = user
    elif who.startswith("organization"):
        task.organization = 9
        box.cvat.memberships[(9, "carol")] = who.split()[1]
    answer = Browser(box, user).post(f"/tasks/{task.id}/train", {"epochs": 1})
    assert answer.status_code == 202, answer.text


def test_an_organization_worker_sees_its_tasks_but_cannot_train_them(box, tmp_path):
    task = add_synthetic_task(box.cvat, box.alice, tmp_path, name="org", num_images=4)
    task.organization = 9
    box.cvat.memberships[(9, "walt")] = "worker"
    walt = Browser(box, box.cvat.add_user("walt", "walt-password"))
    assert walt.get(f"/tasks/{task.id}/summary").status_code == 200
    assert walt.post(f"/tasks/{task.id}/train", {"epochs": 1}).status_code == 403


def test_a_second_training_of_a_task_gets_409_with_the_running_job(box):
    alice, bob = Browser(box, box.alice), Browser(box, box.cvat.add_user("bob", "bob-password"))
    first = alice.post(f"/tasks/{box.task.id}/train", {"epochs": 50}).json()

    second = alice.post(f"/tasks/{box.task.id}/train", {"epochs": 1})
    assert second.status_code == 409
    assert f"task {box.task.id} is already training" in error_of(second)
    running = second.json()["job"]
    assert running["task_id"] == box.task.id and running["state"] in ACTIVE

    # Another user sees and cancels nothing of it, and cannot tell it from a job that does not exist.
    missing = bob.get("/jobs/20250101-000000-abcdef")
    for answer in (bob.get(f"/jobs/{first['id']}"), bob.post(f"/jobs/{first['id']}/cancel"),
                   bob.get(f"/jobs/{running['id']}"), missing, bob.post("/jobs/prep-20250101-000000-abcdef/cancel")):
        assert answer.status_code == 404 and "in the tasks and projects you can see in CVAT" in error_of(answer)
        assert error_of(answer).replace(answer.url.split("/jobs/")[1].split("/")[0], "<id>") == \
            error_of(missing).replace("20250101-000000-abcdef", "<id>")

    job = alice.wait(first["id"], lambda job: job["state"] == "running")
    assert alice.post(f"/jobs/{job['id']}/cancel").status_code == 200
    assert alice.wait(job["id"], lambda job: job["state"] not in ACTIVE)["state"] == "cancelled"
    again = alice.post(f"/tasks/{box.task.id}/train", {"epochs": 1})
    assert again.status_code == 202, again.text


def test_cancelling_while_preparing_stops_before_the_trainer(box):
    box.cvat.polls_per_state = 200  # the export takes a few seconds
    alice = Browser(box, box.alice)
    preparing = alice.post(f"/tasks/{box.task.id}/train", {}).json()

    cancelled = alice.post(f"/jobs/{preparing['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert alice.post(f"/jobs/{preparing['id']}/cancel").status_code == 409  # nothing left to cancel

    box.cvat.polls_per_state = 0
    deadline = time.monotonic() + 30
    while requests.get(f"{box.api}/health", timeout=30).json()["preparing"]:
        assert time.monotonic() < deadline, "the cancelled preparation did not stop"
        time.sleep(0.05)
    assert list((box.settings.home / "datasets").glob("*")) == []
    jobs = alice.get("/jobs", task=box.task.id).json()["jobs"]
    assert [(j["id"], j["state"]) for j in jobs] == [(preparing["id"], "cancelled")]


def test_a_failed_preparation_is_a_failed_job_with_the_reason(box):
    box.task.export_error = "No space left on device"
    alice = Browser(box, box.alice)
    preparing = alice.post(f"/tasks/{box.task.id}/train", {}).json()

    failed = alice.wait(preparing["id"], lambda job: job["state"] != "preparing")
    assert failed["state"] == "failed" and failed["id"] == preparing["id"]
    assert "CVAT failed to export task" in failed["error"] and "No space left on device" in failed["error"]
    assert [j["state"] for j in alice.get("/jobs", task=box.task.id).json()["jobs"]] == ["failed"]
    assert not (box.settings.home / "datasets" / preparing["dataset_id"]).exists()
    box.task.export_error = None
    assert alice.post(f"/tasks/{box.task.id}/train", {}).status_code == 202  # a failure holds nothing


def test_the_trainer_gets_the_dialogs_choices_over_the_site_defaults(box):
    service = box.gateway.server.config.app.state.service
    options = {"epochs": 7, "image_size": 2000, "weights": "scratch", "val_fraction": 0.2, "publish": False,
               "model": {"num_queries": 10}}
    chosen = service.trainer_options(options)
    site = dict(box.settings.trainer_defaults)
    del site["max_size"]  # 192, which the chosen image size reaches: the trainer gives 2000 px a cap that fits
    assert chosen == {**site, "epochs": 7, "image_size": 2000, "weights": "scratch",
                      "model": {**site["model"], "num_queries": 10}}
    assert training_setup(chosen).train_options["max_size"] == 3333
    assert service.trainer_options({**options, "image_size": 128})["max_size"] == 192  # DETR_TRAIN_DEFAULTS'


def test_a_preparation_cut_short_by_a_restart_is_reported_failed(tmp_path):
    store = PreparationStore(tmp_path)
    store.save(Preparation("prep-20260101-000000-abcdef", 7, "task7-x", {"epochs": 3}))
    store.save(Preparation("prep-20260101-000001-abcdef", 7, "task7-y", {"epochs": 3}, state="submitted",
                           job_id="20260101-000002-abcdef"))

    restarted = PreparationStore(tmp_path)
    restarted.load()

    cut, submitted = sorted(restarted.of_task(7), key=lambda prep: prep.id)
    assert cut.state == "failed" and "the DETR gateway restarted while it prepared this training" in cut.error
    assert cut.to_job()["state"] == "failed"
    assert submitted.state == "submitted" and submitted.error is None


def test_health_reports_the_trainer_and_cvat(box):
    answer = requests.get(f"{box.api}/health", timeout=30)
    assert answer.status_code == 200
    assert answer.json() | {"version": "-"} == {"status": "ok", "version": "-", "trainer": "ok", "cvat": "ok",
                                                "cvat_version": "2.42.0", "preparing": 0, "webhooks": False,
                                                "auto_retrain": False}
    box.cvat.fail("GET", "/api/server/about", 503, times=5)
    health = requests.get(f"{box.api}/health", timeout=30).json()
    assert (health["status"], health["cvat"], health["cvat_version"]) == ("degraded", "unavailable", None)
    box.trainer.__exit__(None, None, None)
    assert requests.get(f"{box.api}/health", timeout=30).json()["trainer"] == "unavailable"
    summary = Browser(box, box.alice).get(f"/tasks/{box.task.id}/summary").json()
    assert any("the DETR trainer is not reachable right now" in w for w in summary["warnings"])
    answer = Browser(box, box.alice).post(f"/tasks/{box.task.id}/train", {})
    assert answer.status_code == 503 and "the DETR trainer is not available right now" in error_of(answer)
    assert exports(box) == 0


# --- CVAT's webhook -------------------------------------------------------------------------------


def deliver(box: Sandbox, payload: Any, *, signature: Optional[str] = "good") -> requests.Response:
    """Post ``payload`` as CVAT does: ``json.dumps`` of the payload, signed with the webhook's secret."""
    body = json.dumps(payload).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if signature == "good":
        signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    if signature is not None:
        headers["X-Signature-256"] = signature
    return requests.post(f"{box.api}/webhooks/cvat", data=body, headers=headers, timeout=30)


def cvat_now() -> str:
    """A timestamp as CVAT's serializers write it: microseconds and ``Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def job_update(task: Task, index: int, *, before: dict, service: User, updated: Optional[str] = None) -> dict:
    """An ``update:job`` payload as ``cvat/apps/webhooks/signals.py`` builds it; ``updated``: the job's
    ``updated_date`` (default: now)."""
    job = task.jobs[index]
    return {
        "event": "update:job",
        "job": {"id": job.id, "task_id": task.id, "project_id": task.project_id, "state": job.state,
                "stage": job.stage, "type": "annotation", "start_frame": job.start_frame,
                "stop_frame": job.stop_frame, "assignee": None, "url": f"http://cvat/api/jobs/{job.id}",
                "updated_date": updated or cvat_now()},
        "before_update": before,
        "webhook_id": 3,
        "sender": {"id": service.id, "username": "annotator"},
    }


def project_task(box: Sandbox, workdir: Path, *, with_model: bool) -> Task:
    """A task of two jobs in the auto-retrain project; optionally with a model trained on it before."""
    task = add_synthetic_task(box.cvat, box.alice, workdir, name="project-task", num_images=8, segment_size=4)
    task.project_id = RETRAIN_PROJECT
    if with_model:
        folder = box.settings.home / "models" / f"task-{task.id}-v1"
        write_json_atomic(folder / "model.json", {"id": f"task-{task.id}-v1", "version": 1, "task_id": task.id,
                                                  "labels": [{"id": 1, "name": "circle"}], "metrics": {}})
        (folder / "model.pt").write_bytes(b"not used by this test")
    return task


@pytest.mark.parametrize("signature", [None, "", "sha256=" + "0" * 64, "sha1=abc", "good-but-other-secret"])
def test_a_webhook_without_the_right_signature_does_nothing(retrain_box, tmp_path, signature):
    task = project_task(retrain_box, tmp_path, with_model=True)
    for job in task.jobs:
        job.state = "completed"
    payload = job_update(task, 1, before={"state": "in progress"}, service=retrain_box.service)
    if signature == "good-but-other-secret":
        signature = "sha256=" + hmac.new(b"other", json.dumps(payload).encode(), hashlib.sha256).hexdigest()

    answer = deliver(retrain_box, payload, signature=signature)

    assert answer.status_code == 403 and "missing or wrong X-Signature-256" in error_of(answer)
    assert retrain_box.cvat.count("GET", "/api/jobs") == 0 and exports(retrain_box) == 0


def test_webhooks_are_off_without_a_secret(box):
    answer = deliver(box, {"event": "ping", "webhook": {}, "sender": {}})
    assert answer.status_code == 403 and "webhooks are off: set DETR_WEBHOOK_SECRET" in error_of(answer)


def test_a_ping_is_answered(retrain_box):
    answer = deliver(retrain_box, {"event": "ping", "webhook": {"id": 3}, "sender": {"id": 1}})
    assert answer.status_code == 200 and answer.json() == {"status": "ok", "reason": "pong"}


@pytest.mark.parametrize("change, reason", [
    ("other event", "event 'update:task' does not concern training"),
    ("other project", "is in project 9, which does not retrain automatically (DETR_AUTO_RETRAIN_PROJECTS)"),
    ("no project", "is in a task outside projects, which does not retrain automatically"),
    ("assignee changed", "neither its state nor its stage changed"),
    ("still in progress", "is 'in progress', not 'completed'"),
])
def test_other_updates_are_ignored_without_asking_cvat(retrain_box, tmp_path, change, reason):
    task = project_task(retrain_box, tmp_path, with_model=True)
    for job in task.jobs:
        job.state = "completed"
    before = {"state": "in progress"}
    if change == "other project":
        task.project_id = 9
    elif change == "no project":
        task.project_id = None
    elif change == "assignee changed":
        before = {"assignee": None}
    elif change == "still in progress":
        task.jobs[0].state = "in progress"
        before = {"stage": "validation"}
    payload = job_update(task, 0, before=before, service=retrain_box.service)
    if change == "other event":
        payload["event"] = "update:task"

    answer = deliver(retrain_box, payload)

    assert answer.status_code == 200 and answer.json()["status"] == "ignored"
    assert reason in answer.json()["reason"]
    assert retrain_box.cvat.count("GET", "/api/jobs") == 0 and exports(retrain_box) == 0


def test_auto_retrain_by_project_waits_for_every_task_then_trains_the_project(tmp_path):
    """DETR_AUTO_RETRAIN_SCOPE=project: a task whose jobs are done starts nothing while another task of the
    project is being labelled; the last completed job retrains the project (its model line)."""
    with sandbox(tmp_path, service_account=True, webhook_secret=WEBHOOK_SECRET,
                 auto_retrain=AutoRetrain(all_projects=True, scope="project")) as box:
        project = box.cvat.add_project("shapes", owner=box.alice, labels=["circle", "square"])
        day = add_synthetic_task(box.cvat, box.alice, tmp_path / "a", name="day", num_images=6, project=project,
                                 subset="Train")
        night = add_synthetic_task(box.cvat, box.alice, tmp_path / "b", name="night", num_images=2, seed=1,
                                   project=project, subset="Validation")
        for job in day.jobs:
            job.state = "completed"
        first = deliver(box, job_update(day, 0, before={"state": "in progress"}, service=box.service))
        assert first.status_code == 200, first.text
        assert first.json()["status"] == "ignored"
        assert f"but {len(night.jobs)} of project {project.id}'s" in first.json()["reason"]

        for job in night.jobs:
            job.state = "completed"
        started = deliver(box, job_update(night, 0, before={"state": "in progress"}, service=box.service))
        assert started.status_code == 202, started.text
        assert f"jobs of project {project.id} are completed" in started.json()["reason"]
        job = started.json()["job"]
        assert (job["project_id"], job["task_id"]) == (project.id, None)
        assert Browser(box, box.alice).wait(job["id"], lambda job: job["state"] not in ACTIVE)["model_id"] == \
            f"project-{project.id}-v1"


def test_the_retrain_scope_is_checked():
    assert AutoRetrain.parse("3", "Project").scope == "project" and AutoRetrain.parse("all").scope == "task"
    with pytest.raises(GatewayConfigError, match="DETR_AUTO_RETRAIN_SCOPE='tasks' is not valid"):
        AutoRetrain.parse("3", "tasks")


def test_auto_retrain_waits_for_every_job_then_continues_from_the_last_model(retrain_box, tmp_path):
    box = retrain_box
    task = project_task(box, tmp_path, with_model=True)
    assert len(task.jobs) == 2

    task.jobs[0].state = "completed"
    first = deliver(box, job_update(task, 0, before={"state": "in progress"}, service=box.service))
    assert first.status_code == 200, first.text
    assert first.json() == {"status": "ignored", "reason": f"job {task.jobs[0].id} of task {task.id} was "
                                                           f"completed, but 1 of its 2 jobs are not completed yet"}
    assert exports(box) == 0

    task.jobs[1].state, task.jobs[1].stage = "completed", "acceptance"
    completion = job_update(task, 1, before={"state": "in progress", "stage": "validation"}, service=box.service)
    second = deliver(box, completion)
    assert second.status_code == 202, second.text
    started = second.json()
    assert started["status"] == "started" and "training from weights 'previous'" in started["reason"]
    assert started["job"]["state"] == "preparing" and started["job"]["options"]["weights"] == "previous"

    # CVAT retries a delivery it thinks failed: the same event starts nothing more.
    again = deliver(box, completion)
    assert again.status_code == 200 and again.json()["status"] == "ignored"
    assert "already started a training; a redelivered or replayed event starts nothing" in again.json()["reason"]
    # A later change while the task trains: nothing more starts either.
    later = deliver(box, job_update(task, 1, before={"state": "in progress"}, service=box.service,
                                    updated=(datetime.now(timezone.utc) + timedelta(seconds=2)).isoformat()))
    assert later.status_code == 200 and later.json()["status"] == "ignored"
    assert f"task {task.id} is already training" in later.json()["reason"]

    # The export ran as the service account, and the trainer got a job continuing from the model.
    alice = Browser(box, box.alice)
    job = alice.wait(started["job"]["id"], lambda job: not job["id"].startswith("prep-"))
    assert job["task_id"] == task.id and job["options"]["weights"] == "previous"
    assert [request.owner.username for request in box.cvat.requests.values()] == ["detr-service"]


def test_auto_retrain_of_a_task_without_a_model_starts_from_the_default_weights(retrain_box, tmp_path):
    task = project_task(retrain_box, tmp_path, with_model=False)
    for job in task.jobs:
        job.state = "completed"
    answer = deliver(retrain_box, job_update(task, 0, before={"state": "in progress"}, service=retrain_box.service))
    assert answer.status_code == 202, answer.text
    assert answer.json()["job"]["options"]["weights"] == "scratch"


def test_a_replayed_signed_delivery_is_ignored_with_its_reason_even_after_the_training_ended(retrain_box, tmp_path):
    box = retrain_box
    task = project_task(box, tmp_path, with_model=False)
    for job in task.jobs:
        job.state = "completed"
    completion = job_update(task, 0, before={"state": "in progress"}, service=box.service)
    started = deliver(box, completion)
    assert started.status_code == 202, started.text
    alice = Browser(box, box.alice)
    alice.wait(started.json()["job"]["id"], lambda job: job["state"] in ("succeeded", "failed", "cancelled"))
    exported = exports(box)

    for _ in range(3):  # an attacker who kept the signed body, or CVAT's "Redeliver"
        replay = deliver(box, completion)
        assert replay.status_code == 200 and replay.json()["status"] == "ignored"
        assert replay.json()["reason"] == (
            f"this event (job {task.jobs[0].id} updated at {completion['job']['updated_date']}) already started a "
            f"training; a redelivered or replayed event starts nothing")
    remembered = json.loads((box.settings.home / "gateway" / "webhook-deliveries.json").read_text())
    assert remembered == [f"{task.jobs[0].id}@{completion['job']['updated_date']}"], "kept on the volume"

    # Another job's old completion, never seen before, predates the task's newest training: ignored too.
    old = job_update(task, 1, before={"state": "in progress"}, service=box.service,
                     updated=(datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    answer = deliver(box, old)
    assert answer.status_code == 200 and answer.json()["status"] == "ignored"
    assert f"job {task.jobs[1].id} was updated at {old['job']['updated_date']}, not after the task's latest " \
           in answer.json()["reason"]
    assert "a redelivered or replayed event starts nothing" in answer.json()["reason"]
    assert exports(box) == exported, "no training started"


def test_a_delivery_without_updated_date_starts_nothing(retrain_box, tmp_path):
    task = project_task(retrain_box, tmp_path, with_model=False)
    for job in task.jobs:
        job.state = "completed"
    payload = job_update(task, 0, before={"state": "in progress"}, service=retrain_box.service)
    del payload["job"]["updated_date"]
    answer = deliver(retrain_box, payload)
    assert answer.status_code == 200 and answer.json()["status"] == "ignored"
    assert "has no valid updated_date (None), so a replayed delivery cannot be told" in answer.json()["reason"]
    assert exports(retrain_box) == 0


# --- configuration ----------------------------------------------------------------------------------


BASE_ENV = {"CVAT_URL": "http://cvat_server:8080", "DETR_TRAINER_URL": "http://nuclio-nuclio-detr-trainer:8080",
            "DETR_HOME": "/var/lib/detr", "DETR_TRAINER_TOKEN": TRAINER_TOKEN}


def test_settings_from_the_environment():
    settings = GatewaySettings.from_env({
        **BASE_ENV, "DETR_WEBHOOK_SECRET": "hush-hush-secret", "CVAT_TOKEN": "t0ken-of-the-bot",
        "DETR_AUTO_RETRAIN_PROJECTS": "3, 7",
        "DETR_TRAIN_DEFAULTS": '{"epochs": 30, "batch_size": 4, "publish": false}', "DETR_GATEWAY_WORKERS": "3",
    })
    assert settings.auto_retrain.covers(7) and not settings.auto_retrain.covers(4)
    assert settings.job_defaults == {"epochs": 30, "image_size": 800, "weights": "coco", "val_fraction": 0.15,
                                     "publish": False}
    assert settings.trainer_defaults == {"epochs": 30, "batch_size": 4}
    assert settings.workers == 3 and str(settings.home) == "/var/lib/detr"
    for text in (repr(settings), settings_repr(settings)):
        assert "t0ken-of-the-bot" not in text and "hush-hush-secret" not in text and TRAINER_TOKEN not in text
    assert GatewaySettings.from_env({**BASE_ENV, "DETR_AUTO_RETRAIN_PROJECTS": ""}).auto_retrain.enabled is False


@pytest.mark.parametrize("env, message", [
    ({"CVAT_URL": ""}, "CVAT_URL must be set"),
    ({"DETR_TRAINER_URL": "nuclio-nuclio-detr-trainer:8080"}, "DETR_TRAINER_URL='nuclio-nuclio-detr-trainer:8080' "
                                                              "is not a URL"),
    ({"DETR_AUTO_RETRAIN_PROJECTS": "all", "CVAT_TOKEN": "t"}, "DETR_AUTO_RETRAIN_PROJECTS is set but "
                                                                "DETR_WEBHOOK_SECRET is not"),
    ({"DETR_AUTO_RETRAIN_PROJECTS": "all", "DETR_WEBHOOK_SECRET": "x"}, "no CVAT service account is: set "
                                                                        "CVAT_ACCESS_TOKEN, CVAT_TOKEN"),
    ({"DETR_AUTO_RETRAIN_PROJECTS": "3;7"}, "DETR_AUTO_RETRAIN_PROJECTS='3;7' is not valid"),
    ({"DETR_TRAIN_DEFAULTS": "{epochs: 3}"}, "DETR_TRAIN_DEFAULTS is not valid JSON"),
    ({"DETR_TRAIN_DEFAULTS": '{"epochs": 0}'}, "DETR_TRAIN_DEFAULTS: option 'epochs' must be a whole number"),
    # A typo, in a trainer option or a model option, stops the gateway rather than every training after its export.
    ({"DETR_TRAIN_DEFAULTS": '{"bach_size": 4}'}, "DETR_TRAIN_DEFAULTS: unknown option 'bach_size'; known options: "
                                                  "weights, recipe, model_preset, model, epochs, batch_size, "),
    ({"DETR_TRAIN_DEFAULTS": '{"model": {"num_quries": 50}}'}, "DETR_TRAIN_DEFAULTS: unknown model option "
                                                               "'num_quries'; known model options: num_classes, "),
    ({"DETR_TRAIN_DEFAULTS": '{"schedule": "linear"}'}, "DETR_TRAIN_DEFAULTS: option 'schedule' must be one of "
                                                        "step, cosine, got 'linear'"),
    ({"DETR_TRAIN_DEFAULTS": '{"image_size": 900, "max_size": 800}'}, "DETR_TRAIN_DEFAULTS: train config: "
                                                                      "max_size=800 is invalid; must be > "
                                                                      "image_size=900"),
    ({"DETR_GATEWAY_WORKERS": "two"}, "DETR_GATEWAY_WORKERS must be a whole number, got 'two'"),
    ({"CVAT_USERNAME": "bot"}, "CVAT service account: a password is needed for user 'bot'"),
    ({"DETR_TRAINER_TOKEN": ""}, "DETR_TRAINER_TOKEN is not set, and the DETR gateway needs it"),
    ({"DETR_TRAINER_TOKEN": "0123456789"}, "DETR_TRAINER_TOKEN is 10 characters long; use at least 16"),
])
def test_bad_settings_are_named(env, message):
    with pytest.raises(GatewayConfigError) as caught:
        GatewaySettings.from_env({**BASE_ENV, **env})
    assert message in str(caught.value)


def test_the_command_refuses_to_start_without_its_settings(monkeypatch, capsys):
    monkeypatch.delenv("CVAT_URL", raising=False)
    monkeypatch.setenv("DETR_TRAINER_URL", "http://trainer:8080")
    assert gateway_main([]) == 2
    assert "detr-gateway: CVAT_URL must be set" in capsys.readouterr().err


def test_the_command_refuses_to_start_with_a_typo_in_the_training_defaults(monkeypatch, capsys):
    for name, value in BASE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DETR_TRAIN_DEFAULTS", '{"epochz": 30}')
    served = []
    monkeypatch.setattr("cvat_plugin.gateway.app.uvicorn.run", lambda app, **kwargs: served.append(app))
    assert gateway_main([]) == 2 and served == []
    assert "detr-gateway: DETR_TRAIN_DEFAULTS: unknown option 'epochz'; known options: weights, recipe, " \
           "model_preset, model, epochs," in capsys.readouterr().err


def test_the_command_listens_on_localhost_unless_told(monkeypatch):
    """A bare `detr-gateway` is not open to the network; the container passes --host 0.0.0.0 itself."""
    monkeypatch.setenv("CVAT_URL", "http://cvat:8080")
    monkeypatch.setenv("DETR_TRAINER_URL", "http://trainer:8080")
    served = {}
    monkeypatch.setattr("cvat_plugin.gateway.app.uvicorn.run", lambda app, **kwargs: served.update(kwargs))
    assert gateway_main([]) == 0
    assert served["host"] == "127.0.0.1"


def test_a_gateway_with_the_wrong_trainer_token_says_so_to_the_admin_not_to_log_in(tmp_path):
    with sandbox(tmp_path, trainer_token="not-the-trainers-token-0123") as box:
        cookies = box.login(box.alice)
        answer = requests.get(f"{box.api}/jobs", params={"task": box.task.id}, cookies=cookies, timeout=30)
        assert answer.status_code == 502, "a 401 would tell the user to log in to CVAT again"
        assert "the DETR trainer does not accept the gateway's token; ask a CVAT admin" in error_of(answer)


def test_the_trainer_token_never_reaches_the_browser(box):
    cookies = box.login(box.alice)
    for path, params in (("/health", None), (f"/tasks/{box.task.id}/summary", None), ("/jobs", {"task": box.task.id}),
                         ("/models", {"task": box.task.id})):
        answer = requests.get(f"{box.api}{path}", params=params, cookies=cookies, timeout=30)
        assert answer.status_code == 200 and TRAINER_TOKEN not in answer.text
        assert TRAINER_TOKEN not in str(answer.headers)


def test_signatures_follow_cvats_recipe():
    body = b'{"event": "ping"}'
    good = "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert signature_ok("k", body, good) and signature_ok("k", body, f" {good} ")
    assert not signature_ok("k", body + b" ", good) and not signature_ok("k", body, None)
    assert not signature_ok("k", body, good.upper()) and not signature_ok("k", body, "sha256=é")
