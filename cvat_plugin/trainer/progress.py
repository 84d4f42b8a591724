"""Training events -> job fields, written to ``job.json`` without slowing training down."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from cvat_plugin.home.jobs import JobStore
from detr import TrainEvent

logger = logging.getLogger(__name__)

#: Step events update the job in memory every time, on disk at most this often.
PERSIST_INTERVAL_S = 2.0


class JobProgress:
    """A ``detr.fit`` callback that mirrors the run's progress into its job."""

    def __init__(self, store: JobStore, job_id: str, *, persist_interval_s: float = PERSIST_INTERVAL_S):
        self.store = store
        self.job_id = job_id
        self.persist_interval_s = persist_interval_s
        self._last_persist = 0.0

    def __call__(self, event: TrainEvent) -> None:
        if event.kind == "train_end":
            # event.epoch counts the epochs done; the last step and metrics are already recorded.
            self.store.update(self.job_id, epoch=event.epoch, eta_s=None)
            return
        changes: dict[str, Any] = {
            # Jobs count epochs from 1: "epoch 3 of 10" is the third one, running or just finished.
            "epoch": min(event.epoch + 1, event.epochs),
            "epochs": event.epochs,
            "step": event.step,
            "steps": event.steps_per_epoch,
            "progress": round(event.global_step / event.total_steps, 4) if event.total_steps else 0.0,
            "eta_s": _finite(event.eta_s),
        }
        loss = _finite(event.losses.get("loss")) if event.losses else None
        if loss is not None:
            changes["loss"] = loss
        if event.kind == "epoch_end" and event.metrics:
            changes["metrics"] = _plain(event.metrics)
            # The best so far during the run, not only once it ends (the dialog's "Best mAP").
            ap, best = changes["metrics"].get("AP"), self.store.get(self.job_id).best_metrics.get("AP")
            if ap is not None and (best is None or ap > best):
                changes["best_metrics"] = {**changes["metrics"], "epoch": event.epoch + 1}
            logger.info(
                "Job %s: epoch %d/%d, loss %s, AP %s", self.job_id, event.epoch + 1, event.epochs,
                _fmt(loss), _fmt(event.metrics.get("AP")),
            )
        now = time.monotonic()
        persist = event.kind != "step" or now - self._last_persist >= self.persist_interval_s
        if persist:
            self._last_persist = now
        self.store.update(self.job_id, persist=persist, **changes)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics as strict-JSON values: numbers become floats, NaN and infinities None."""
    plain: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            plain[key] = _plain(value)
        elif isinstance(value, str) or value is None:
            plain[key] = value
        elif isinstance(value, (list, tuple)):
            plain[key] = [_finite(v) for v in value]
        else:
            plain[key] = _finite(value)
    return plain


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}"
