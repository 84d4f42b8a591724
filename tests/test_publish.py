"""Publishing trained models as CVAT detector functions through the fake Nuclio dashboard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cvat_plugin.home.models import ModelEntry, ModelNotFound, ModelStore
from cvat_plugin.nuclio.client import FunctionNotFound, NuclioClient, check_function_name
from cvat_plugin.nuclio.publish import (
    PublishError,
    PublishSettings,
    display_name,
    function_name,
    label_spec,
    publish,
    published_functions,
    unpublish,
)
from tests.fakes.trained_models import CONTAINER_HOME, add_model, base_config

LABELS = ["car", "person", "bike"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture
def nuclio(fake_nuclio):
    client = NuclioClient(fake_nuclio.url, poll_interval=0.0)
    client.deploy(base_config())  # what the admin's `nuctl deploy` of function.yaml leaves on the dashboard
    return client


def entry(model_id="task-7-v1", **card) -> ModelEntry:
    return ModelEntry(folder=Path("/x") / model_id,
                      card={"id": model_id, "task_id": 7, "version": 1, **card})


# --- naming ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_id, card, expected", [
    ("task-7-v3", {"task_id": 7, "version": 3}, "detr-task-7-v3"),
    ("task12-20250729-101500-3f2a", {"task_id": 12, "version": None}, "detr-task12-20250729-101500-3f2a"),
    ("job-20250131-142501-3f9a1c", {"task_id": None, "version": 1}, "detr-job-20250131-142501-3f9a1c"),
    ("My_Model.v2", {"task_id": None, "version": None}, "detr-my-model-v2"),
])
def test_function_names_come_from_task_and_version(model_id, card, expected):
    assert function_name(entry(model_id, **card)) == expected


def test_long_names_stay_valid_and_distinct():
    first = function_name(entry("x" * 80 + "-a", task_id=None, version=None))
    second = function_name(entry("x" * 80 + "-b", task_id=None, version=None))
    assert len(first) == len(second) == 63 and first != second
    assert check_function_name(first) == first


def test_display_name_has_task_version_and_map():
    assert display_name(entry(metrics={"AP": 0.41234}), "cars") == "DETR · cars v1 · mAP 0.412"
    assert display_name(entry(version=None, metrics={}), None) == "DETR · task 7 · mAP n/a"


def test_label_spec_uses_class_indices_and_skips_unused_slots():
    assert label_spec(["", "person", "car"]) == [
        {"id": 1, "name": "person", "type": "rectangle"}, {"id": 2, "name": "car", "type": "rectangle"}]
    with pytest.raises(PublishError, match="repeat 'car'.*non-unique"):
        label_spec(["car", "car"])


def test_settings_from_the_environment():
    settings = PublishSettings.from_env({"NUCLIO_DASHBOARD_URL": "http://nuclio:8070", "DETR_PUBLISH_DEVICE": "gpu"})
    assert settings.enabled and settings.device == "gpu" and settings.namespace == "nuclio"
    assert not PublishSettings.from_env({}).enabled
    with pytest.raises(ValueError, match="'tpu' is invalid"):
        PublishSettings(device="tpu")


# --- publish ----------------------------------------------------------------------------------


def test_publish_reuses_the_base_image_with_the_models_labels_and_path(fake_nuclio, nuclio, home):
    add_model(home, "task-7-v1", LABELS)
    store = ModelStore(home)
    publication = publish(store.entry("task-7-v1"), nuclio=nuclio, store=store)

    assert publication.function == "detr-task-7-v1" and not publication.updated
    assert fake_nuclio.builds == ["detr-r50-coco"]  # the published function was not built
    function = nuclio.get_function("detr-task-7-v1")
    base = nuclio.get_function("detr-r50-coco")
    spec, annotations = function["spec"], function["metadata"]["annotations"]
    assert function["status"]["state"] == "ready"
    assert spec["image"] == base["spec"]["image"] == "cvat.detr.detector:latest"
    assert spec["build"] == {"mode": "neverBuild"}
    assert [label["name"] for label in json.loads(annotations["spec"])] == LABELS
    assert annotations["type"] == "detector" and annotations["name"] == "DETR · cars v1 · mAP 0.412"
    assert annotations["version"] == "1" and annotations["cvat-detr/model-id"] == "task-7-v1"
    assert spec["description"].startswith("DETR · cars v1 · mAP 0.412: DETR (resnet18) trained on CVAT task 7")
    env = {item["name"]: item["value"] for item in spec["env"]}
    assert env == {"DETR_HOME": CONTAINER_HOME, "DETR_MODEL": f"{CONTAINER_HOME}/models/task-7-v1/model.pt"}
    # same volumes, triggers (minus the base's fixed host port), platform and runtime as the base
    for key in ("volumes", "platform", "runtime", "handler", "eventTimeout"):
        assert spec[key] == base["spec"][key], key
    trigger = spec["triggers"]["myHttpTrigger"]
    assert trigger["attributes"] == {"maxRequestBodySize": 33554432} and trigger["numWorkers"] == 1
    assert function["metadata"]["labels"]["nuclio.io/project-name"] == "cvat"

    card = json.loads((home / "models" / "task-7-v1" / "model.json").read_text())
    assert card["function"] == "detr-task-7-v1"
    assert card["published"]["display_name"] == "DETR · cars v1 · mAP 0.412"
    assert card["published"]["dashboard"] == fake_nuclio.url and card["published"]["device"] == "cpu"


def test_republishing_updates_and_older_versions_stay_until_unpublished(fake_nuclio, nuclio, home):
    add_model(home, "task-7-v1", LABELS)
    add_model(home, "task-7-v2", LABELS, version=2, ap=0.5)
    store = ModelStore(home)
    publish(store.entry("task-7-v1"), nuclio=nuclio, store=store)
    again = publish(store.entry("task-7-v1"), nuclio=nuclio, store=store)
    publish(store.entry("task-7-v2"), nuclio=nuclio, store=store)

    assert again.updated and fake_nuclio.count("PUT", "/api/functions/detr-task-7-v1") == 1
    assert sorted(published_functions(nuclio)) == ["task-7-v1", "task-7-v2"]

    unpublished = unpublish("detr-task-7-v1", nuclio=nuclio, store=store)
    assert [e.id for e in unpublished] == ["task-7-v1"] and unpublished[0].function is None
    assert sorted(nuclio.list_functions()) == ["detr-r50-coco", "detr-task-7-v2"]
    assert store.entry("task-7-v1").card["published"] is None
    assert store.entry("task-7-v2").function == "detr-task-7-v2"


def test_unpublish_refuses_functions_it_did_not_publish(nuclio, home):
    with pytest.raises(PublishError, match="not published by cvat-detr.*nuctl delete function detr-r50-coco"):
        unpublish("detr-r50-coco", nuclio=nuclio, store=ModelStore(home))
    assert nuclio.find_function("detr-r50-coco") is not None
    with pytest.raises(FunctionNotFound):
        unpublish("detr-task-9-v9", nuclio=nuclio, store=ModelStore(home))


@pytest.mark.parametrize("base_gpu, device, expected", [
    (False, "auto", None), (True, "auto", "1"), (False, "gpu", "1"), (True, "cpu", None)])
def test_gpu_or_cpu_as_asked(fake_nuclio, home, base_gpu, device, expected):
    nuclio = NuclioClient(fake_nuclio.url, poll_interval=0.0)
    nuclio.deploy(base_config(gpu=base_gpu))
    add_model(home, "task-7-v1", LABELS)
    store = ModelStore(home)
    publication = publish(store.entry("task-7-v1"), nuclio=nuclio, store=store, device=device)
    limits = (nuclio.get_function("detr-task-7-v1")["spec"].get("resources") or {}).get("limits") or {}
    assert limits.get("nvidia.com/gpu") == expected
    assert publication.device == ("gpu" if expected else "cpu")


def test_on_kubernetes_published_detectors_get_the_base_detectors_claim_and_gpu_nodes(fake_nuclio, home):
    # The base detector as `nuctl deploy --platform kube` sends it: the shared volume is a ReadWriteMany
    # claim, the GPU is requested on GPU nodes. The fake runs handlers, so it gets a stand-in one.
    config = yaml.safe_load((ROOT / "deploy/kubernetes/functions/detector-gpu.yaml").read_text())
    config["spec"]["handler"] = "tests.fakes.nuclio_dashboard:echo_handler"
    config["spec"]["build"]["path"] = "."
    namespace = config["metadata"]["namespace"]
    nuclio = NuclioClient(fake_nuclio.url, namespace=namespace, poll_interval=0.0)
    nuclio.deploy(config)
    add_model(home, "task-7-v1", LABELS)
    add_model(home, "task-7-v2", LABELS, version=2)
    store = ModelStore(home)

    assert publish(store.entry("task-7-v1"), nuclio=nuclio, store=store).device == "gpu"
    base, function = nuclio.get_function("detr-r50-coco"), nuclio.get_function("detr-task-7-v1")
    spec = function["spec"]
    assert function["metadata"]["namespace"] == namespace and fake_nuclio.builds == ["detr-r50-coco"]
    assert spec["volumes"] == base["spec"]["volumes"] == [{
        "volume": {"name": "detr-home", "persistentVolumeClaim": {"claimName": "detr-home"}},
        "volumeMount": {"name": "detr-home", "mountPath": CONTAINER_HOME}}]
    env = {item["name"]: item["value"] for item in spec["env"]}
    assert env["DETR_MODEL"] == f"{CONTAINER_HOME}/models/task-7-v1/model.pt", "on the claim, as the trainer wrote it"
    for key in ("resources", "nodeSelector", "tolerations", "readinessTimeoutSeconds"):
        assert spec[key] == base["spec"][key], key
    assert spec["resources"]["requests"]["nvidia.com/gpu"] == 1

    publish(store.entry("task-7-v2"), nuclio=nuclio, store=store, device="cpu")
    cpu = nuclio.get_function("detr-task-7-v2")["spec"]
    assert cpu["volumes"] == base["spec"]["volumes"]
    assert cpu["resources"] == {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}, \
        "a CPU version asks for no GPU at all, neither requested nor limited"


def test_publishing_without_the_base_function_says_how_to_deploy_it(fake_nuclio, home):
    add_model(home, "task-7-v1", LABELS)
    store = ModelStore(home)
    with pytest.raises(PublishError, match="'detr-r50-coco' is not deployed.*nuctl deploy --project-name cvat"):
        publish(store.entry("task-7-v1"), nuclio=NuclioClient(fake_nuclio.url), store=store)
    assert store.entry("task-7-v1").function is None


def test_publishing_before_the_base_image_is_built(fake_nuclio, home):
    fake_nuclio.polls_per_state = 10 ** 6
    nuclio = NuclioClient(fake_nuclio.url, poll_interval=0.0)
    nuclio.deploy(base_config(), wait=False)
    add_model(home, "task-7-v1", LABELS)
    store = ModelStore(home)
    with pytest.raises(PublishError, match="no built image yet \\(state 'building'\\)"):
        publish(store.entry("task-7-v1"), nuclio=nuclio, store=store)


def test_base_without_the_shared_volume_is_refused(fake_nuclio, home):
    config = base_config()
    config["spec"]["env"] = []
    nuclio = NuclioClient(fake_nuclio.url, poll_interval=0.0)
    nuclio.deploy(config)
    add_model(home, "task-7-v1", LABELS)
    store = ModelStore(home)
    with pytest.raises(PublishError, match="no DETR_HOME in its env"):
        publish(store.entry("task-7-v1"), nuclio=nuclio, store=store)


# --- finding models ---------------------------------------------------------------------------


def test_models_are_found_by_id_run_and_path(home, tmp_path):
    folder = add_model(home, "task-7-v1", LABELS)
    store = ModelStore(home)
    for reference in ("task-7-v1", "run-task-7-v1", str(folder), str(folder / "model.pt")):
        assert store.resolve(reference).id == "task-7-v1", reference
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(ModelNotFound, match="not a model folder under .*shared volume"):
        store.resolve(str(elsewhere))
    for reference in ("task-7-v9", "../models/task-7-v1", "models/task-7-v1"):
        with pytest.raises(ModelNotFound, match="cvat-detr models"):
            store.resolve(reference)


def test_task_name_falls_back_to_the_datasets_manifest(home):
    add_model(home, "task-7-v1", LABELS, task_name=None)
    manifest = home / "datasets" / "task-7-v1" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"source": {"task_name": "parking lot"}}))
    store = ModelStore(home)
    assert store.task_name(store.entry("task-7-v1")) == "parking lot"
