"""Test helpers for publishing: trained-model folders with known outputs, and base detector configs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from detr.checkpoint import save_model_file
from tests.fakes.models import constant_model

#: Where the base detector mounts the shared volume (function.yaml's DETR_HOME).
CONTAINER_HOME = "/var/lib/detr"


def add_model(home: Path, model_id: str, labels: Sequence[str], *, task_id: Optional[int] = 7,
              version: Optional[int] = 1, ap: float = 0.4125, task_name: Optional[str] = "cars",
              box=(0.5, 0.5, 0.5, 0.5), winner: int = 0, threshold: float = 0.5) -> Path:
    """``models/<model_id>/`` with a tiny model that always predicts ``labels[winner]`` (p ~ 0.98) in
    ``box`` (normalised cx, cy, w, h), and a card like the trainer's; returns the folder."""
    folder = home / "models" / model_id
    folder.mkdir(parents=True)
    logits = [0.0] * (len(labels) + 1)
    logits[winner] = 6.0
    metrics = {"AP": ap, "AP50": min(1.0, ap + 0.2)}
    save_model_file(folder / "model.pt", constant_model(box, logits), labels=list(labels), threshold=threshold,
                    metrics=metrics, image_size=64, max_size=96)
    card = {"id": model_id, "version": version, "created": f"2025-01-01T00:00:{len(list(home.glob('models/*'))):02d}",
            "task_id": task_id, "task_name": task_name, "labels": [{"id": None, "name": n} for n in labels],
            "metrics": metrics, "threshold": threshold, "dataset_id": model_id, "run_id": f"run-{model_id}",
            "function": None}
    (folder / "model.json").write_text(json.dumps(card))
    return folder


def base_config(*, handler: str = "tests.fakes.nuclio_dashboard:echo_handler", gpu: bool = False) -> dict:
    """A base detector config shaped like the repository's function.yaml (trimmed)."""
    spec = {
        "description": "DETR ResNet-50 object detector trained on COCO 2017",
        "runtime": "python:3.10",
        "handler": handler,
        "eventTimeout": "300s",
        "env": [{"name": "DETR_HOME", "value": CONTAINER_HOME},
                {"name": "DETR_MODEL", "value": "/opt/detr/models/detr-r50-coco/model.pt"}],
        "build": {"image": "cvat.detr.detector:latest", "baseImage": "ubuntu:22.04", "path": "."},
        "triggers": {"myHttpTrigger": {"kind": "http", "numWorkers": 1,
                                       "workerAvailabilityTimeoutMilliseconds": 10000,
                                       "attributes": {"maxRequestBodySize": 33554432, "port": 32001}}},
        "volumes": [{"volume": {"name": "detr-home", "hostPath": {"path": "/srv/detr"}},
                     "volumeMount": {"name": "detr-home", "mountPath": CONTAINER_HOME}}],
        "platform": {"attributes": {"restartPolicy": {"name": "always", "maximumRetryCount": 3},
                                    "mountMode": "volume"}},
    }
    if gpu:
        spec["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    return {"metadata": {"name": "detr-r50-coco",
                         "annotations": {"name": "DETR R50 (COCO)", "type": "detector",
                                         "spec": json.dumps([{"id": 1, "name": "person", "type": "rectangle"}])}},
            "spec": spec}
