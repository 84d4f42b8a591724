"""Every function.yaml: the rules CVAT applies when listing functions and Nuclio's current rules."""

from __future__ import annotations

import copy
import importlib
import json
import re
from pathlib import Path

import pytest
import yaml

from detr.official import COCO_LABELS

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / "deploy/kubernetes/functions"
DETECTORS = [ROOT / "function.yaml", ROOT / "serverless/detector/function-gpu.yaml", KUBE / "detector.yaml",
             KUBE / "detector-gpu.yaml"]
TRAINERS = [ROOT / "serverless/trainer/function.yaml", ROOT / "serverless/trainer/function-gpu.yaml",
            KUBE / "trainer.yaml", KUBE / "trainer-gpu.yaml"]
ALL = DETECTORS + TRAINERS
#: GPU variant -> its CPU variant (same platform).
CPU_VARIANT = {ROOT / "serverless/detector/function-gpu.yaml": ROOT / "function.yaml",
               ROOT / "serverless/trainer/function-gpu.yaml": ROOT / "serverless/trainer/function.yaml",
               KUBE / "detector-gpu.yaml": KUBE / "detector.yaml", KUBE / "trainer-gpu.yaml": KUBE / "trainer.yaml"}
GPU = list(CPU_VARIANT)

#: nuclio pkg/processor/runtime/python: the runtimes 1.14 builds (wheels for 3.9 - 3.11 only).
RUNTIMES = ("python:3.9", "python:3.10", "python:3.11")
#: Python of the base images we use (Ubuntu 22.04 ships 3.10).
BASE_IMAGE_PYTHON = {"ubuntu:22.04": "3.10", "python:3.9": "3.9", "python:3.10": "3.10", "python:3.11": "3.11"}
#: Nuclio's handler syntax (_nuclio_wrapper.py _load_entrypoint_from_handler).
HANDLER = re.compile(r"^([\w|-]+(\.[\w|-]+)*):(\w+)$")
#: Kinds CVAT lists (cvat/apps/lambda_manager/views.py LambdaType).
CVAT_KINDS = ("detector", "interactor", "reid", "tracker")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def go_duration_s(text: str) -> float:
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a Go duration: {text!r}"
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[u] for n, u in parts)


def env(config: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in config["spec"].get("env", []) if "value" in item}


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(ROOT)))
def test_nuclio_rules(path):
    config = load(path)
    spec = config["spec"]
    assert config["metadata"]["name"] and spec["description"].strip()
    assert spec["runtime"] in RUNTIMES
    assert BASE_IMAGE_PYTHON[spec["build"]["baseImage"]] == spec["runtime"].split(":")[1]
    directives = [d["value"] for d in spec["build"]["directives"]["preCopy"]]
    assert any("python-is-python3" in d for d in directives), "Nuclio calls `python`"

    match = HANDLER.match(spec["handler"])
    assert match, spec["handler"]
    module = importlib.import_module(match.group(1))  # modules are imported from the build path = repo root
    assert callable(getattr(module, match.group(3))) and callable(getattr(module, "init_context"))
    assert (ROOT / (match.group(1).replace(".", "/") + ".py")).is_file()

    triggers = spec["triggers"].values()
    for trigger in triggers:
        assert "maxWorkers" not in trigger and trigger["numWorkers"] >= 1
    if KUBE not in path.parents:  # on kube, the Deployment restarts the pod
        restart = spec["platform"]["attributes"]["restartPolicy"]
        assert restart["name"] == "always" and restart["maximumRetryCount"] >= 1

    home = env(config)["DETR_HOME"]
    mounts = [v["volumeMount"]["mountPath"] for v in spec["volumes"]]
    assert home in mounts
    gpus = spec.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
    assert (gpus == 1) == (path in GPU)


@pytest.mark.parametrize("path", DETECTORS, ids=lambda p: str(p.relative_to(ROOT)))
def test_detectors_follow_cvats_listing_rules(path):
    config = load(path)
    annotations = config["metadata"]["annotations"]
    assert annotations["type"] in CVAT_KINDS and annotations["type"] == "detector"
    assert annotations["name"]
    labels = json.loads(annotations["spec"])
    names = [label["name"] for label in labels]
    assert len(names) == len(set(names)), "CVAT rejects non-unique labels"
    assert all(label["type"] == "rectangle" and label.get("attributes", []) == [] for label in labels)
    # The official checkpoint's 80 COCO classes, with their COCO category ids (the model's class slots).
    assert names == COCO_LABELS
    ids = [label["id"] for label in labels]
    assert ids == sorted(set(ids)) and 1 <= ids[0] and ids[-1] == 90

    spec = config["spec"]
    assert spec["handler"] == "serverless.detector.main:handler"
    (trigger,) = spec["triggers"].values()
    assert trigger["kind"] == "http" and trigger["attributes"]["maxRequestBodySize"] == 32 * 1024 * 1024
    # CVAT waits 120 s per frame; the function must not cut a slow CPU frame before that.
    assert go_duration_s(spec["eventTimeout"]) >= 120
    assert env(config)["DETR_MODEL"].endswith("model.pt")
    post_copy = " ".join(d["value"] for d in spec["build"]["directives"]["postCopy"])
    assert env(config)["DETR_MODEL"] in post_copy, "the image build must produce the model it serves"


@pytest.mark.parametrize("path", TRAINERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_trainer_runs_jobs_in_one_long_lived_worker(path):
    config = load(path)
    spec = config["spec"]
    assert spec["handler"] == "serverless.trainer.main:handler"
    assert "eventTimeout" not in spec, "a timeout SIGKILLs the worker and its training thread"
    (trigger,) = spec["triggers"].values()
    assert trigger["kind"] == "http" and trigger["numWorkers"] == 1
    assert spec["minReplicas"] == spec["maxReplicas"] == 1
    assert "type" not in config["metadata"].get("annotations", {}), "CVAT must not list the trainer as a model"
    assert "/dev/shm" in [v["volumeMount"]["mountPath"] for v in spec["volumes"]]


@pytest.mark.parametrize("gpu", GPU, ids=lambda p: str(p.relative_to(ROOT)))
def test_gpu_variants_differ_from_cpu_ones_only_where_the_device_matters(gpu):
    expected, variant = load(CPU_VARIANT[gpu]), copy.deepcopy(load(gpu))
    resources = variant["spec"].pop("resources")
    assert resources["limits"]["nvidia.com/gpu"] >= 1
    # The CPU variant's resources (kube: CPU and memory) are the GPU variant's without the GPUs.
    for part in ("requests", "limits"):
        resources.get(part, {}).pop("nvidia.com/gpu", None)
    assert {part: values for part, values in resources.items() if values} == expected["spec"].pop("resources", {})
    # On kube, GPU functions go to GPU nodes, and the multi-node backend runs GPU workers.
    for key in ("nodeSelector", "tolerations"):
        assert (key in variant["spec"]) == (KUBE in gpu.parents)
        variant["spec"].pop(key, None)
    for item in variant["spec"]["env"]:
        if item["name"] == "DETR_KUBE_GPUS_PER_NODE":
            assert int(item["value"]) >= 1
            item["value"] = "0"
        elif item["name"] == "DETR_KUBE_IMAGE":
            item["value"] = item["value"].removesuffix("-gpu")
    variant["spec"]["description"] = expected["spec"]["description"]
    build = variant["spec"]["build"]
    assert build["image"] == expected["spec"]["build"]["image"] + "-gpu"
    build["image"] = expected["spec"]["build"]["image"]
    build["directives"]["preCopy"] = [
        {**d, "value": d["value"].replace("/whl/cu124", "/whl/cpu")}
        for d in build["directives"]["preCopy"]
        if not d["value"].startswith("NVIDIA_")
    ]
    assert variant == expected
