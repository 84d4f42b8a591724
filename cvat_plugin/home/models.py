"""Trained models on the shared volume: find one by model id, run id or path, list them all,
and record in each model card where the model is published.

A model is ``$DETR_HOME/models/<id>/model.pt`` plus its card ``model.json`` and the report of
its run's best model (``report/*.png``, kept beside it so that it outlives the run). Cards come from
``cvat-detr train --local`` and from the trainer function; both carry ``id``, ``task_id``,
``labels``, ``metrics`` and ``threshold``; the trainer's add ``version`` (per task) and
``job_id``, the CLI's ``task_name`` and ``run_id``. This module only reads and writes JSON
(no torch): the gateway lists and describes models with it (:meth:`ModelStore.describe`, the
model view's one shape, for the gateway, the UI and ``cvat-detr models show``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Optional, Union

from cvat_plugin.home.layout import Storage, copy_atomic, write_json_atomic

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
        """The model's version among those of its task (trainer models), or None."""
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


def keep_report(run_report: Path, model_folder: Path) -> None:
    """Copy a run's report images beside its model (the run folder may be cleaned up; the model stays)."""
    for file_name in REPORT_IMAGES.values():
        if (run_report / file_name).is_file():
            copy_atomic(run_report / file_name, model_folder / REPORT_DIR / file_name)


def starting_weights(card: dict) -> str:
    """Where a model's training started, in words: the trainer's ``weights`` option, else the
    file names the CLI's card records (never their folders)."""
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

    def __init__(self, home: Union[str, os.PathLike, None] = None) -> None:
        self.storage = Storage(home)
        self.home = self.storage.home
        self.models_dir = self.home / "models"

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
        folder = self.storage.model_dir(model_id)
        entry = self._read(folder) if folder.parent == self.models_dir else None
        if entry is None:
            raise ModelNotFound(f"no model {model_id!r} in {self.models_dir}; list models with `cvat-detr models`")
        return entry

    def resolve(self, reference: str) -> ModelEntry:
        """A model by id, by the run or job that trained it, or by its folder or model.pt path."""
        by_id = self.storage.model_dir(reference)
        if by_id.parent == self.models_dir and (by_id / CARD_FILE).is_file():
            return self.entry(reference)
        for entry in self.entries():
            if reference in (entry.card.get("run_id"), entry.card.get("job_id")):
                return entry
        path = Path(reference).expanduser()
        if path.exists():
            folder = (path.parent if path.is_file() else path).resolve()
            if folder.parent != self.models_dir.resolve():
                raise ModelNotFound(
                    f"{reference} is not a model folder under {self.models_dir}: published models are read by "
                    f"the detector from the shared volume, so they must live there (train with `cvat-detr train`, "
                    f"or set DETR_HOME to the volume that holds this model)")
            return self.entry(folder.name)
        raise ModelNotFound(f"no model, run or job {reference!r} in {self.home}; give a model id, a run id or "
                            f"a model folder (list models with `cvat-detr models`; DETR_HOME selects the storage)")

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
        dataset_id = entry.card.get("dataset_id")
        if not isinstance(dataset_id, str) or not dataset_id:
            return {}
        try:
            manifest = json.loads((self.storage.dataset_dir(dataset_id) / "manifest.json").read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return manifest if isinstance(manifest, dict) else {}

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
