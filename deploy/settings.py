"""The one table of deployment settings, for Docker (Nuclio's local platform, CVAT's compose) and
Kubernetes (Nuclio's kube platform, CVAT's Helm chart).

``deploy/render.py`` writes every deployment file from it: the Nuclio function configs of both
platforms, the compose override, the Kubernetes manifests, the values for CVAT's chart and the
names ``deploy.sh`` uses. The checked-in files are its output with :data:`DEFAULTS`; an admin
renders their own with a settings file that overrides some of them (usually under
``kubernetes``), e.g. ``python3 -m deploy.render --settings my-cluster.yaml --out DIR``.

Names the product's code reads (environment variables, handlers, the gateway's API prefix) are
constants here, not settings: changing one means changing the code.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from deploy import yamltext

# --- the code's contract (not settings) --------------------------------------------------------------

HOME_ENV = "DETR_HOME"
MODEL_ENV = "DETR_MODEL"
PRECISION_ENV = "DETR_PRECISION"
WEIGHTS_ENV = "DETR_WEIGHTS"
TOKEN_ENV = "DETR_TRAINER_TOKEN"
DASHBOARD_ENV = "NUCLIO_DASHBOARD_URL"
NUCLIO_NAMESPACE_ENV = "NUCLIO_NAMESPACE"
TRAINER_URL_ENV = "DETR_TRAINER_URL"
CVAT_URL_ENV = "CVAT_URL"
#: The trainer's training backend (one process, or a Kubeflow PyTorchJob across nodes) and its settings.
BACKEND_ENV = {
    "backend": "DETR_TRAIN_BACKEND",
    "processes": "DETR_TRAIN_PROCESSES",
    "namespace": "DETR_KUBE_NAMESPACE",
    "image": "DETR_KUBE_IMAGE",
    "claim": "DETR_KUBE_PVC",
    "nodes": "DETR_KUBE_NODES",
    "gpus_per_node": "DETR_KUBE_GPUS_PER_NODE",
}
DETECTOR_HANDLER = "serverless.detector.main:handler"
TRAINER_HANDLER = "serverless.trainer.main:handler"
#: The gateway's route on CVAT's host, and its API under it (cvat_plugin.gateway.app.API_PREFIX).
GATEWAY_ROUTE = "/detr/"
API_PREFIX = "/detr/api"
GATEWAY_HEALTH = f"{API_PREFIX}/health"
#: Where the images keep the starting weights and the base detector's model (build directives).
WEIGHTS_DIR = "/opt/detr/weights"
BASE_MODEL = "/opt/detr/models/detr-r50-coco/model.pt"
#: Nuclio's own names: the HTTP port of every function container, the local platform's namespace
#: (nuctl's default, so a function's container is nuclio-nuclio-<name>), the dashboard's port.
FUNCTION_PORT = 8080
LOCAL_NAMESPACE = "nuclio"
DASHBOARD_PORT = 8070
GPU_RESOURCE = "nvidia.com/gpu"
#: The Kubeflow training operator's resource the trainer's multi-node backend manages.
PYTORCHJOBS = {"group": "kubeflow.org", "resource": "pytorchjobs", "verbs": ["create", "get", "list", "delete"]}

# --- settings ----------------------------------------------------------------------------------------

DEFAULTS: dict[str, Any] = {
    # DETR_HOME: the volume the trainer, the detectors and the gateway share, as every container sees it.
    "home": "/var/lib/detr",
    "volume": "detr-home",
    # Nuclio projects: CVAT lists every function of its project as a model, so the trainer has its own.
    "projects": {"detector": "cvat", "trainer": "detr"},
    "functions": {"detector": "detr-r50-coco", "trainer": "detr-trainer"},
    "images": {
        "detector": "cvat.detr.detector:latest",
        "trainer": "cvat.detr.trainer:latest",
        "gateway": "cvat.detr.gateway:latest",
        # CVAT's UI image (a repository; its tag is CVAT's version + ui_tag_suffix) with the plugin compiled in
        "ui": "cvat/ui",
        "ui_tag_suffix": "-detr",
        # The one-shot container that makes the gateway's folders on the volume its own
        "init": "busybox:1.36",
    },
    # The UI plugin's folder in CVAT's cvat-ui/plugins (CLIENT_PLUGINS=plugins/<name>)
    "ui_plugin": "detr",
    "gateway": {"port": 8000, "uid": 1000, "writable": ["datasets", "gateway"]},
    "kubernetes": {
        # The namespace and release of CVAT's Helm chart: the chart runs Nuclio there and CVAT lists the
        # functions of that namespace (CVAT_NUCLIO_FUNCTION_NAMESPACE); everything here goes there too.
        "namespace": "cvat",
        "cvat_release": "cvat",
        # CVAT's version: the tag of the UI image built with the plugin (it must match CVAT's server)
        "cvat_version": "v2.42.0",
        # Where images are pushed (nuctl --registry, docker push) and, if different, pulled from
        "registry": "",
        "run_registry": "",
        # The Secret (type docker-registry) the functions and the gateway pull with, if the registry needs one
        "pull_secret": "",
        # A ReadWriteMany claim: the trainer, the detectors and the gateway may run on different nodes
        "storage": {"class_name": "", "size": "100Gi"},
        # The /detr/ route: CVAT's host and ingress class (the chart's ingress.hostname and ingress.className)
        "ingress": {"host": "cvat.local", "class_name": "", "tls_secret": "", "annotations": {}},
        # A fixed ClusterIP for the gateway (in the cluster's service range), which CVAT's webhook worker
        # may then reach through smokescreen; empty: Kubernetes picks one
        "gateway_ip": "",
        "gpu_nodes": {
            "node_selector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
        },
        "trainer": {
            "gpus": 1,
            "shm_size": "8Gi",
            "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "32Gi"}},
            # The training backend: local (in the trainer) or kubeflow (a PyTorchJob of `nodes` pods)
            "backend": "local",
            "processes": "auto",
            "nodes": 2,
            "gpus_per_node": 1,
        },
        "detector": {
            "gpus": 1,
            "resources": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "8Gi"}},
        },
        "gateway": {"resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "4Gi"}}},
        # Pulling a CUDA image onto a node can take minutes; Nuclio's default wait is 120 s
        "readiness_timeout_s": 900,
        "token_secret": "detr-trainer-token",
        "token_key": "token",
    },
}

#: Mappings a settings file replaces whole instead of merging into (free-form Kubernetes fields).
REPLACED = {"kubernetes.ingress.annotations", "kubernetes.gpu_nodes.node_selector",
            "kubernetes.trainer.resources", "kubernetes.detector.resources", "kubernetes.gateway.resources"}

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUANTITY = re.compile(r"\d+(\.\d+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P|m)?")
_IMAGE = re.compile(r"[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?")
_REGISTRY = re.compile(r"([a-z0-9][a-z0-9.-]*(:\d{1,5})?(/[a-z0-9._-]+)*)?")
_IP = re.compile(r"(((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d))?")


def _between(low: int, high: int) -> Callable[[Any], bool]:
    return lambda value: low <= value <= high


#: dotted path -> (check, what a valid value is)
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "home": (lambda v: v.startswith("/") and " " not in v, "an absolute path"),
    "gateway.port": (_between(1, 65535), "a port, 1 to 65535"),
    "gateway.uid": (_between(1, 65535), "a user id, 1 to 65535"),
    "kubernetes.namespace": (_DNS_LABEL.fullmatch, "a Kubernetes namespace (lower-case DNS label)"),
    "kubernetes.cvat_release": (_DNS_LABEL.fullmatch, "a Helm release name (lower-case DNS label)"),
    "kubernetes.cvat_version": (re.compile(r"[A-Za-z0-9._-]{1,100}").fullmatch, "an image tag such as v2.42.0"),
    "kubernetes.registry": (_REGISTRY.fullmatch, "a registry such as registry.example.com:5000/detr, no scheme"),
    "kubernetes.run_registry": (_REGISTRY.fullmatch, "a registry such as registry.example.com:5000/detr, no scheme"),
    "kubernetes.storage.size": (_QUANTITY.fullmatch, "a Kubernetes quantity such as 100Gi"),
    "kubernetes.trainer.shm_size": (_QUANTITY.fullmatch, "a Kubernetes quantity such as 8Gi"),
    "kubernetes.ingress.host": (_DNS_NAME.fullmatch, "CVAT's host name (the chart's ingress.hostname)"),
    "kubernetes.pull_secret": (lambda v: not v or _DNS_NAME.fullmatch(v), "a Secret's name, or empty"),
    "kubernetes.gateway_ip": (_IP.fullmatch, "an IPv4 address in the cluster's service range, or empty"),
    "kubernetes.trainer.gpus": (_between(1, 16), "a GPU count, 1 to 16"),
    "kubernetes.detector.gpus": (_between(1, 16), "a GPU count, 1 to 16"),
    "kubernetes.trainer.nodes": (_between(1, 64), "a node count, 1 to 64"),
    "kubernetes.trainer.gpus_per_node": (_between(1, 16), "a GPU count, 1 to 16"),
    "kubernetes.trainer.backend": (lambda v: v in ("local", "kubeflow"), "local or kubeflow"),
    "kubernetes.trainer.processes": (lambda v: v == "auto" or (v.isdigit() and 1 <= int(v) <= 64),
                                     "auto (one process per visible GPU) or a count, 1 to 64"),
    "kubernetes.readiness_timeout_s": (_between(60, 3600), "seconds, 60 to 3600"),
}
for _name in ("detector", "trainer", "gateway", "init"):
    RULES[f"images.{_name}"] = (_IMAGE.fullmatch, "an image name such as cvat.detr.trainer:latest")


class SettingsError(ValueError):
    """A settings file is unreadable or names or sets a setting wrongly; the message says which."""


def load(path: Optional[Path] = None) -> dict[str, Any]:
    """:data:`DEFAULTS`, overridden by the YAML mapping in ``path`` (if any), checked."""
    if path is None:
        return merge({})
    try:
        overrides = yamltext.read(Path(path).read_text(encoding="utf-8"))
    except (OSError, yamltext.YAMLError) as e:
        raise SettingsError(f"cannot read the settings file {path}: {e}") from e
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, dict):
        raise SettingsError(f"{path}: a settings file is a mapping of settings to override, e.g. "
                            f"'kubernetes: {{namespace: cvat, registry: registry.example.com/detr}}'")
    try:
        return merge(overrides)
    except SettingsError as e:
        raise SettingsError(f"{path}: {e}") from None


def merge(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """:data:`DEFAULTS` with ``overrides`` (same structure) applied and every value checked."""
    settings = copy.deepcopy(DEFAULTS)
    _merge_into(settings, overrides, "")
    _check(settings, "")
    return settings


def _merge_into(target: dict[str, Any], overrides: Mapping[str, Any], prefix: str) -> None:
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if key not in target:
            known = ", ".join(f"{prefix}{name}" for name in target)
            raise SettingsError(f"unknown setting {path!r}; known settings here: {known}")
        default = target[key]
        if isinstance(default, dict) and path not in REPLACED:
            if not isinstance(value, dict):
                raise SettingsError(f"setting {path!r} is a mapping of {', '.join(default)}; got {value!r}")
            _merge_into(default, value, f"{path}.")
        elif type(value) is not type(default):
            raise SettingsError(f"setting {path!r} must be a {type(default).__name__} like {default!r}; got {value!r}")
        else:
            target[key] = copy.deepcopy(value)


def _check(settings: Mapping[str, Any], prefix: str) -> None:
    for key, value in settings.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in REPLACED:
            _check(value, f"{path}.")
        elif path in RULES and not RULES[path][0](value):
            raise SettingsError(f"setting {path!r} must be {RULES[path][1]}; got {value!r}")


# --- names derived from the settings ------------------------------------------------------------------


def image_ref(settings: Mapping[str, Any], image: str, *, pull: bool = True) -> str:
    """``image`` as the cluster pulls it (``pull``) or as it is pushed: behind the registry, if any."""
    kube = settings["kubernetes"]
    registry = (kube["run_registry"] or kube["registry"]) if pull else kube["registry"]
    return f"{registry}/{image}" if registry else image


def ui_image(settings: Mapping[str, Any], version: str) -> str:
    """CVAT's UI image with the plugin, for CVAT ``version``."""
    return f"{settings['images']['ui']}:{version}{settings['images']['ui_tag_suffix']}"


def variant_image(image: str, gpu: bool) -> str:
    """The GPU build of ``image`` is tagged ``<tag>-gpu``, as CVAT tags its GPU functions."""
    return f"{image}-gpu" if gpu else image


def dashboard_url(settings: Mapping[str, Any], platform: str) -> str:
    """The Nuclio dashboard as the trainer reaches it: CVAT's compose service, or the chart's service."""
    host = "nuclio" if platform == "local" else f"{settings['kubernetes']['cvat_release']}-nuclio-dashboard"
    return f"http://{host}:{DASHBOARD_PORT}"


def trainer_url(settings: Mapping[str, Any], platform: str) -> str:
    """The trainer function's HTTP trigger as the gateway reaches it (Nuclio names its container or service)."""
    prefix = f"nuclio-{LOCAL_NAMESPACE}" if platform == "local" else "nuclio"
    return f"http://{prefix}-{settings['functions']['trainer']}:{FUNCTION_PORT}"


def cvat_url(settings: Mapping[str, Any], platform: str) -> str:
    """CVAT's server as the gateway reaches it: the compose service, or the chart's backend service."""
    host = "cvat_server" if platform == "local" else f"{settings['kubernetes']['cvat_release']}-backend-service"
    return f"http://{host}:8080"


def home_init_command(settings: Mapping[str, Any]) -> str:
    """The shell line that gives the gateway's folders on the shared volume to its unprivileged user."""
    folders = " ".join(f"{settings['home']}/{name}" for name in settings["gateway"]["writable"])
    uid = settings["gateway"]["uid"]
    return f"mkdir -p {folders} && chown {uid}:{uid} {folders}"
