"""Progress reporting injected into long operations (downloads, dataset builds).

Library code never prints: it takes a ``ProgressReporter`` (no-op by default, as
cvat-sdk's ``NullProgressReporter``) and the CLI passes a tqdm-backed one.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional


class ProgressReporter:
    """Receives the progress of one task at a time. The base class ignores everything."""

    def start(self, total: Optional[int], *, desc: str, unit: str = "it") -> None:
        """A task of ``total`` units (None: unknown) begins."""

    def advance(self, delta: int) -> None:
        """``delta`` more units are done."""

    def finish(self) -> None:
        """The current task ended (successfully or not)."""

    @contextmanager
    def task(self, total: Optional[int], *, desc: str, unit: str = "it") -> Iterator[None]:
        self.start(total, desc=desc, unit=unit)
        try:
            yield
        finally:
            self.finish()


class NullProgressReporter(ProgressReporter):
    """Reports nothing; the default everywhere."""


class TqdmProgressReporter(ProgressReporter):
    """Shows each task as a tqdm bar on stderr."""

    def __init__(self, **tqdm_kwargs) -> None:
        self.tqdm_kwargs = tqdm_kwargs
        """Where and how bars are drawn (``file``, ``leave``...); the task's own total, unit and description
        come with each ``start``, so these must not name them."""
        self._bar = None

    def start(self, total: Optional[int], *, desc: str, unit: str = "it") -> None:
        from tqdm import tqdm

        byte_units = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
        self._bar = tqdm(total=total, desc=desc, unit=unit, **byte_units, **self.tqdm_kwargs)

    def advance(self, delta: int) -> None:
        if self._bar is not None:
            self._bar.update(delta)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
