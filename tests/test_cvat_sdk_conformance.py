"""The real cvat-sdk (same minor version as the fake's declared server, 2.42) talks to the fake
CVAT: proof that the fake speaks CVAT's protocol and payloads, not just our client's."""

from __future__ import annotations

import json
import zipfile

import pytest

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
