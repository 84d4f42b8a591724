"""Trained models on the shared volume: register one, find one by model id, run id or path, list them
all, and record in each model card where the model is published.

A model is ``$DETR_HOME/models/<id>/model.pt`` plus its card ``model.json`` and the report of
its run's best model (``report/*.png``, kept beside it so that it outlives the run). Model ids are
``task-<task id>-v<version>`` or ``project-<project id>-v<version>``: each task or project is one model
line, its versions counting up, whether ``cvat-detr train --local`` or the trainer function trained
them (:meth:`ModelStore.add` is the one card writer; ``run-<run id>`` for a run of neither). Weights
``previous`` continue a line's newest model (:meth:`ModelStore.latest`). Cards written before model
lines existed (ids such as ``task42-20250729-101500-3f2a``, no ``version``) are still read.

This module only reads and writes JSON (no torch): the gateway lists and describes models with it
(:meth:`ModelStore.describe`, the model view's one shape, for the gateway, the UI and ``cvat-detr
models show``); ``cvat_plugin.training.run`` reads a finished run's files into a :class:`TrainedModel`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Optional, Union

from cvat_plugin.home.jobs import utc_now
from cvat_plugin.home.layout import DetrHome, InvalidId, copy_atomic, source_name, write_json_atomic

logger = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
CARD_FILE = "model.json"
REPORT_DIR = "report"
#: The report's images by the names the API uses, as ``detr.report.write_report`` writes them:
#: loss and mAP per epoch, PR curves per class, the confusion matrix, validation images with the
#: ground truth beside the predictions.
REPORT_IMAGES = {
    "curves": "curves.png",
    "pr_curves": "pr_curves.png",
    "confusion_matrix": "confusion_matrix.png",
    "samples": "samples.png",
}
#: The COCO metrics a model view shows.
SUMMARY_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
#: The publication fields a model view shows (not the dashboard's address).
PUBLICATION_FIELDS = ("function", "display_name", "device", "published_at")


class ModelNotFound(LookupError):
    """No model matches the reference; the message says how to find one."""


@dataclass(frozen=True)
class ModelEntry:
    """One trained model: its folder under ``models/`` and its card."""

    folder: Path
    card: dict

    @property
    def id(self) -> str:
        return str(self.card.get("id") or self.folder.name)

    @property
    def model_path(self) -> Path:
        return self.folder / MODEL_FILE

    @property
    def task_id(self) -> Optional[int]:
        return self.card.get("task_id")

    @property
    def project_id(self) -> Optional[int]:
        """The CVAT project trained on (all its tasks), for a project's model."""
        return self.card.get("project_id")

    @property
    def version(self) -> Optional[int]:
        """The model's version in its task's or project's line; None for a model of neither, or an old card."""
        return self.card.get("version")

    @property
    def metrics(self) -> dict:
        return self.card.get("metrics") or {}

    @property
    def function(self) -> Optional[str]:
        """The Nuclio function serving this model, if it is published."""
        return self.card.get("function")

    def report_image(self, name: str) -> Optional[Path]:
        """The report image ``name`` (a key of :data:`REPORT_IMAGES`), if the model has it."""
        path = self.folder / REPORT_DIR / REPORT_IMAGES[name]
        return path if path.is_file() else None


@dataclass(frozen=True)
class TrainedModel:
    """What a model card records of a finished run, whichever path trained it."""

    task_id: Optional[int]
    project_id: Optional[int]
    """Set instead of ``task_id`` for a model trained on a whole CVAT project."""
    dataset_id: str
    run_id: str
    """The run (``runs/<run_id>``) that trained it: a trainer job's id, or a local run's."""
    labels: list[str]
    """The model's class names in class order, as its ``model.pt`` holds them."""
    threshold: float
    metrics: dict[str, Any]
    """The best epoch's validation metrics."""
    status: str
    """How the run ended: completed or early_stopped (a cancelled run registers no model)."""
    epochs_done: int
    config: dict[str, Any]
    """``{"model": ModelConfig fields, "train": TrainConfig fields}`` of the run."""
    pretrained: Optional[str]
    backbone_weights: Optional[str]
    options: dict[str, Any]
    """The training options (``cvat_plugin.training.options``) the run was asked for."""
    command: Optional[str] = None
    """The ``cvat-detr`` command line that trained it (secrets redacted), for a model trained with ``--local``."""


def keep_report(run_report: Path, model_folder: Path) -> None:
    """Copy a run's report images beside its model (the run folder may be cleaned up; the model stays)."""
    for file_name in REPORT_IMAGES.values():
        if (run_report / file_name).is_file():
            copy_atomic(run_report / file_name, model_folder / REPORT_DIR / file_name)


def starting_weights(card: dict) -> str:
    """Where a model's training started, in words: its ``weights`` option, else the names (never the
    folders) of the files ``cvat-detr train --local --pretrained / --backbone-weights`` started from."""
    weights = (card.get("options") or {}).get("weights")
    if weights:
        return str(weights)
    if card.get("pretrained"):
        return f"checkpoint {PurePath(str(card['pretrained'])).name}"
    if card.get("backbone_weights"):
        return f"imagenet ({PurePath(str(card['backbone_weights'])).name})"
    return "scratch"


class ModelStore:
    """The ``models/`` folder of one ``DETR_HOME``."""

    def __init__(self, home: Union[DetrHome, str, os.PathLike, None] = None) -> None:
        self.home = home if isinstance(home, DetrHome) else DetrHome(home)
        self.models_dir = self.home.models

    def entries(self) -> list[ModelEntry]:
        """Every model with a readable card, newest first; unreadable cards are logged and skipped."""
        entries = []
        for card_path in self.models_dir.glob(f"*/{CARD_FILE}"):
            entry = self._read(card_path.parent)
            if entry is not None:
                entries.append(entry)
        return sorted(entries, key=lambda e: (str(e.card.get("created", "")), e.id), reverse=True)

    def entry(self, model_id: str) -> ModelEntry:
        """The model ``models/<model_id>``; :class:`ModelNotFound` if it has no readable card."""
        folder = self._folder(model_id)
        entry = self._read(folder) if folder is not None else None
        if entry is None:
            raise ModelNotFound(f"no model {model_id!r} in {self.models_dir}; list models with `cvat-detr models`")
        return entry

    def resolve(self, reference: str) -> ModelEntry:
        """A model by id, by the run or job that trained it, or by its folder or model.pt path."""
        by_id = self._folder(reference)
        if by_id is not None and (by_id / CARD_FILE).is_file():
            return self.entry(reference)
        for entry in self.entries():
            if reference in (entry.card.get("run_id"), entry.card.get("job_id")):
                return entry
        path = Path(reference).expanduser()
        if path.exists():
            folder = (path.parent if path.is_file() else path).resolve()
            if folder.parent != self.models_dir:
                raise ModelNotFound(
                    f"{reference} is not a model folder under {self.models_dir}: published models are read by "
                    f"the detector from the shared volume, so they must live there (train with `cvat-detr train`, "
                    f"or set DETR_HOME to the volume that holds this model)")
            return self.entry(folder.name)
        raise ModelNotFound(f"no model, run or job {reference!r} in {self.home.root}; give a model id, a run id "
                            f"or a model folder (list models with `cvat-detr models`; DETR_HOME selects the storage)")

    def latest(self, *, task_id: Optional[int] = None, project_id: Optional[int] = None) -> Optional[ModelEntry]:
        """The newest model of a task's line (or of a project's), however it was trained; None if it has none."""
        key, value = ("task_id", task_id) if task_id is not None else ("project_id", project_id)
        line = [entry for entry in self.entries() if value is not None and entry.card.get(key) == value]
        # Versions order a line; cards from before versions existed rank below every versioned one.
        return max(line, key=lambda e: (e.version or 0, str(e.card.get("created", ""))), default=None)

    def add(self, model: TrainedModel, *, model_file: Path, report_dir: Path) -> ModelEntry:
        """Register a finished run's best model as the next version of its task's (or project's) line: copy
        ``model_file`` and the report images in ``report_dir``, then write the card. A model exists once its
        card is written: when a write fails, nothing of it is left and the ``OSError`` is raised."""
        has_source = model.task_id is not None or model.project_id is not None
        line = source_name(model.task_id, model.project_id) if has_source else None
        version, folder = self._new_folder(line, model.run_id)
        try:
            copy_atomic(model_file, folder / MODEL_FILE)
            keep_report(report_dir, folder)
            card = self._card(model, folder.name, version)
            write_json_atomic(folder / CARD_FILE, card)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        logger.info("Run %s: model saved as %s", model.run_id, folder.name)
        return ModelEntry(folder, card)

    def _new_folder(self, line: Optional[str], run_id: str) -> tuple[Optional[int], Path]:
        """Claim ``models/<line>-v<next version>`` (``run-<run id>`` outside a line); mkdir makes the claim
        atomic, so two registrations on the shared volume never take the same version."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        if line is None:
            folder = self.home.model_dir(f"run-{run_id}")
            folder.mkdir()
            return None, folder
        pattern = re.compile(rf"{re.escape(line)}-v(\d+)")
        used = [int(m.group(1)) for m in map(pattern.fullmatch, (f.name for f in self.models_dir.iterdir())) if m]
        version = max(used, default=0) + 1
        while True:
            folder = self.models_dir / f"{line}-v{version}"
            try:
                folder.mkdir()
                return version, folder
            except FileExistsError:
                version += 1

    def _card(self, model: TrainedModel, model_id: str, version: Optional[int]) -> dict[str, Any]:
        """``model.json``: what the model predicts (with the CVAT ids of its labels), how good it is, and what
        produced it (source, dataset, run, configuration, starting weights, options)."""
        source = self._dataset_file(model.dataset_id, "manifest.json", dict).get("source") or {}
        cvat_labels = self._dataset_file(model.dataset_id, "labels.json", list)
        ids = {label.get("name"): label.get("id") for label in cvat_labels if isinstance(label, dict)}
        return {
            "id": model_id,
            "version": version,
            "created": utc_now(),
            "task_id": model.task_id,
            "task_name": source.get("task_name"),
            "project_id": model.project_id,
            "project_name": source.get("project_name"),
            "tasks": source.get("tasks", []),
            "source_url": source.get("url"),
            "server_version": source.get("server_version"),
            "labels": [{"id": ids.get(name), "name": name} for name in model.labels],
            "metrics": model.metrics,
            "threshold": model.threshold,
            "status": model.status,
            "epochs_done": model.epochs_done,
            "config": model.config,
            "pretrained": model.pretrained,
            "backbone_weights": model.backbone_weights,
            "dataset_id": model.dataset_id,
            "run_id": model.run_id,
            "options": model.options,
            "command": model.command,
            "function": None,
        }

    def _folder(self, model_id: str) -> Optional[Path]:
        """``models/<model_id>``, or None when the id cannot name a model folder."""
        try:
            return self.home.model_dir(model_id)
        except InvalidId:
            return None

    def task_name(self, entry: ModelEntry) -> Optional[str]:
        """The CVAT task's name: from the card, else from the manifest of the dataset it was trained on."""
        if entry.card.get("task_name"):
            return entry.card["task_name"]
        return (self._manifest(entry).get("source") or {}).get("task_name")

    def describe(self, entry: ModelEntry) -> dict[str, Any]:
        """What a user weighs before trusting a model: when and how it was trained, on how many
        images, its COCO metrics and per-class AP, the calibrated threshold, where it is published,
        and which report images it has."""
        card, metrics = entry.card, entry.metrics
        config = card.get("config") or {}
        model_config = config.get("model") or {}
        per_class = metrics.get("per_class") if isinstance(metrics.get("per_class"), dict) else {}
        published = card.get("published") if isinstance(card.get("published"), dict) else None
        return {
            "id": entry.id,
            "task_id": entry.task_id,
            "project_id": entry.project_id,
            "task_name": self.task_name(entry),
            "project_name": card.get("project_name"),
            "version": entry.version,
            "created": card.get("created"),
            "status": card.get("status"),
            "weights": starting_weights(card),
            "architecture": model_config.get("architecture", "detr"),
            "backbone": model_config.get("backbone"),
            "epochs": card.get("epochs_done"),
            "best_epoch": metrics.get("epoch"),
            "images": self._images(entry),
            "metrics": {key: metrics[key] for key in SUMMARY_METRICS if isinstance(metrics.get(key), (int, float))},
            "per_class": [{"name": name, "AP": stats.get("AP"), "AP50": stats.get("AP50"), "boxes": stats.get("boxes")}
                          for name, stats in per_class.items() if isinstance(stats, dict)],
            "threshold": card.get("threshold"),
            "labels": [label.get("name") if isinstance(label, dict) else label for label in card.get("labels") or []],
            "function": entry.function,
            "published": {key: published.get(key) for key in PUBLICATION_FIELDS} if published else None,
            "publishing": bool(card.get("publishing")),
            "publish_error": card.get("publish_error"),
            "report": [name for name in REPORT_IMAGES if entry.report_image(name) is not None],
        }

    def _images(self, entry: ModelEntry) -> Optional[dict[str, int]]:
        """Training and validation images, from the manifest of the dataset the model was trained on."""
        manifest = self._manifest(entry)
        images = manifest.get("images") if isinstance(manifest.get("images"), dict) else {}
        if not all(isinstance(images.get(split), int) for split in ("train", "val")):
            return None
        return {"train": images["train"], "val": images["val"]}

    def _manifest(self, entry: ModelEntry) -> dict:
        return self._dataset_file(entry.card.get("dataset_id"), "manifest.json", dict)

    def _dataset_file(self, dataset_id: Any, name: str, kind: type) -> Any:
        """A JSON file of a training set, empty when it is missing or unreadable (cards are best effort)."""
        try:
            content = json.loads((self.home.dataset_dir(dataset_id) / name).read_text(encoding="utf-8"))
        except (InvalidId, OSError, ValueError):
            return kind()
        return content if isinstance(content, kind) else kind()

    def record_publication(self, entry: ModelEntry, published: Optional[dict[str, Any]]) -> ModelEntry:
        """Write ``function`` and ``published`` (None: not published) into the model's card."""
        return self.update_card(entry, function=published["function"] if published else None, published=published)

    def update_card(self, entry: ModelEntry, **fields: Any) -> ModelEntry:
        """Rewrite the model's card (atomically) with ``fields`` changed; None removes a field."""
        card = {**self._read_card(entry), **fields}
        card = {key: value for key, value in card.items() if value is not None or key in ("function", "published")}
        write_json_atomic(entry.folder / CARD_FILE, card)
        return ModelEntry(entry.folder, card)

    def _read_card(self, entry: ModelEntry) -> dict:
        """The card as it is on the volume now (another process may have changed it since ``entry``)."""
        fresh = self._read(entry.folder)
        return fresh.card if fresh is not None else entry.card

    def published_as(self, function: str) -> list[ModelEntry]:
        """The models whose cards say they are served by ``function``."""
        return [entry for entry in self.entries() if entry.function == function]

    def _read(self, folder: Path) -> Optional[ModelEntry]:
        try:
            card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            logger.warning("Skipping model card %s: %s", folder / CARD_FILE, e)
            return None
        if not isinstance(card, dict):
            logger.warning("Skipping model card %s: not a JSON object", folder / CARD_FILE)
            return None
        return ModelEntry(folder, card)
