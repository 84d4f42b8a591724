"""cvat_plugin.cvat.dataset: CVAT "COCO 1.0" exports made by the fake CVAT -> training sets."""

from __future__ import annotations

import json
import math
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from cvat_plugin.cvat.auth import LegacyToken
from cvat_plugin.cvat.client import CvatClient
from cvat_plugin.cvat.dataset import (
    TrainingSetError,
    build_training_set,
    clip_box,
    count_unsupported,
    export_task,
    rotated_extent,
)
from cvat_plugin.cvat.project_export import export_project
from cvat_plugin.cvat.split import split_by_subsets, stratified_split, subset_role
from tests.fakes.cvat_server import FakeCvat, Shape, Tag
from tests.fakes.cvat_tasks import add_shapes_task, make_frames


@pytest.fixture
def alice(fake_cvat):
    return fake_cvat.add_user("alice", "pw")


def build(fake: FakeCvat, user, task, out: Path, **kwargs) -> dict:
    """Export ``task`` through the REST API as the CLI does and build the training set in ``out``."""
    with CvatClient(fake.url, LegacyToken(user.token), poll_interval=0.001) as client:
        export = client.export_dataset(task.id, out.parent / f"{out.name}.zip")
        return build_training_set(
            export, out, labels=client.get_labels(task.id), data_meta=client.get_data_meta(task.id),
            annotations=client.get_annotations(task.id), source={"url": fake.url, "task_id": task.id}, **kwargs,
        )


def read_split(out: Path, split: str) -> dict:
    return json.loads((out / "annotations" / f"{split}.json").read_text(encoding="utf-8"))


def boxes_by_file(out: Path) -> dict[str, list[tuple[int, list[float]]]]:
    result: dict[str, list] = {}
    for split in ("train", "val"):
        doc = read_split(out, split)
        names = {image["id"]: image["file_name"] for image in doc["images"]}
        for name in names.values():
            result.setdefault(name, [])
        for ann in doc["annotations"]:
            result[names[ann["image_id"]]].append((ann["category_id"], ann["bbox"]))
    return result


# --- pure helpers ----------------------------------------------------------------------------------


def test_rotated_extent_of_a_rectangle():
    assert rotated_extent(10, 20, 30, 40, 0) == (10, 20, 30, 40)
    assert rotated_extent(10, 20, 30, 40, 180) == (10, 20, 30, 40)
    x, y, w, h = rotated_extent(0, 0, 30, 10, 90)
    assert (round(x, 6), round(y, 6), round(w, 6), round(h, 6)) == (10, -10, 10, 30)
    x, y, w, h = rotated_extent(0, 0, 10, 10, 45)
    assert w == pytest.approx(10 * math.sqrt(2)) and (x + w / 2, y + h / 2) == pytest.approx((5, 5))
    assert rotated_extent(0, 0, 30, 10, 30)[2:] == rotated_extent(0, 0, 30, 10, -30)[2:]


def test_clip_box_drops_boxes_without_area():
    assert clip_box([-5, -5, 20, 20], 10, 10) == [0, 0, 10, 10]
    assert clip_box([12, 0, 5, 5], 10, 10) is None
    assert clip_box([3, 3, 0, 5], 10, 10) is None


def test_stratified_split_is_seeded_balanced_and_disjoint():
    label_sets = [frozenset({0})] * 60 + [frozenset({1})] * 30 + [frozenset({2})] * 6 + [frozenset()] * 4
    split = stratified_split(label_sets, 0.15, seed=3)
    assert split == stratified_split(label_sets, 0.15, seed=3)
    assert split != stratified_split(label_sets, 0.15, seed=4)
    assert sum(split) == 15
    # Quotas 9, 4.5, 0.9 and 0.6 (negatives): remainders go to images with boxes first.
    val_labels = [min(labels, default=-1) for is_val, labels in zip(split, label_sets) if is_val]
    assert [val_labels.count(k) for k in (0, 1, 2, -1)] == [9, 5, 1, 0]


def test_stratified_split_keeps_one_image_each_side():
    assert stratified_split([frozenset({0}), frozenset({0})], 0.15, seed=0).count(True) == 1
    assert stratified_split([frozenset({0})] * 3, 0.9, seed=0).count(True) == 2
    with pytest.raises(ValueError, match="at least 2 images, the task has 1"):
        stratified_split([frozenset({0})], 0.15, seed=0)


def test_subset_roles():
    assert [subset_role(name) for name in ("Train", "training", "Validation", "VAL", "valid", "Test", "default",
                                           "", None)] == ["train", "train", "val", "val", "val", "test", None,
                                                          None, None]


def test_subsets_place_their_images_and_the_others_are_stratified():
    sets = [frozenset({0})] * 4 + [frozenset({1})] * 4
    is_val, method = split_by_subsets(["train", "train", "val", "test", None, None, None, None], sets, 0.25, 0)
    assert is_val[:4] == [False, False, True, None] and is_val[4:].count(True) == 1
    assert method == "subsets+stratified"
    assert split_by_subsets(["train", "val"], sets[:2], 0.5, 0) == ([False, True], "subsets")
    assert split_by_subsets(["train", "val", None], sets[:3], 0.5, 0) == ([False, True, False], "subsets+stratified")
    # Without a validation subset, the training subset gives validation images: never train = val.
    is_val, method = split_by_subsets(["train"] * 4 + ["test"], sets[:5], 0.25, 0)
    assert is_val[:4].count(True) == 1 and is_val[4] is None and method == "stratified"
    with pytest.raises(ValueError, match="none is left for training: put some tasks in the Train subset"):
        split_by_subsets(["val", "test"], sets[:2], 0.25, 0)


def test_count_unsupported_skips_deleted_frames():
    annotations = {"shapes": [{"type": "points", "frame": 0}, {"type": "polyline", "frame": 1},
                              {"type": "rectangle", "frame": 0}],
                   "tags": [{"frame": 0}, {"frame": 1}],
                   "tracks": [{"shapes": [{"type": "skeleton"}, {"type": "skeleton"}]}]}
    assert count_unsupported(annotations, deleted_frames=[1]) == {"points": 1, "tag": 1, "skeleton": 1}


# --- building from the fake's exports -------------------------------------------------------------------


def test_every_box_like_shape_becomes_one_box_and_the_rest_is_counted(fake_cvat, alice, tmp_path):
    kinds = ("rectangle", "rotated", "polygon", "mask", "ellipse")
    frames, shapes = make_frames(10, 2, seed=1, kinds=kinds)
    extra = [Shape("points", 0, -1, [3, 3, 5, 5]), Shape("polyline", 1, -2, [1, 1, 9, 9]),
             Shape("skeleton", 2, -1, [], elements=[])]
    task = fake_cvat.add_task("mixed", owner=alice, labels=["car", "person"], frames=frames,
                              shapes=shapes + extra, tags=[Tag(3, -1)])
    out = tmp_path / "dataset"
    manifest = build(fake_cvat, alice, task, out)

    kind_of = {"rectangle": "rectangle", "polygon": "polygon", "mask": "mask", "ellipse": "mask"}
    expected_kinds = Counter("rotated_rectangle" if s.rotation else kind_of[s.type] for s in shapes)
    assert manifest["converted"] == expected_kinds and set(expected_kinds) == {
        "mask", "polygon", "rectangle", "rotated_rectangle"}
    assert manifest["skipped"] == {"points": 1, "polyline": 1, "skeleton": 1, "tag": 1}
    assert any("skipped 1 points shape, 1 polyline shape, 1 skeleton shape, 1 tag" in w for w in manifest["warnings"])
    got = boxes_by_file(out)
    for shape in shapes:
        x0, y0, x1, y1 = shape.points if shape.type in ("rectangle",) else _drawn_box(shape)
        expected = [x0, y0, x1 - x0, y1 - y0]
        if shape.rotation:
            expected = list(rotated_extent(*expected, shape.rotation))
            expected = clip_box(expected, 64, 48)
        category = [label.id for label in task.labels].index(shape.label_id) + 1
        candidates = [b for c, b in got["default/" + frames[shape.frame].name] if c == category]
        tolerance = 1.5 if shape.type == "ellipse" else 1.01  # mask/ellipse extents are pixel-rounded
        assert any(all(abs(a - b) <= tolerance for a, b in zip(box, expected)) for box in candidates), (
            shape.type, expected, candidates)


def _drawn_box(shape: Shape) -> list[float]:
    """The box make_frames drew for a non-rectangle shape."""
    if shape.type == "polygon":
        xs, ys = shape.points[0::2], shape.points[1::2]
        return [min(xs), min(ys), max(xs), max(ys)]
    if shape.type == "ellipse":
        cx, cy, right, top = shape.points
        return [2 * cx - right, top, right, 2 * cy - top]
    *_, left, top, right, bottom = shape.points  # CVAT mask: inclusive pixel box
    return [left, top, right + 1, bottom + 1]


@pytest.mark.parametrize("export_includes_deleted", [True, False])
def test_deleted_frames_are_dropped(tmp_path, export_includes_deleted):
    with FakeCvat(tmp_path / "fake", export_includes_deleted=export_includes_deleted) as fake:
        user = fake.add_user("alice", "pw")
        task = add_shapes_task(fake, user, num_frames=8, deleted_frames=(1, 4))
        manifest = build(fake, user, task, tmp_path / "dataset")
    names = set(boxes_by_file(tmp_path / "dataset"))
    assert {"default/frame_0001.jpg", "default/frame_0004.jpg"}.isdisjoint(names)
    assert len(names) == 6 and manifest["images"]["train"] + manifest["images"]["val"] == 6
    assert manifest["images"]["deleted_dropped"] == 2  # counted from the task, whether the export has them or not
    assert not (tmp_path / "dataset" / "images" / "default" / "frame_0001.jpg").exists()


def test_a_single_tasks_subset_cannot_split_it(fake_cvat, alice, tmp_path):
    """In CVAT a task has one subset: its export holds only that one, so the seeded split decides."""
    task = add_shapes_task(fake_cvat, alice, num_frames=10, subset="Validation")
    manifest = build(fake_cvat, alice, task, tmp_path / "dataset")
    assert manifest["split"]["method"] == "stratified"
    assert (manifest["images"]["train"], manifest["images"]["val"]) == (8, 2)


def test_stratified_split_in_a_build_is_disjoint_and_complete(fake_cvat, alice, tmp_path):
    task = add_shapes_task(fake_cvat, alice, num_frames=40, negatives_every=5, seed=4)
    manifest = build(fake_cvat, alice, task, tmp_path / "dataset", seed=7)
    train = {i["file_name"] for i in read_split(tmp_path / "dataset", "train")["images"]}
    val = {i["file_name"] for i in read_split(tmp_path / "dataset", "val")["images"]}
    assert not train & val and len(train | val) == 40 and len(val) == 6
    assert manifest["split"] == {"method": "stratified", "val_fraction": 0.15, "seed": 7}
    assert manifest["images"]["negative"] == 8
    for name in train | val:
        assert (tmp_path / "dataset" / "images" / name).is_file()


def test_labels_keep_cvat_order_and_ids_and_the_engine_reads_the_result(fake_cvat, alice, tmp_path):
    from detr.data import load_detection_data

    frames, shapes = make_frames(12, 2, seed=5)
    labels = [{"name": "zebra", "id": 97}, {"name": "ant", "id": 3}, {"name": "unused", "id": 41}]
    task = fake_cvat.add_task("order", owner=alice, labels=labels, frames=frames, shapes=shapes)
    manifest = build(fake_cvat, alice, task, tmp_path / "dataset")
    out = tmp_path / "dataset"
    assert json.loads((out / "labels.json").read_text()) == labels
    assert read_split(out, "train")["categories"] == [{"id": 1, "name": "zebra"}, {"id": 2, "name": "ant"},
                                                      {"id": 3, "name": "unused"}]
    assert any("label 'unused' has no boxes" in w for w in manifest["warnings"])
    data = load_detection_data(out)
    assert data.labels == ["zebra", "ant", "unused"]
    assert len(data.train) + len(data.val) == 12 and not data.warnings


def test_folders_and_non_ascii_file_names(fake_cvat, alice, tmp_path):
    names = ["cam 1/ünïcode ✓.jpg", "cam 1/b.jpg", "a/b/c.png", "Ωmega.jpg", "plain.jpg"]
    frames, shapes = make_frames(5, 1, names=names)
    task = fake_cvat.add_task("names", owner=alice, labels=["thing"], frames=frames, shapes=shapes)
    build(fake_cvat, alice, task, tmp_path / "dataset")
    files = boxes_by_file(tmp_path / "dataset")
    assert sorted(files) == sorted(f"default/{name}" for name in names)
    for name in files:
        assert (tmp_path / "dataset" / "images" / name).is_file()


def test_flat_images_layout_of_older_exports(fake_cvat, alice, tmp_path):
    task = add_shapes_task(fake_cvat, alice, num_frames=4)
    export = fake_cvat.export_file(task, save_images=True)
    flat = tmp_path / "flat.zip"
    with zipfile.ZipFile(export) as src, zipfile.ZipFile(flat, "w") as dst:
        for name in src.namelist():
            dst.writestr(name.replace("images/default/", "images/"), src.read(name))
    manifest = build_training_set(flat, tmp_path / "dataset", seed=1)
    assert sorted(boxes_by_file(tmp_path / "dataset")) == [f"frame_{i:04d}.jpg" for i in range(4)]
    assert [label["name"] for label in manifest["labels"]] == ["car", "person", "bike"]


def test_small_data_warnings(fake_cvat, alice, tmp_path):
    task = add_shapes_task(fake_cvat, alice, num_frames=6, labels=("car",))
    manifest = build(fake_cvat, alice, task, tmp_path / "dataset")
    assert any(w.startswith("label 'car' has only") and "fewer than 10" in w for w in manifest["warnings"])
    assert any("only 6 images (fewer than 50)" in w for w in manifest["warnings"])


def test_manifest_records_source_and_counts(fake_cvat, alice, tmp_path):
    task = add_shapes_task(fake_cvat, alice, num_frames=10)
    manifest = build(fake_cvat, alice, task, tmp_path / "dataset")
    on_disk = json.loads((tmp_path / "dataset" / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["source"]["url"] == fake_cvat.url and manifest["source"]["task_id"] == task.id
    total = sum(len(s.points) > 0 for s in task.shapes)
    assert manifest["boxes"]["train"] + manifest["boxes"]["val"] == total
    assert sum(sum(label["boxes"].values()) for label in manifest["labels"]) == total


# --- bad input ------------------------------------------------------------------------------------------


def test_a_task_without_data_is_refused_before_the_export(fake_cvat, alice, tmp_path):
    """CVAT answers error pages for such a task's annotations and frames: ask for neither."""
    task = fake_cvat.add_task("empty", owner=alice, labels=["car"], frames=[])
    with CvatClient(fake_cvat.url, LegacyToken(alice.token)) as client, \
            pytest.raises(TrainingSetError, match=f"task {task.id} \\('empty'\\) has no images: upload images"):
        export_task(client, task.id, tmp_path / "dataset")
    assert fake_cvat.count("GET", rf"/api/tasks/{task.id}/(annotations|data/meta)") == 0
    assert not (tmp_path / "dataset").exists()


def test_an_empty_export(tmp_path):
    zipfile.ZipFile(tmp_path / "empty.zip", "w").close()
    with pytest.raises(TrainingSetError, match="is empty: the task has no frames to export"):
        build_training_set(tmp_path / "empty.zip", tmp_path / "dataset")
    assert not (tmp_path / "dataset").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_single_image_cannot_be_split(fake_cvat, alice, tmp_path):
    task = add_shapes_task(fake_cvat, alice, num_frames=1)
    with pytest.raises(TrainingSetError, match=f"task {task.id}: a train/validation split needs at least 2 images"):
        build(fake_cvat, alice, task, tmp_path / "dataset")


def test_labels_without_boxes(fake_cvat, alice, tmp_path):
    frames, _ = make_frames(4, 2)
    task = fake_cvat.add_task("no boxes", owner=alice, labels=["car", "person"], frames=frames,
                              shapes=[Shape("points", 0, -1, [1, 1, 2, 2])], tags=[Tag(1, -2)])
    with pytest.raises(TrainingSetError, match="has no boxes to train on: none of its 4 images"):
        build(fake_cvat, alice, task, tmp_path / "dataset")


def test_export_without_images(fake_cvat, alice, tmp_path):
    task = add_shapes_task(fake_cvat, alice, num_frames=3)
    with pytest.raises(TrainingSetError, match="export with images"):
        build_training_set(fake_cvat.export_file(task, save_images=False), tmp_path / "dataset")


def test_truncated_zip(fake_cvat, alice, tmp_path):
    task = add_shapes_task(fake_cvat, alice, num_frames=3)
    data = fake_cvat.export_file(task, save_images=True).read_bytes()
    broken = tmp_path / "broken.zip"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(TrainingSetError, match="not a readable zip .*export the task again"):
        build_training_set(broken, tmp_path / "dataset")


def test_zip_entries_outside_the_archive_are_refused(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("annotations/instances_default.json", "{}")
        archive.writestr("../../escape.txt", "x")
    with pytest.raises(TrainingSetError, match="points outside the archive"):
        build_training_set(evil, tmp_path / "dataset")
    assert not (tmp_path.parent / "escape.txt").exists()


def test_not_a_coco_export(tmp_path):
    other = tmp_path / "yolo.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("obj.names", "car\n")
    with pytest.raises(TrainingSetError, match="not a CVAT 'COCO 1.0' export"):
        build_training_set(other, tmp_path / "dataset")


def test_existing_output_is_kept_unless_overwrite(fake_cvat, alice, tmp_path):
    task = add_shapes_task(fake_cvat, alice, num_frames=4)
    export = fake_cvat.export_file(task, save_images=True)
    out = tmp_path / "dataset"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(TrainingSetError, match="already exists and is not empty"):
        build_training_set(export, out)
    assert (out / "keep.txt").read_text() == "mine"
    build_training_set(export, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "labels.json").is_file()


def test_bad_val_fraction(tmp_path):
    with pytest.raises(TrainingSetError, match="val_fraction=1.5 is invalid"):
        build_training_set(tmp_path / "x.zip", tmp_path / "dataset", val_fraction=1.5)


def test_a_projects_train_and_validation_tasks_give_the_split(fake_cvat, alice, tmp_path):
    """The val split is exactly the Validation task's frames; a Test task is held out; the label contract
    is the project's labels, shared by its tasks; a task without images is left out."""
    project = fake_cvat.add_project("streets", owner=alice, labels=[{"name": "car", "id": 70}, "person", "bike"])
    train = add_shapes_task(fake_cvat, alice, name="day", num_frames=8, project=project, subset="Train",
                            deleted_frames=(3,))
    val = add_shapes_task(fake_cvat, alice, name="night", num_frames=3, project=project, subset="validation",
                          seed=1)
    test = add_shapes_task(fake_cvat, alice, name="fog", num_frames=2, project=project, subset="Test", seed=2)
    fake_cvat.add_task("not uploaded yet", owner=alice, frames=[], project=project)
    fake_cvat.add_task("elsewhere", owner=alice, labels=["car"], frames=make_frames(2, 1)[0])

    with CvatClient(fake_cvat.url, LegacyToken(alice.token), poll_interval=0.001) as client:
        manifest = export_project(client, project.id, tmp_path / "dataset")

    assert manifest["split"] == {"method": "subsets", "train_subsets": ["Train"], "val_subsets": ["validation"],
                                 "held_out_subsets": ["Test"], "held_out": 2}
    val_names = sorted(image["file_name"] for image in read_split(tmp_path / "dataset", "val")["images"])
    assert val_names == [f"task_{val.id}/validation/{frame.name}" for frame in val.frames]
    train_names = sorted(image["file_name"] for image in read_split(tmp_path / "dataset", "train")["images"])
    assert train_names == [f"task_{train.id}/Train/{frame.name}" for i, frame in enumerate(train.frames) if i != 3]
    labels = json.loads((tmp_path / "dataset" / "labels.json").read_text())
    assert labels == [{"id": label.id, "name": label.name} for label in project.labels] and labels[0]["id"] == 70
    assert manifest["images"]["deleted_dropped"] == 1
    assert manifest["source"]["project_id"] == project.id and manifest["source"]["task_id"] is None
    assert [task["id"] for task in manifest["source"]["tasks"]] == [train.id, val.id, test.id]
    assert (tmp_path / "dataset" / "images" / f"task_{val.id}" / "validation").is_dir()


def test_a_project_without_images_says_so(fake_cvat, alice, tmp_path):
    project = fake_cvat.add_project("empty", owner=alice, labels=["car"])
    fake_cvat.add_task("no data", owner=alice, frames=[], project=project)
    with CvatClient(fake_cvat.url, LegacyToken(alice.token)) as client, \
            pytest.raises(TrainingSetError, match=f"project {project.id} \\('empty'\\) has no task with images"):
        export_project(client, project.id, tmp_path / "dataset")
