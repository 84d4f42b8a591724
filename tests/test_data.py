"""Loading COCO folders, training sets and CVAT export zips: label mapping and bad input."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detr.data import DatasetError, load_detection_data, split_records


def _coco_folder(root: Path, *, categories, images, annotations, subset="default", nested=True) -> Path:
    img_dir = root / "images" / subset if nested else root / "images"
    for im in images:
        path = img_dir / im["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (im["width"], im["height"]), (40, 80, 120)).save(path)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    doc = {"categories": categories, "images": images, "annotations": annotations}
    (root / "annotations" / f"instances_{subset}.json").write_text(json.dumps(doc))
    return root


def _ann(i, image_id, cat, bbox, **extra):
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox, "iscrowd": 0, **extra}


def _images(n, w=64, h=48, folder=""):
    return [{"id": i + 1, "file_name": f"{folder}img_{i}.png", "width": w, "height": h} for i in range(n)]


def test_sparse_category_ids_map_to_contiguous_classes_sorted_by_id(tmp_path):
    cats = [{"id": 42, "name": "truck"}, {"id": 3, "name": "car"}, {"id": 17, "name": "bus"}]
    anns = [_ann(1, 1, 42, [1, 1, 10, 10]), _ann(2, 2, 3, [2, 2, 10, 10]), _ann(3, 3, 17, [3, 3, 10, 10])]
    root = _coco_folder(tmp_path, categories=cats, images=_images(4), annotations=anns)
    data = load_detection_data(root, split=False)
    assert data.labels == ["car", "bus", "truck"]
    by_id = {r.image_id: r.labels.tolist() for r in data.train}
    assert by_id == {1: [2], 2: [0], 3: [1], 4: []}  # image 4 kept as a negative


def test_labels_json_decides_the_class_order_by_name(tmp_path):
    cats = [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}]
    root = _coco_folder(
        tmp_path,
        categories=cats,
        images=_images(2),
        annotations=[_ann(1, 1, 1, [1, 1, 5, 5]), _ann(2, 2, 2, [1, 1, 5, 5])],
    )
    (root / "labels.json").write_text(
        json.dumps([{"id": 7, "name": "person"}, {"id": 9, "name": "bike"}, {"id": 11, "name": "car"}])
    )
    data = load_detection_data(root, split=False)
    assert data.labels == ["person", "bike", "car"]
    assert {r.image_id: r.labels.tolist() for r in data.train} == {1: [2], 2: [0]}


def test_crowd_degenerate_and_outside_boxes(tmp_path):
    anns = [
        _ann(1, 1, 1, [5, 5, 10, 10]),
        _ann(2, 1, 1, [5, 5, 10, 10], iscrowd=1),
        _ann(3, 1, 1, [5, 5, 0, 10]),  # zero width
        _ann(4, 1, 1, [50, 40, 30, 30]),  # partly outside a 64x48 image: clipped
        _ann(5, 1, 1, [100, 100, 5, 5]),  # fully outside: dropped
    ]
    root = _coco_folder(tmp_path, categories=[{"id": 1, "name": "a"}], images=_images(1), annotations=anns)
    data = load_detection_data(root, split=False)
    r = data.train[0]
    np.testing.assert_allclose(r.boxes, [[5, 5, 15, 15], [50, 40, 64, 48]])
    assert any("zero area" in w for w in data.warnings)


def test_missing_and_corrupt_images_are_skipped_with_warnings(tmp_path):
    images = _images(4)
    root = _coco_folder(
        tmp_path, categories=[{"id": 1, "name": "a"}], images=images[:3], annotations=[_ann(1, 1, 1, [1, 1, 5, 5])]
    )
    (root / "images" / "default" / "img_2.png").write_bytes(b"not an image")
    doc = json.loads((root / "annotations" / "instances_default.json").read_text())
    doc["images"].append(images[3])  # never written: missing
    (root / "annotations" / "instances_default.json").write_text(json.dumps(doc))
    data = load_detection_data(root, split=False)
    assert sorted(r.image_id for r in data.train) == [1, 2]
    assert any("not found" in w and "img_3.png" in w for w in data.warnings)
    assert any("img_2.png" in w and "cannot read" in w for w in data.warnings)
    assert data.skipped == ["img_2.png", "img_3.png"]


def test_the_same_picture_listed_twice_is_refused_not_split_into_train_and_val(tmp_path):
    images = _images(4)
    root = _coco_folder(tmp_path, categories=[{"id": 1, "name": "a"}], images=images,
                        annotations=[_ann(1, 1, 1, [1, 1, 5, 5])])
    doc = json.loads((root / "annotations" / "instances_default.json").read_text())
    doc["images"].append({**images[2], "id": 9})
    (root / "annotations" / "instances_default.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="instances_default.json: image 'img_2.png' is listed twice; keep one"):
        load_detection_data(root)


def test_pictures_in_both_explicit_subsets_are_said_aloud(tmp_path):
    cats = [{"id": 1, "name": "a"}]
    _coco_folder(tmp_path, categories=cats, images=_images(3), annotations=[], subset="Train", nested=False)
    _coco_folder(tmp_path, categories=cats, images=_images(2), annotations=[], subset="Validation", nested=False)
    data = load_detection_data(tmp_path)
    assert "2 image(s) of instances_Validation.json are also in instances_Train.json (e.g. 'img_0.png'): " \
           "validation on them measures memorisation" in data.warnings


def test_unknown_category_id_is_reported(tmp_path):
    root = _coco_folder(
        tmp_path,
        categories=[{"id": 1, "name": "a"}],
        images=_images(2),
        annotations=[_ann(1, 1, 1, [1, 1, 5, 5]), _ann(2, 2, 99, [1, 1, 5, 5])],
    )
    data = load_detection_data(root, split=False)
    assert any("category id missing from the label list" in w for w in data.warnings)


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_json", "no COCO annotation file found"),
        ("empty", "no usable images"),
        ("bad_json", "cannot read JSON"),
        ("all_missing", "none are left"),
        ("missing_path", "no such file or folder"),
    ],
)
def test_bad_datasets_raise_clear_errors(tmp_path, case, message):
    root = tmp_path / "ds"
    (root / "annotations").mkdir(parents=True)
    ann = root / "annotations" / "instances_default.json"
    if case == "empty":
        ann.write_text(json.dumps({"categories": [{"id": 1, "name": "a"}], "images": [], "annotations": []}))
    elif case == "bad_json":
        ann.write_text("{truncated")
    elif case == "all_missing":
        ann.write_text(json.dumps({"categories": [{"id": 1, "name": "a"}], "images": _images(2), "annotations": []}))
    elif case == "missing_path":
        root = tmp_path / "nope"
    with pytest.raises(DatasetError, match=message):
        load_detection_data(root)


def test_cvat_zip_with_flat_images_and_sub_folders(tmp_path):
    src = _coco_folder(
        tmp_path / "src",
        categories=[{"id": 1, "name": "cat"}],
        images=_images(3, folder="cam 1/été/"),
        annotations=[_ann(1, 2, 1, [3, 3, 20, 20])],
        nested=False,
    )
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in src.rglob("*"):
            if f.is_file():
                zf.write(f, f.relative_to(src).as_posix())
    data = load_detection_data(archive, work_dir=tmp_path / "work", split=False)
    assert len(data.train) == 3 and data.labels == ["cat"]
    assert all(r.path.is_file() for r in data.train)


def test_zip_entries_outside_the_archive_are_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(DatasetError, match="outside the archive"):
        load_detection_data(archive, work_dir=tmp_path / "work")
    assert not (tmp_path / "escape.txt").exists()


def test_cvat_subsets_become_train_and_val(tmp_path):
    cats = [{"id": 1, "name": "a"}]
    _coco_folder(
        tmp_path, categories=cats, images=_images(3), annotations=[_ann(1, 1, 1, [1, 1, 5, 5])], subset="Train"
    )
    _coco_folder(tmp_path, categories=cats, images=_images(2), annotations=[], subset="Validation")
    data = load_detection_data(tmp_path)
    assert len(data.train) == 3 and len(data.val) == 2
    assert not {r.path for r in data.train} & {r.path for r in data.val}


def test_split_is_seeded_disjoint_and_keeps_one_validation_image(shapes_zip, tmp_path):
    data = load_detection_data(shapes_zip, work_dir=tmp_path, val_fraction=0.25, seed=3)
    again = load_detection_data(shapes_zip, work_dir=tmp_path, val_fraction=0.25, seed=3)
    assert [r.image_id for r in data.val] == [r.image_id for r in again.val]
    assert len(data.val) == 6 and len(data.train) == 18
    assert not {r.image_id for r in data.train} & {r.image_id for r in data.val}
    train, val = split_records(data.train[:2], val_fraction=0.01, seed=0)
    assert len(train) == 1 and len(val) == 1
    with pytest.raises(DatasetError, match="at least 2"):
        split_records(data.train[:1], val_fraction=0.5, seed=0)


def test_exif_rotated_images_are_loaded_upright(tmp_path):
    from detr.images import read_image

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 60x40, shown rotated: 40 wide, 60 high (as CVAT shows and annotates it)
    img_dir = tmp_path / "images" / "default"
    img_dir.mkdir(parents=True)
    Image.new("RGB", (60, 40), (200, 10, 10)).save(img_dir / "a.jpg", exif=exif)
    (tmp_path / "annotations").mkdir()
    doc = {
        "categories": [{"id": 1, "name": "a"}],
        "images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 60}],
        "annotations": [_ann(1, 1, 1, [5, 30, 30, 25])],
    }
    (tmp_path / "annotations" / "instances_default.json").write_text(json.dumps(doc))
    data = load_detection_data(tmp_path, split=False)
    assert (data.train[0].width, data.train[0].height) == (40, 60) and not data.warnings
    assert tuple(read_image(data.train[0].path).shape) == (3, 60, 40)
