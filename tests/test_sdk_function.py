"""cvat_plugin.cvat.sdk_function: the cvat-sdk auto-annotation interface over a trained model, and
cvat-sdk's own annotate_task driving it against the fake CVAT."""

from __future__ import annotations

import importlib

import pytest

from tests.fakes.cvat_tasks import make_frames
from tests.fakes.trained_models import add_model

cvataa = pytest.importorskip("cvat_sdk.auto_annotation")

LABELS = ["car", "person", "bike"]


class Context(cvataa.DetectionFunctionContext):
    def __init__(self, conf_threshold=None):
        self._conf_threshold = conf_threshold

    frame_name = "frame.jpg"
    conv_mask_to_poly = False

    @property
    def conf_threshold(self):
        return self._conf_threshold


@pytest.fixture
def model_folder(tmp_path):
    # always "person" (p ~ 0.993) in the middle half of the image; calibrated threshold 0.995
    return add_model(tmp_path / "home", "task-7-v1", LABELS, winner=1, threshold=0.995)


def load_function(**parameters):
    """What cvat-cli does with --function-module M -p NAME=TYPE:VALUE."""
    module = importlib.import_module("cvat_plugin.cvat.sdk_function")
    return module.create(**parameters)


def test_spec_comes_from_the_models_labels(model_folder, tmp_path):
    function = load_function(model=str(model_folder / "model.pt"))
    assert [(label.name, label.id, label.type) for label in function.spec.labels] == [
        ("car", 0, "rectangle"), ("person", 1, "rectangle"), ("bike", 2, "rectangle")]
    slots = add_model(tmp_path / "home", "coco-like", ["", "person", ""])
    assert [label.name for label in load_function(model=str(slots)).spec.labels] == ["person"]


def test_detect_uses_the_context_threshold_else_the_calibrated_one(model_folder):
    from PIL import Image

    function = load_function(model=str(model_folder))
    image = Image.new("RGB", (200, 100))
    assert function.detect(Context(None), image) == []  # 0.993 < calibrated 0.995
    [shape] = function.detect(Context(0.5), image)
    assert shape.label_id == 1 and shape.type.value == "rectangle"
    assert shape.points == pytest.approx([50.0, 25.0, 150.0, 75.0], abs=0.01)
    assert function.detect(Context(0.999), image) == []


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_precision_is_a_parameter(model_folder, precision):
    """``-p precision=str:fp32`` reaches the detector; both precisions find the same box."""
    from PIL import Image

    function = load_function(model=str(model_folder), precision=precision)
    assert function._detector.precision == precision
    [shape] = function.detect(Context(0.5), Image.new("RGB", (200, 100)))
    assert shape.points == pytest.approx([50.0, 25.0, 150.0, 75.0], abs=1.0)


def test_annotate_task_with_cvat_sdk_against_the_fake_cvat(fake_cvat, model_folder, tmp_path):
    from cvat_sdk import Client, Config
    from cvat_sdk.auto_annotation import annotate_task

    owner = fake_cvat.add_user("alice", "alice-password")
    frames, shapes = make_frames(4, 3, size=(64, 48))
    task = fake_cvat.add_task("street", owner=owner, labels=["tree", "person", "car"], frames=frames,
                              shapes=shapes, deleted_frames=(2,))
    person_id = next(label.id for label in task.labels if label.name == "person")
    with Client(fake_cvat.url, config=Config(cache_dir=tmp_path / "sdk-cache")) as client:
        client.login(("alice", "alice-password"))
        # "bike" is not in the task: cvat-cli needs --allow-unmatched-labels for such a model too
        annotate_task(client, task.id, load_function(model=str(model_folder)), clear_existing=True,
                      allow_unmatched_labels=True, conf_threshold=0.5)

    assert [(s.frame, s.label_id, s.source) for s in task.shapes] == [
        (0, person_id, "auto"), (1, person_id, "auto"), (3, person_id, "auto")]
    assert task.shapes[0].points == pytest.approx([16.0, 12.0, 48.0, 36.0], abs=0.01)
