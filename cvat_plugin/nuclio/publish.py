"""Publish trained models as CVAT detectors: one Nuclio function per model version.

A published function reuses the image the admin built for the base detector
(``nuctl deploy`` of ``function.yaml``, named ``detr-r50-coco``): its config is the base
function's config with ``spec.image`` set to the built image and no build section, so
Nuclio deploys without building. It differs from the base only in

- ``DETR_MODEL``: the model's path on the shared volume as the detector sees it
  (the base's ``DETR_HOME`` + ``models/<id>/model.pt``);
- ``metadata.annotations.spec``: generated from the labels stored in the model file,
  the one source of labels, so CVAT maps them 1:1 by name to the task's labels;
- name, display name (task, version, validation mAP), description, and the GPU limit
  when GPU or CPU is asked for explicitly.

Volumes, resources, triggers, timeouts and restart policy are the base function's. The
model card records where the model is published. See ``shared/ARCHITECTURE.md`` section 5.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping, Optional, Sequence

from cvat_plugin.home.models import ModelEntry, ModelStore
from cvat_plugin.nuclio.client import DEFAULT_NAMESPACE, NuclioClient, check_function_name

logger = logging.getLogger(__name__)

#: Name of the base detector function in the repository's function.yaml / function-gpu.yaml.
DEFAULT_BASE_FUNCTION = "detr-r50-coco"
#: "auto": the base function's device; "gpu"/"cpu": set or drop the ``nvidia.com/gpu`` limit.
DEVICES = ("auto", "gpu", "cpu")
GPU_RESOURCE = "nvidia.com/gpu"
#: Annotations that mark a function as ours and link it to its model (CVAT ignores them).
MODEL_ANNOTATION = "cvat-detr/model-id"
TASK_ANNOTATION = "cvat-detr/task-id"
#: Trigger attributes that belong to one function only: a fixed host port, kube ingress hosts.
_PER_FUNCTION_TRIGGER_ATTRIBUTES = ("port", "ingresses")


class PublishError(Exception):
    """The model cannot be published (or unpublished); the message says what to do."""


def replace_option(body: Any) -> bool:
    """The ``replace`` of a publish request's body (empty, or ``{"replace": true|false}``), for the
    gateway and the trainer alike; :class:`ValueError` naming the expected shape otherwise."""
    body = {} if body is None else body
    if not isinstance(body, dict) or set(body) - {"replace"} or not isinstance(body.get("replace", False), bool):
        raise ValueError('the body must be empty or {"replace": true|false} (true: unpublish the other published '
                         "versions of the task or project once this one is ready)")
    return body.get("replace", False)


@dataclass(frozen=True)
class PublishSettings:
    """Where and how to publish; ``from_env`` reads the trainer's and the CLI's environment."""

    dashboard_url: Optional[str] = None
    namespace: str = DEFAULT_NAMESPACE
    base_function: str = DEFAULT_BASE_FUNCTION
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"publish device {self.device!r} is invalid; choose one of {', '.join(DEVICES)}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "PublishSettings":
        """``NUCLIO_DASHBOARD_URL``, ``NUCLIO_NAMESPACE``, ``DETR_BASE_FUNCTION``, ``DETR_PUBLISH_DEVICE``."""
        return cls(dashboard_url=env.get("NUCLIO_DASHBOARD_URL") or None,
                   namespace=env.get("NUCLIO_NAMESPACE") or DEFAULT_NAMESPACE,
                   base_function=env.get("DETR_BASE_FUNCTION") or DEFAULT_BASE_FUNCTION,
                   device=env.get("DETR_PUBLISH_DEVICE") or "auto")

    @property
    def enabled(self) -> bool:
        """Publishing is possible (and on by default) when a dashboard is configured."""
        return bool(self.dashboard_url)

    def client(self, **kwargs: Any) -> NuclioClient:
        if not self.dashboard_url:
            raise PublishError("no Nuclio dashboard configured: set NUCLIO_DASHBOARD_URL (e.g. http://nuclio:8070) "
                               "or pass --nuclio-url")
        return NuclioClient(self.dashboard_url, namespace=self.namespace, **kwargs)


@dataclass(frozen=True)
class Publication:
    function: str
    display_name: str
    device: str
    model_id: str
    updated: bool
    """True when an existing function was redeployed with this model."""


# --- naming -------------------------------------------------------------------------------------


def function_name(entry: ModelEntry) -> str:
    """``detr-task-<task>-v<version>`` for a task's model version (``detr-project-<project>-v<version>``
    for a project's), else ``detr-<model id>``; always a valid function name (a Kubernetes DNS-1123 label,
    at most 63 characters)."""
    if entry.task_id is not None and entry.version is not None:
        raw = f"detr-task-{entry.task_id}-v{entry.version}"
    elif entry.project_id is not None and entry.version is not None:
        raw = f"detr-project-{entry.project_id}-v{entry.version}"
    else:
        raw = f"detr-{entry.id}"
    name = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]+", "-", raw.lower())).strip("-")
    if len(name) > 63:  # keep it unique: a hash of the full name replaces the cut-off tail
        name = f"{name[:54].rstrip('-')}-{hashlib.sha1(raw.encode()).hexdigest()[:8]}"
    return check_function_name(name)


def display_name(entry: ModelEntry, task_name: Optional[str]) -> str:
    """What CVAT's Models page shows: ``DETR · cars v3 · mAP 0.412``."""
    task = task_name or entry.card.get("project_name") or (
        f"task {entry.task_id}" if entry.task_id is not None else entry.id)
    version = f" v{entry.version}" if entry.version is not None else ""
    ap = entry.metrics.get("AP")
    quality = f"mAP {ap:.3f}" if isinstance(ap, (int, float)) else "mAP n/a"
    return f"DETR · {task}{version} · {quality}"


def label_spec(labels: Sequence[str]) -> list[dict]:
    """CVAT's detector ``spec`` from the model's class names: ``{"id": class index, "name", "type"}``.
    Empty names are unused class slots (e.g. COCO's missing ids) and are left out."""
    named = [name for name in labels if name]
    duplicates = sorted({name for name in named if named.count(name) > 1})
    if duplicates:
        raise PublishError(f"the model's labels repeat {', '.join(map(repr, duplicates))}; CVAT refuses functions "
                           f"with non-unique labels: rename them in the task and train again")
    return [{"id": index, "name": name, "type": "rectangle"} for index, name in enumerate(labels) if name]


# --- the function config ------------------------------------------------------------------------


def base_device(base: Mapping[str, Any]) -> str:
    limits = ((base.get("spec") or {}).get("resources") or {}).get("limits") or {}
    return "gpu" if str(limits.get(GPU_RESOURCE, "0")) not in ("0", "") else "cpu"


def detector_config(entry: ModelEntry, model: Mapping[str, Any], base: Mapping[str, Any], *, name: str,
                    display: str, device: str = "auto") -> dict:
    """The Nuclio config serving ``entry`` (its loaded ``model`` file), derived from the base
    detector function ``base`` (as the dashboard returns it)."""
    base_spec = base.get("spec") or {}
    image = base_spec.get("image")
    base_name = (base.get("metadata") or {}).get("name")
    if not image:
        raise PublishError(f"the base detector function {base_name!r} has no built image yet (state "
                           f"{(base.get('status') or {}).get('state', 'unknown')!r}); wait until its deploy is "
                           f"ready, then publish again")
    env = {item.get("name"): item for item in base_spec.get("env", [])}
    container_home = (env.get("DETR_HOME") or {}).get("value")
    if not container_home:
        raise PublishError(f"the base detector function {base_name!r} has no DETR_HOME in its env, so it cannot "
                           f"read trained models; deploy it from the repository's function.yaml, which mounts the "
                           f"shared volume and sets DETR_HOME")
    model_path = PurePosixPath(container_home) / "models" / entry.folder.name / entry.model_path.name
    env["DETR_MODEL"] = {"name": "DETR_MODEL", "value": str(model_path)}

    spec = {key: copy.deepcopy(value) for key, value in base_spec.items() if key not in ("build", "image", "env")}
    spec.update(image=image, build={"mode": "neverBuild"}, env=list(env.values()),
                description=_description(entry, model, display))
    spec["triggers"] = {trigger_name: _own_trigger(trigger)
                        for trigger_name, trigger in (base_spec.get("triggers") or {}).items()}
    spec["resources"] = _resources(base_spec.get("resources") or {}, base_device(base) if device == "auto"
                                   else device)
    annotations = {
        "name": display,
        "type": "detector",
        "framework": "pytorch",
        "spec": json.dumps(label_spec(model["labels"])),
        MODEL_ANNOTATION: entry.id,
    }
    if entry.version is not None:  # CVAT reads it as the model's version (1 when absent)
        annotations["version"] = str(entry.version)
    if entry.task_id is not None:
        annotations[TASK_ANNOTATION] = str(entry.task_id)
    return {"metadata": {"name": name, "annotations": annotations}, "spec": spec}


def _own_trigger(trigger: Mapping[str, Any]) -> dict:
    trigger = copy.deepcopy(dict(trigger))
    attributes = trigger.get("attributes") or {}
    for key in _PER_FUNCTION_TRIGGER_ATTRIBUTES:
        attributes.pop(key, None)
    return trigger


def _resources(resources: Mapping[str, Any], device: str) -> dict:
    resources = copy.deepcopy(dict(resources))
    if device == "gpu":
        resources.setdefault("limits", {}).setdefault(GPU_RESOURCE, "1")
    else:
        for part in ("limits", "requests"):
            (resources.get(part) or {}).pop(GPU_RESOURCE, None)
    return resources


def _description(entry: ModelEntry, model: Mapping[str, Any], display: str) -> str:
    config = model.get("model_config") or {}
    metrics = model.get("metrics") or entry.metrics
    scores = ", ".join(f"{key} {metrics[key]:.3f}" for key in ("AP", "AP50")
                       if isinstance(metrics.get(key), (int, float)))
    source = (f"CVAT task {entry.task_id}" if entry.task_id is not None
              else f"CVAT project {entry.project_id}" if entry.project_id is not None else "a COCO dataset")
    labels = sum(1 for name in model["labels"] if name)
    return (f"{display}: DETR ({config.get('backbone', 'resnet50')}) trained on {source}, {labels} labels"
            f"{'; validation ' + scores if scores else ''}. Model {entry.id} (cvat-detr)")


# --- publish / unpublish ------------------------------------------------------------------------


def publish(
    entry: ModelEntry,
    *,
    nuclio: NuclioClient,
    store: ModelStore,
    base_function: str = DEFAULT_BASE_FUNCTION,
    device: str = "auto",
) -> Publication:
    """Deploy (or redeploy) the function serving ``entry``, wait until it is ready and record it
    in the model card. Raises :class:`PublishError` or the Nuclio client's errors."""
    from detr import load_model_file

    if device not in DEVICES:
        raise PublishError(f"device {device!r} is invalid; choose one of {', '.join(DEVICES)}")
    if not entry.model_path.is_file():
        raise PublishError(f"model {entry.id} has no {entry.model_path.name} in {entry.folder}; train it again")
    model = load_model_file(entry.model_path)
    base = nuclio.find_function(base_function)
    if base is None:
        raise PublishError(
            f"the base detector function {base_function!r} is not deployed in namespace {nuclio.namespace!r} of "
            f"project {nuclio.project!r}; deploy it once from the repository root with `nuctl deploy --project-name "
            f"cvat --path . --file function.yaml --platform local` (function-gpu.yaml for GPU), or name another "
            f"base with --base-function / DETR_BASE_FUNCTION")
    if device == "gpu" and base_device(base) == "cpu":
        logger.warning("The base function %s runs on CPU: its image may lack CUDA. For GPU functions, deploy "
                       "serverless/detector/function-gpu.yaml as the base", base_function)
    name = function_name(entry)
    display = display_name(entry, store.task_name(entry))
    config = detector_config(entry, model, base, name=name, display=display, device=device)
    updated = nuclio.find_function(name) is not None
    logger.info("%s function %s for model %s", "Updating" if updated else "Publishing", name, entry.id)
    nuclio.deploy(config)
    device_used = base_device(config)
    store.record_publication(entry, {
        "function": name, "display_name": display, "namespace": nuclio.namespace, "dashboard": nuclio.url,
        "device": device_used, "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    return Publication(function=name, display_name=display, device=device_used, model_id=entry.id, updated=updated)


def unpublish(name: str, *, nuclio: NuclioClient, store: ModelStore) -> list[ModelEntry]:
    """Delete the function ``name`` (only one that this tool published) and clear it from the
    model cards; returns the models that were served by it."""
    function = nuclio.get_function(name)
    annotations = (function.get("metadata") or {}).get("annotations") or {}
    if MODEL_ANNOTATION not in annotations:
        raise PublishError(f"function {name!r} was not published by cvat-detr (it has no {MODEL_ANNOTATION} "
                           f"annotation); if you really mean to remove it, use `nuctl delete function {name}`")
    nuclio.delete_function(name)
    return [store.record_publication(entry, None) for entry in store.published_as(name)]


def published_functions(nuclio: NuclioClient) -> dict[str, dict]:
    """The functions this tool published, by model id."""
    return {annotations[MODEL_ANNOTATION]: function for function in nuclio.list_functions().values()
            for annotations in [(function.get("metadata") or {}).get("annotations") or {}]
            if MODEL_ANNOTATION in annotations}


# --- the trainer's success hook -----------------------------------------------------------------


def success_hook(settings: PublishSettings, home: Path) -> Callable[[Any, Path], Optional[str]]:
    """The trainer's ``on_success``: publishes the model of a job that asked for it (``job.publish``)
    and returns the function name, which the job reports."""

    def on_success(job: Any, model_folder: Path) -> Optional[str]:
        if not getattr(job, "publish", False):
            return None
        store = ModelStore(home)
        with settings.client() as nuclio:
            publication = publish(store.entry(Path(model_folder).name), nuclio=nuclio, store=store,
                                  base_function=settings.base_function, device=settings.device)
        logger.info("Job %s: model published as %s", getattr(job, "id", "?"), publication.function)
        return publication.function

    return on_success
