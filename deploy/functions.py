"""The Nuclio function configs of the detector and the trainer, for Nuclio's local platform
(Docker: hostPath volume, ``--gpus all``, restart policy) and its kube platform (a ReadWriteMany
claim, GPU requests on GPU nodes, the trainer's token from a Secret, its service account).

Both platforms and both devices come from the same builders, so they differ only where the
platform or the device does: same image builds, handlers, triggers, env contract and mount path.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Mapping

from deploy import settings as names
from deploy.yamltext import Item, Key

REPO = Path(__file__).resolve().parents[1]
PLATFORMS = ("local", "kube")
TORCH = "torch==2.6.0 torchvision==0.21.0"
TORCH_INDEX = {False: "https://download.pytorch.org/whl/cpu", True: "https://download.pytorch.org/whl/cu124"}
DETR_R50 = "https://dl.fbaipublicfiles.com/detr/detr-r50-e632da11.pth"
RESNET50 = "https://download.pytorch.org/models/resnet50-0676ba61.pth"
#: CVAT's Models page and its automatic annotation read these; Nuclio's project label comes from nuctl.
DETECTOR_ANNOTATIONS = {"name": "DETR R50 (COCO)", "type": "detector", "framework": "pytorch"}


def coco_label_spec() -> str:
    """CVAT's ``spec`` annotation of the base detector: the official checkpoint's 80 COCO labels with
    their category ids, read from ``detr/official.py`` (the one list) without importing torch."""
    source = REPO / "detr" / "official.py"
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["COCO_CATEGORY_NAMES"]:
            names_by_id = ast.literal_eval(node.value)
            break
    else:
        raise RuntimeError(f"{source} no longer assigns COCO_CATEGORY_NAMES; update deploy/functions.py")
    rows = [json.dumps({"id": i, "name": name, "type": "rectangle"}).replace("{", "{ ").replace("}", " }")
            for i, name in enumerate(names_by_id) if name]
    return "[\n" + ",\n".join(f"  {row}" for row in rows) + "\n]\n"


def _header(kind: str, platform: str, gpu: bool, path: str, settings: Mapping[str, Any]) -> list[str]:
    project = settings["projects"][kind]
    if platform == "local":
        deploy = [f"  nuctl create project {project} --platform local",
                  f"  nuctl deploy --project-name {project} --path . --file {path} --platform local"]
    else:
        namespace = settings["kubernetes"]["namespace"]
        deploy = [f"  nuctl create project {project} --platform kube --namespace {namespace}",
                  f"  nuctl deploy --project-name {project} --path . --file {path} --platform kube "
                  f"--namespace {namespace} --registry <registry>"]
    return [f"Nuclio's {'Kubernetes (kube)' if platform == 'kube' else 'Docker (local)'} platform, "
            f"{'GPU' if gpu else 'CPU'}. The build path must be the repository root:",
            "the image needs detr/, cvat_plugin/ and serverless/.", *deploy]


def _build(kind: str, gpu: bool, settings: Mapping[str, Any]) -> dict:
    weights = names.WEIGHTS_DIR
    download = f"mkdir -p {weights} && curl -fsSL -o {weights}/detr-r50-e632da11.pth {DETR_R50}"
    apt = ("apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python-is-python3 curl "
           "ca-certificates && rm -rf /var/lib/apt/lists/*")
    pre_copy: list[Any] = [{"kind": "ENV", "value": "DEBIAN_FRONTEND=noninteractive"}]
    if gpu:
        pre_copy += [
            Item({"kind": "ENV", "value": "NVIDIA_VISIBLE_DEVICES=all"},
                 "Let the NVIDIA container toolkit expose the GPUs (PyTorch's wheels bring the CUDA libraries)"),
            {"kind": "ENV", "value": "NVIDIA_DRIVER_CAPABILITIES=compute,utility"},
        ]
    pre_copy += [
        Item({"kind": "RUN", "value": apt},
             "Ubuntu 22.04's python3 is 3.10, the runtime above; Nuclio calls it as `python`"),
        {"kind": "RUN", "value": "ln -sf /usr/bin/pip3 /usr/local/bin/pip"},
        Item({"kind": "RUN", "value": f"pip install --no-cache-dir {TORCH} --index-url {TORCH_INDEX[gpu]}"},
             "PyTorch before the project, so this large layer stays cached across code changes"),
    ]
    if kind == "detector":
        pre_copy.append(Item({"kind": "RUN", "value": download},
                             "The official DETR-R50 COCO checkpoint, downloaded at build time like CVAT's pretrained "
                             "functions"))
    else:
        download += f" && curl -fsSL -o {weights}/resnet50-0676ba61.pth {RESNET50}"
        pre_copy.append(Item({"kind": "RUN", "value": download},
                             'Starting weights (option "weights"): the official DETR-R50 COCO checkpoint and',
                             "torchvision's ImageNet ResNet-50, downloaded at build time; jobs never download"))
    pre_copy.append({"kind": "WORKDIR", "value": "/opt/nuclio"})
    if kind == "detector":
        project = Item({"kind": "RUN", "value": "pip install --no-cache-dir /opt/nuclio"},
                       "The project (copied from the build path to /opt/nuclio) and its remaining dependencies")
    else:
        project = Item({"kind": "RUN", "value": "pip install --no-cache-dir '/opt/nuclio[kubeflow]'"},
                       "The project (copied from the build path to /opt/nuclio) and its remaining dependencies, with",
                       "the Kubernetes client of DETR_TRAIN_BACKEND=kubeflow")
    post_copy: list[Any] = [project]
    if kind == "detector":
        post_copy.append(Item({"kind": "RUN", "value": f"detr import-checkpoint {weights}/detr-r50-e632da11.pth "
                                                       f"--labels coco --out {names.BASE_MODEL}"},
                              "The checkpoint as a model file: 91 class slots indexed by COCO category id, names "
                              "from COCO"))
    return {"image": names.variant_image(settings["images"][kind], gpu), "baseImage": "ubuntu:22.04",
            Key("directives", gap=True): {"preCopy": pre_copy, "postCopy": post_copy}}


def _trigger(kind: str) -> dict:
    if kind == "detector":
        workers = Key("numWorkers", "One process with the model; on CPU, PyTorch uses every core for each frame")
        body = {Key("maxRequestBodySize", "32 MiB: base64 frames of large images exceed Nuclio's 4 MiB default"):
                32 * 1024 * 1024}
    else:
        workers = Key("numWorkers", "Exactly one: the job queue and the training thread live in the worker process")
        body = {"maxRequestBodySize": 1024 * 1024}
    return {"myHttpTrigger": {"kind": "http", workers: 1, "workerAvailabilityTimeoutMilliseconds": 10000,
                              "attributes": body}}


def _home_volume(platform: str, settings: Mapping[str, Any]) -> dict:
    home, volume = settings["home"], settings["volume"]
    source = {"hostPath": {"path": home}} if platform == "local" else {"persistentVolumeClaim": {"claimName": volume}}
    return {"volume": {"name": volume, **source}, "volumeMount": {"name": volume, "mountPath": home}}


def _shm_volume(platform: str, settings: Mapping[str, Any]) -> Item:
    if platform == "local":
        source, why = {"hostPath": {"path": "/dev/shm"}}, "Docker's default /dev/shm is 64 MB"
    else:
        source = {"emptyDir": {"medium": "Memory", "sizeLimit": settings["kubernetes"]["trainer"]["shm_size"]}}
        why = "a pod's default /dev/shm is 64 MB"
    return Item({"volume": {"name": "dshm", **source}, "volumeMount": {"name": "dshm", "mountPath": "/dev/shm"}},
                f"Data-loader workers pass batches through shared memory; {why}")


def _placement(kind: str, platform: str, gpu: bool, settings: Mapping[str, Any]) -> dict:
    """Resources (and on kube, node selection): the GPU limit, and the claim's requests on kube."""
    if platform == "local":
        if not gpu:
            return {}
        return {Key("resources", "Any positive GPU limit gives the container every GPU of the host (--gpus all)",
                    gap=True): {"limits": {names.GPU_RESOURCE: 1}}}
    kube = settings["kubernetes"]
    resources = {part: dict(values) for part, values in kube[kind]["resources"].items()}
    placement: dict = {Key("resources", gap=True): resources}
    if gpu:
        for part in ("requests", "limits"):
            resources.setdefault(part, {})[names.GPU_RESOURCE] = kube[kind]["gpus"]
        nodes = kube["gpu_nodes"]
        placement[Key("nodeSelector", "GPU nodes, and their taint if they have one")] = nodes["node_selector"]
        placement["tolerations"] = nodes["tolerations"]
    placement[Key("readinessTimeoutSeconds", "Pulling the image onto a node can take minutes")] = \
        kube["readiness_timeout_s"]
    if kube["pull_secret"]:
        placement["imagePullSecrets"] = kube["pull_secret"]
    return placement


def _restart(platform: str) -> dict:
    if platform != "local":
        return {}
    return {Key("platform", gap=True): {"attributes": {"restartPolicy": {"name": "always", "maximumRetryCount": 3},
                                                       "mountMode": "volume"}}}


def detector(settings: Mapping[str, Any], *, platform: str, gpu: bool, path: str) -> tuple[list[str], dict]:
    """The base detector (the official DETR-R50 COCO checkpoint), whose image every published model reuses."""
    home = settings["home"]
    header = [f"DETR R50 trained on COCO (the official facebookresearch/detr checkpoint, 42.0 box AP) as a CVAT "
              f"detector on {'GPU' if gpu else 'CPU'}.", *_header("detector", platform, gpu, path, settings),
              f"To serve a model you trained instead, set {names.MODEL_ENV} to its model.pt under {names.HOME_ENV} and",
              "replace the spec below with its labels (publishing does both)."]
    metadata = {"name": settings["functions"]["detector"], "namespace": settings["kubernetes"]["namespace"],
                "annotations": {**DETECTOR_ANNOTATIONS, "spec": coco_label_spec()}}
    spec = {
        "description": "DETR ResNet-50 object detector trained on COCO 2017 (facebookresearch/detr), "
                       + ("optimized for GPU" if gpu else "CPU"),
        "runtime": "python:3.10",
        "handler": names.DETECTOR_HANDLER,
        Key("eventTimeout", "Inference takes well under a second on GPU and seconds on CPU; this bounds a stuck "
                            "request, not a slow one.",
            "CVAT itself gives up after 120 s (CVAT_NUCLIO_DEFAULT_TIMEOUT)."): "300s",
        "env": [
            {"name": names.HOME_ENV, "value": home},
            {"name": names.MODEL_ENV, "value": names.BASE_MODEL},
            Item({"name": names.PRECISION_ENV, "value": "auto"},
                 "auto: bf16 where the hardware runs it natively (CUDA, CPUs with AVX512-BF16 or AMX), else fp32"),
        ],
        Key("build", gap=True): _build("detector", gpu, settings),
        Key("triggers", gap=True): _trigger("detector"),
        Key("volumes", f"{names.HOME_ENV}: the volume shared with the trainer, where trained models live",
            gap=True): [_home_volume(platform, settings)],
        **_placement("detector", platform, gpu, settings),
        **_restart(platform),
    }
    return header, {"metadata": metadata, Key("spec", gap=True): spec}


def trainer(settings: Mapping[str, Any], *, platform: str, gpu: bool, path: str) -> tuple[list[str], dict]:
    """The trainer: the asynchronous job API that fine-tunes DETR on training sets under DETR_HOME."""
    kube = settings["kubernetes"]
    header = ["The DETR trainer: an asynchronous job API (POST /jobs, GET /jobs/<id>, ...) that fine-tunes DETR",
              f"on training sets under {names.HOME_ENV}/datasets, on {'GPU' if gpu else 'CPU'}.",
              *_header("trainer", platform, gpu, path, settings),
              "It has its own project: CVAT lists every function of its project as a model."]
    env: list[Any] = [{"name": names.HOME_ENV, "value": settings["home"]},
                      {"name": names.WEIGHTS_ENV, "value": names.WEIGHTS_DIR}]
    dashboard = {"name": names.DASHBOARD_ENV, "value": names.dashboard_url(settings, platform)}
    if platform == "local":
        env.append(Item(dashboard, "Publish each successful job's model as a CVAT detector through this Nuclio "
                                   "dashboard (CVAT's",
                        "compose calls it \"nuclio\"; deploy with --platform-config '{\"attributes\": {\"network\": "
                        "\"cvat_cvat\"}}'",
                        "so the trainer can reach it). Remove it to keep trained models unpublished.",
                        f"The token ({names.TOKEN_ENV}) comes from `nuctl deploy --env`, never from this file."))
    else:
        env += [
            Item(dashboard, "Publish each successful job's model as a CVAT detector through the dashboard of CVAT's "
                            "chart, in the",
                 "namespace where CVAT lists functions. Remove both to keep trained models unpublished."),
            {"name": names.NUCLIO_NAMESPACE_ENV, "value": kube["namespace"]},
            Item({"name": names.TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": kube["token_secret"],
                                                                          "key": kube["token_key"]}}},
                 "The job API's shared token, from the Secret deploy.sh creates (the gateway reads the same)"),
            *_backend_env(settings, gpu),
        ]
    spec = {
        "description": "DETR training jobs for CVAT tasks (asynchronous job API), "
                       + ("optimized for GPU" if gpu else "CPU"),
        "runtime": "python:3.10",
        Key("handler", "No eventTimeout: every request returns at once while training runs in a background",
            "thread, and a timeout would SIGKILL the worker with that thread in it."): names.TRAINER_HANDLER,
        "env": env,
        Key("build", gap=True): _build("trainer", gpu, settings),
        Key("triggers", gap=True): _trigger("trainer"),
        Key("volumes", gap=True): [
            Item(_home_volume(platform, settings),
                 f"{names.HOME_ENV}: datasets in, runs and models out; shared with the gateway and the detectors"),
            _shm_volume(platform, settings),
        ],
        **_placement("trainer", platform, gpu, settings),
    }
    if platform == "kube":
        spec[Key("serviceAccount", "May manage the Kubeflow PyTorchJobs of the multi-node backend (trainer-rbac.yaml)",
                 gap=True)] = settings["functions"]["trainer"]
        spec[Key("deploymentStrategy", "Never two trainers at once: both would resume the same jobs")] = \
            {"type": "Recreate"}
    spec[Key("minReplicas", "Never scale to zero: an idle-looking trainer may be training", gap=True)] = 1
    spec["maxReplicas"] = 1
    spec.update(_restart(platform))
    metadata = {"name": settings["functions"]["trainer"], "namespace": kube["namespace"],
                "annotations": {"name": "DETR trainer"}}
    return header, {"metadata": metadata, Key("spec", gap=True): spec}


def _backend_env(settings: Mapping[str, Any], gpu: bool) -> list[Any]:
    """The training backend's contract: local (in this pod, one process per GPU with ``auto``) or kubeflow
    (a PyTorchJob of ``nodes`` pods with ``gpus_per_node`` GPUs each, on the same claim and image)."""
    kube, env = settings["kubernetes"], names.BACKEND_ENV
    values = {
        "backend": kube["trainer"]["backend"],
        "processes": kube["trainer"]["processes"],
        "namespace": kube["namespace"],
        "image": names.image_ref(settings, names.variant_image(settings["images"]["trainer"], gpu)),
        "claim": settings["volume"],
        "nodes": str(kube["trainer"]["nodes"]),
        "gpus_per_node": str(kube["trainer"]["gpus_per_node"] if gpu else 0),
    }
    items: list[Any] = [{"name": env[key], "value": value} for key, value in values.items()]
    items[0] = Item(items[0], "Training backend: local (this pod; processes auto = one per visible GPU) or kubeflow",
                    "(a PyTorchJob of DETR_KUBE_NODES pods on the same image and claim; see the README's Scale out)")
    return items
