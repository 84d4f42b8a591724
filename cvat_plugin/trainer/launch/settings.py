"""How the trainer trains, read once from its environment when it starts.

```
DETR_TRAIN_BACKEND       local (default): on the trainer's own node; kubeflow: one Kubeflow PyTorchJob per job
DETR_TRAIN_PROCESSES     local: auto (default) = one process per visible CUDA GPU, so one process (in the
                         trainer's) with one GPU or none; N = N processes (at most the GPUs; with no GPU, at
                         most MAX_CPU_PROCESSES gloo processes, which check the mechanism but train no faster)
DETR_KUBE_NAMESPACE      kubeflow: the namespace of the PyTorchJobs (required)
DETR_KUBE_IMAGE          kubeflow: the image their pods run, the trainer's own (required)
DETR_KUBE_PVC            kubeflow: the volume claim of DETR_HOME, mounted at DETR_HOME's path (required)
DETR_KUBE_NODES          kubeflow: pods (nodes) per job: a Master and NODES - 1 Workers (default 1)
DETR_KUBE_GPUS_PER_NODE  kubeflow: GPUs per pod, one training process each (default 1)
```
A wrong value stops the trainer at start-up with a message naming the variable and what it accepts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

BACKENDS = ("local", "kubeflow")
#: Gloo processes on a CPU only show that several processes train like one; more would only thrash.
MAX_CPU_PROCESSES = 4
MAX_NODES = 64
MAX_GPUS_PER_NODE = 16
#: Kubernetes names: a namespace is a DNS-1123 label, a volume claim a DNS-1123 subdomain.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class LaunchConfigError(ValueError):
    """The environment describes no valid way to train; the message names the variable to fix."""


@dataclass(frozen=True)
class KubeSettings:
    namespace: str
    image: str
    pvc: str
    home: Path
    """DETR_HOME: where the claim is mounted in the trainer, and so in the pods."""
    nodes: int = 1
    gpus_per_node: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str], home: Path) -> KubeSettings:
        need = "DETR_TRAIN_BACKEND=kubeflow needs {name}: {what}"
        namespace = _required(env, "DETR_KUBE_NAMESPACE", need, "the namespace to run PyTorchJobs in")
        image = _required(env, "DETR_KUBE_IMAGE", need, "the image their pods run, the trainer's own "
                          "(e.g. registry.example.com/cvat.detr.trainer:latest-gpu)")
        pvc = _required(env, "DETR_KUBE_PVC", need, "the PersistentVolumeClaim of the shared volume DETR_HOME")
        if len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace):
            raise LaunchConfigError(f"DETR_KUBE_NAMESPACE={namespace!r} is not a Kubernetes namespace name "
                                    "(lower-case letters, digits and '-', at most 63)")
        if len(pvc) > 253 or not _DNS_SUBDOMAIN.fullmatch(pvc):
            raise LaunchConfigError(f"DETR_KUBE_PVC={pvc!r} is not a volume claim name (lower-case letters, "
                                    "digits, '-' and '.')")
        if any(c.isspace() for c in image):
            raise LaunchConfigError(f"DETR_KUBE_IMAGE={image!r} is not an image reference: it has spaces")
        return cls(namespace=namespace, image=image, pvc=pvc, home=home,
                   nodes=_count(env, "DETR_KUBE_NODES", 1, MAX_NODES, default=1),
                   gpus_per_node=_count(env, "DETR_KUBE_GPUS_PER_NODE", 1, MAX_GPUS_PER_NODE, default=1))


@dataclass(frozen=True)
class LaunchSettings:
    backend: str = "local"
    processes: int = 1
    """local: training processes per job (1 trains in the trainer's own process)."""
    kube: KubeSettings | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, *, gpus: int, home: Path) -> LaunchSettings:
        """``gpus``: the CUDA GPUs this trainer sees; ``home``: DETR_HOME."""
        backend = env.get("DETR_TRAIN_BACKEND", "").strip() or "local"
        if backend not in BACKENDS:
            raise LaunchConfigError(f"DETR_TRAIN_BACKEND must be one of {', '.join(BACKENDS)}, got {backend!r}")
        processes = env.get("DETR_TRAIN_PROCESSES", "").strip() or "auto"
        if backend == "kubeflow":
            if processes != "auto":
                raise LaunchConfigError(
                    "DETR_TRAIN_PROCESSES sets the processes of the local backend; with DETR_TRAIN_BACKEND=kubeflow "
                    "set DETR_KUBE_NODES and DETR_KUBE_GPUS_PER_NODE instead, and unset it")
            return cls(backend=backend, kube=KubeSettings.from_env(env, home))
        if processes == "auto":
            return cls(processes=max(gpus, 1))
        most, where = (gpus, f"this trainer sees {gpus} CUDA GPU(s)") if gpus else (
            MAX_CPU_PROCESSES, "without a CUDA GPU, processes share the CPU")
        return cls(processes=_count(env, "DETR_TRAIN_PROCESSES", 1, most, why=where, auto=True))


def _required(env: Mapping[str, str], name: str, message: str, what: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise LaunchConfigError(message.format(name=name, what=what))
    return value


def _count(env: Mapping[str, str], name: str, lowest: int, highest: int, *, default: int | None = None,
           why: str = "", auto: bool = False) -> int:
    text = env.get(name, "").strip()
    if not text and default is not None:
        return default
    accepted = ("auto or " if auto else "") + f"a whole number from {lowest} to {highest}"
    accepted += f" ({why})" if why else ""
    try:
        value = int(text)
    except ValueError:
        raise LaunchConfigError(f"{name} must be {accepted}, got {text!r}") from None
    if not lowest <= value <= highest:
        raise LaunchConfigError(f"{name} must be {accepted}, got {value}")
    return value
