"""Trained models on the shared volume: find one by model id, run id or path, list them all,
and record in each model card where the model is published.

A model is ``$DETR_HOME/models/<id>/model.pt`` plus its card ``model.json``. Cards come from
``cvat-detr train --local`` and from the trainer function; both carry ``id``, ``task_id``,
``labels``, ``metrics`` and ``threshold``; the trainer's add ``version`` (per task) and
``job_id``, the CLI's ``task_name`` and ``run_id``. This module only reads and writes JSON
(no torch): the gateway lists models with it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from cvat_plugin.storage import Storage, write_json_atomic

logger = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
CARD_FILE = "model.json"


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
        dataset_id = entry.card.get("dataset_id")
        if not dataset_id:
            return None
        try:
            manifest = json.loads((self.storage.dataset_dir(dataset_id) / "manifest.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return (manifest.get("source") or {}).get("task_name")

    def record_publication(self, entry: ModelEntry, published: Optional[dict[str, Any]]) -> ModelEntry:
        """Write ``function`` and ``published`` (None: not published) into the model's card."""
        card = {**entry.card, "function": published["function"] if published else None, "published": published}
        write_json_atomic(entry.folder / CARD_FILE, card)
        return ModelEntry(entry.folder, card)

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
