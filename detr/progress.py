"""A terminal progress bar for training, fed by ``TrainEvent`` callbacks."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

from .train import TrainEvent


class TrainProgressBar:
    """One bar over all steps with loss and last mAP; a line per evaluated epoch."""

    def __init__(self, file: TextIO | None = None):
        self.file = file or sys.stderr
        self.bar: tqdm | None = None

    def __enter__(self) -> "TrainProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def __call__(self, event: TrainEvent) -> None:
        if event.kind == "train_start":
            self.bar = tqdm(
                total=event.total_steps,
                initial=event.global_step,
                unit="step",
                file=self.file,
                dynamic_ncols=True,
                desc=f"epoch {event.epoch + 1}/{event.epochs}",
            )
            return
        if self.bar is None:
            return
        if event.total_steps != self.bar.total:
            self.bar.total = event.total_steps
        self.bar.update(max(0, event.global_step - self.bar.n))
        if event.kind == "step":
            self.bar.set_description(f"epoch {event.epoch + 1}/{event.epochs}")
            self.bar.set_postfix(loss=f"{event.losses.get('loss', float('nan')):.3f}", refresh=False)
        elif event.kind == "epoch_end" and event.metrics:
            ap, ap50 = event.metrics.get("AP") or 0.0, event.metrics.get("AP50") or 0.0
            self.bar.write(
                f"epoch {event.epoch + 1}/{event.epochs}: loss {event.losses.get('loss', float('nan')):.3f}, "
                f"AP {ap:.3f}, AP50 {ap50:.3f}",
                file=self.file,
            )
