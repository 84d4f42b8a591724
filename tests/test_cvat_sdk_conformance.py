"""The real cvat-sdk (same minor version as the fake's declared server, 2.42) talks to the fake
CVAT: proof that the fake speaks CVAT's protocol and payloads, not just our client's."""

from __future__ import annotations

import json
import zipfile

import pytest
import requests

from tests.fakes.cvat_server import CSRF_CHARS, FakeCvat
from tests.fakes.cvat_tasks import add_shapes_task

cvat_sdk = pytest.importorskip("cvat_sdk", reason="cvat-sdk is in the dev extra")


@pytest.fixture
def sdk_client(fake_cvat):
    from cvat_sdk import make_client

    fake_cvat.add_user("alice", "alice-password")
    client = make_client(fake_cvat.url, credentials=("alice", "alice-password"))
    client.config.status_check_period = 0.01
    yield client
    client.close()


def test_sdk_accepts_the_declared_server_version(fake_cvat, sdk_client):
    assert str(sdk_client.get_server_version()) == fake_cvat.version
    assert str(sdk_client.get_server_version()).split(".")[:2] == cvat_sdk.__version__.split(".")[:2]


def test_sdk_exports_a_task_dataset(fake_cvat, sdk_client, tmp_path):
    owner = fake_cvat.users[1]
    task = add_shapes_task(fake_cvat, owner, num_frames=5, subset="Train", deleted_frames=(2,))
    sdk_task = sdk_client.tasks.retrieve(task.id)
    assert sdk_task.name == "shapes" and sdk_task.size == 5

    sdk_task.export_dataset("COCO 1.0", tmp_path / "dataset.zip", include_images=True)

    with zipfile.ZipFile(tmp_path / "dataset.zip") as archive:
        names = archive.namelist()
        coco = json.loads(archive.read("annotations/instances_Train.json"))
    assert sorted(n for n in names if n.startswith("images/")) == [
        f"images/Train/frame_{i:04d}.jpg" for i in (0, 1, 3, 4)]
    assert [c["name"] for c in coco["categories"]] == ["car", "person", "bike"]
    assert fake_cvat.count("POST", f"/api/tasks/{task.id}/dataset/export") == 1


def test_sdk_reads_labels_meta_jobs_and_writes_annotations(fake_cvat, sdk_client):
    from cvat_sdk import models

    owner = fake_cvat.users[1]
    labels = [{"name": f"label {i}", "id": 300 + 11 * i} for i in range(14)]  # 2 pages of 10
    task = add_shapes_task(fake_cvat, owner, num_frames=3, labels=[label["name"] for label in labels],
                           deleted_frames=(1,))
    for label, spec in zip(task.labels, labels):
        label.id = spec["id"]
    sdk_task = sdk_client.tasks.retrieve(task.id)

    assert [label.name for label in sdk_task.get_labels()] == [label["name"] for label in labels]
    meta = sdk_task.get_meta()
    assert meta.deleted_frames == [1] and [f.name for f in meta.frames] == [f.name for f in task.frames]
    assert len(sdk_task.get_jobs()) == 1

    shape = models.LabeledShapeRequest(type="rectangle", frame=0, label_id=labels[3]["id"],
                                       points=[1.0, 2.0, 10.0, 20.0], source="auto")
    sdk_task.set_annotations(models.LabeledDataRequest(shapes=[shape]))
    annotations = sdk_task.get_annotations()
    assert [(s.label_id, s.points) for s in annotations.shapes] == [(labels[3]["id"], [1.0, 2.0, 10.0, 20.0])]


def test_a_task_without_data_as_the_sdk_sees_it(fake_cvat, sdk_client):
    """A task created without data has null size, mode and data, which cvat-sdk 2.42's typed models
    refuse (so our code checks ``size`` on the raw JSON); its annotations are an HTML 400."""
    from cvat_sdk.api_client.exceptions import ApiException, ApiTypeError

    task = fake_cvat.add_task("no data", owner=fake_cvat.users[1], labels=["car"], frames=[])
    with pytest.raises(ApiTypeError, match="'size'"):
        sdk_client.tasks.retrieve(task.id)
    raw = json.loads(sdk_client.api_client.tasks_api.retrieve(task.id, _parse_response=False)[1].data)
    assert (raw["size"], raw["mode"], raw["data"], raw["jobs"]["count"]) == (None, None, None, 0)
    with pytest.raises(ApiException) as caught:
        sdk_client.api_client.tasks_api.retrieve_annotations(task.id)
    assert caught.value.status == 400 and caught.value.headers["Content-Type"] == "text/html"


def test_sdk_reads_auto_annotated_shapes_with_a_null_group(fake_cvat, sdk_client):
    task = add_shapes_task(fake_cvat, fake_cvat.users[1], num_frames=2)
    task.shapes[0].group, task.shapes[0].source = None, "auto"
    shape = sdk_client.tasks.retrieve(task.id).get_annotations().shapes[0]
    assert (shape.group, shape.source) == (None, "auto")


def test_sdk_exports_when_the_request_finishes_on_the_first_poll(tmp_path):
    """A small export is finished before the first poll; the expiry is fixed at finish + 24 h."""
    from datetime import timedelta

    from cvat_sdk import make_client

    with FakeCvat(tmp_path / "fake", polls_per_state=0) as fake:
        alice = fake.add_user("alice", "alice-password")
        task = add_shapes_task(fake, alice, num_frames=3)
        with make_client(fake.url, credentials=("alice", "alice-password")) as client:
            client.config.status_check_period = 0.01
            client.tasks.retrieve(task.id).export_dataset("COCO 1.0", tmp_path / "dataset.zip", include_images=True)
            (rq_id,) = fake.requests
            polls = [client.api_client.requests_api.retrieve(rq_id)[0] for _ in range(2)]
    assert zipfile.is_zipfile(tmp_path / "dataset.zip")
    assert fake.count("GET", "/api/requests/.+") == 3  # the SDK's one poll, then ours
    assert polls[0].status.value == "finished" and polls[0].expiry_date == polls[1].expiry_date
    assert polls[0].expiry_date - polls[0].finished_date == timedelta(days=1)


def test_sdk_sees_an_unknown_request_as_an_html_404(fake_cvat, sdk_client):
    from cvat_sdk.api_client.exceptions import NotFoundException

    with pytest.raises(NotFoundException) as caught:
        sdk_client.api_client.requests_api.retrieve("action=export&target=task&target_id=1&format=COCO_1~0")
    assert caught.value.headers["Content-Type"] == "text/html"


def test_sdk_login_gets_django_cookies_and_its_csrf_token_works_masked(fake_cvat, sdk_client):
    """The SDK logs in with a session; Django also accepts the CSRF header as a masked 64-character token."""
    import secrets

    from cvat_sdk import models

    task = add_shapes_task(fake_cvat, fake_cvat.users[1], num_frames=2)
    sdk_client.tasks.retrieve(task.id).set_annotations(models.LabeledDataRequest(shapes=[]))  # a PUT with CSRF
    assert task.shapes == []
    login = requests.post(f"{fake_cvat.url}/api/auth/login", json={"username": "alice", "password": "alice-password"})
    assert {"sessionid", "csrftoken", "sessionfresh"} <= set(login.cookies.keys())
    secret = login.cookies["csrftoken"]
    mask = "".join(secrets.choice(CSRF_CHARS) for _ in range(32))
    masked = mask + "".join(CSRF_CHARS[(CSRF_CHARS.index(s) + CSRF_CHARS.index(m)) % len(CSRF_CHARS)]
                            for s, m in zip(secret, mask))
    for header, status in ((masked, 200), ("0" * 64, 403)):
        answer = requests.put(f"{fake_cvat.url}/api/tasks/{task.id}/annotations", json={"shapes": []},
                              cookies=login.cookies, headers={"X-CSRFToken": header})
        assert answer.status_code == status, answer.text
