"""Trained models on the shared volume: ``DETR_HOME/models/<model-id>/{model.pt, model.json, report/}``.

``model.json`` is the model card: labels (with their CVAT ids), metrics, threshold, the
job, task and dataset that produced the model and the full configuration, so any model
can be traced back and reproduced. Model ids are ``task-<task id>-v<version>``, ``project-<project
id>-v<version>`` for a project's models (``job-<job id>`` for jobs without either); versions count up
per task or project: each is one model line, which weights ``previous`` continues.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from cvat_plugin.home.jobs import Job, utc_now
from cvat_plugin.home.layout import copy_atomic, write_json_atomic
from cvat_plugin.home.models import keep_report
from detr import FitResult, load_model_file

logger = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
CARD_FILE = "model.json"


class ModelRegistry:
    def __init__(self, models_dir: Path):
        self.models_dir = models_dir

    def cards(self) -> list[dict[str, Any]]:
        """Every readable model card; unreadable ones are logged and skipped."""
        cards = []
        for path in sorted(self.models_dir.glob(f"*/{CARD_FILE}")):
            try:
                cards.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as e:
                logger.warning("Skipping model card %s: %s", path, e)
        return cards

    def latest(self, task_id: int | None, *, project_id: int | None = None) -> Path | None:
        """``model.pt`` of the newest model trained on a task (or on a project), if any."""
        key, value = ("task_id", task_id) if task_id is not None else ("project_id", project_id)
        versions = [card for card in self.cards() if value is not None and card.get(key) == value]
        if not versions:
            return None
        newest = max(versions, key=lambda card: card.get("version", 0))
        return self.models_dir / newest["id"] / MODEL_FILE

    def register(self, job: Job, result: FitResult, dataset_dir: Path) -> tuple[str, Path]:
        """Copy a finished run's best model into the registry with its card; returns (model id, folder).

        The card has the keys of the cards ``cvat-detr train --local`` writes, plus ``version``,
        ``options`` and ``function``.
        """
        model = load_model_file(result.model_path)
        line = (f"task-{job.task_id}" if job.task_id is not None
                else f"project-{job.project_id}" if job.project_id is not None else None)
        if line is not None:
            version = self._next_version(line)
            model_id = f"{line}-v{version}"
        else:
            version, model_id = 1, f"job-{job.id}"
        folder = self.models_dir / model_id
        copy_atomic(result.model_path, folder / MODEL_FILE)
        keep_report(result.out_dir / "report", folder)
        run_config = _read_json(result.out_dir / "config.json")
        source = _read_json(dataset_dir / "manifest.json").get("source", {})
        cvat_labels = _read_json(dataset_dir / "labels.json", default=[])
        ids = {label.get("name"): label.get("id") for label in cvat_labels if isinstance(label, dict)}
        write_json_atomic(folder / CARD_FILE, {
            "id": model_id,
            "version": version,
            "created": utc_now(),
            "task_id": job.task_id,
            "task_name": source.get("task_name"),
            **({"project_id": job.project_id, "project_name": source.get("project_name"),
                "tasks": source.get("tasks", [])} if job.project_id is not None else {}),
            "source_url": source.get("url"),
            "server_version": source.get("server_version"),
            "labels": [{"id": ids.get(name), "name": name} for name in model["labels"]],
            "metrics": result.best_metrics,
            "threshold": model["threshold"],
            "status": result.status,
            "epochs_done": result.epochs_done,
            "config": {"model": run_config.get("model", model["model_config"]), "train": run_config.get("train")},
            "pretrained": run_config.get("pretrained"),
            "backbone_weights": run_config.get("backbone_weights"),
            "dataset_id": job.dataset_id,
            "run_id": job.id,
            "options": job.options,
            "function": None,
        })
        logger.info("Job %s: model saved as %s", job.id, model_id)
        return model_id, folder

    def _next_version(self, line: str) -> int:
        """The next version of a model line such as ``task-7``."""
        used = [0]
        for folder in self.models_dir.glob(f"{line}-v*"):
            match = re.fullmatch(rf"{re.escape(line)}-v(\d+)", folder.name)
            if match:
                used.append(int(match.group(1)))
        return max(used) + 1


def _read_json(path: Path, default: Any = None) -> Any:
    """A JSON file's content, or ``default`` ({}) when it is missing or unreadable: cards are best effort."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {} if default is None else default
