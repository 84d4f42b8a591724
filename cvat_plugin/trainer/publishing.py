"""Publishing and unpublishing a chosen model version on request (the model view's buttons).

The trainer holds the Nuclio dashboard's settings, so it does this for the gateway and the CLI.
A deploy waits until the function is ready, which takes from seconds to minutes, longer than
anyone should wait for an HTTP answer on the trainer's one worker: publishing runs in a
background thread, and the model's card says how it goes (``publishing`` while it runs, then
``function`` once published or ``publish_error``). Unpublishing is one dashboard call and
answers at once.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cvat_plugin.home.models import ModelEntry, ModelNotFound, ModelStore
from cvat_plugin.nuclio.publish import PublishSettings, publish, unpublish
from cvat_plugin.responses import RequestError

logger = logging.getLogger(__name__)


class ModelPublisher:
    """Built only when the trainer has a Nuclio dashboard (``settings.enabled``)."""

    def __init__(self, settings: PublishSettings, store: ModelStore) -> None:
        self.settings = settings
        self.store = store
        self._lock = threading.Lock()
        self._publishing: set[str] = set()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="detr-publish")

    def recover(self) -> None:
        """After a (re)start: a publication that was running when the trainer stopped is reported failed."""
        for entry in self.store.entries():
            if entry.card.get("publishing"):
                self.store.update_card(entry, publishing=None, publish_error="the trainer restarted while "
                                       "publishing this model; publish it again")

    def publish(self, model_id: str, *, replace: bool) -> dict[str, Any]:
        """Start publishing ``model_id``; with ``replace``, the task's other published versions are
        unpublished once it is ready. Answers at once; the model's card follows the deploy."""
        entry = self._entry(model_id)
        with self._lock:
            if model_id in self._publishing:
                raise RequestError(f"model {model_id} is already being published; wait until it is ready",
                                   status=409)
            self._publishing.add(model_id)
        self.store.update_card(entry, publishing=True, publish_error=None)
        self._executor.submit(self._publish, model_id, replace)
        logger.info("Model %s: publishing requested%s", model_id,
                    " (replacing the task's published version)" if replace else "")
        return {"model_id": model_id, "publishing": True, "replace": replace}

    def unpublish(self, model_id: str) -> dict[str, Any]:
        """Remove the function serving ``model_id``; the model itself stays."""
        entry = self._entry(model_id)
        if not entry.function:
            raise RequestError(f"model {model_id} is not published; there is nothing to unpublish", status=409)
        with self.settings.client() as nuclio:
            unpublish(entry.function, nuclio=nuclio, store=self.store)
        logger.info("Model %s: function %s removed", model_id, entry.function)
        return {"model_id": model_id, "removed": entry.function}

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _publish(self, model_id: str, replace: bool) -> None:
        error = None
        try:
            entry = self.store.entry(model_id)
            with self.settings.client() as nuclio:
                publication = publish(entry, nuclio=nuclio, store=self.store,
                                      base_function=self.settings.base_function, device=self.settings.device)
                for other in self._published_siblings(entry) if replace else []:
                    if other.function != publication.function:
                        unpublish(other.function, nuclio=nuclio, store=self.store)
                        logger.info("Model %s: replaced %s (model %s)", model_id, other.function, other.id)
            logger.info("Model %s: published as %s", model_id, publication.function)
        except Exception as e:  # every failure goes into the card, in words
            logger.exception("Model %s: publishing failed", model_id)
            error = f"publishing failed: {str(e).strip() or type(e).__name__}"
        finally:
            with self._lock:
                self._publishing.discard(model_id)
            self.store.update_card(self.store.entry(model_id), publishing=None, publish_error=error)

    def _published_siblings(self, entry: ModelEntry) -> list[ModelEntry]:
        """The other published versions of the same task (or project)."""
        line = (entry.task_id, entry.project_id)
        if line == (None, None):
            return []
        return [other for other in self.store.entries()
                if (other.task_id, other.project_id) == line and other.id != entry.id and other.function]

    def _entry(self, model_id: str) -> ModelEntry:
        try:
            return self.store.entry(model_id)
        except ModelNotFound as e:
            raise RequestError(str(e), status=404) from None
