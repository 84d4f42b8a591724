"""What a launched run and its trainer exchange through the run folder, ``<run>/launch/``.

```
request.json    the trainer: what to train (detr.runs.RunSpec), written before the processes start
stop            the trainer: stop after the current step with a checkpoint (cancel, or the trainer stopping)
events.jsonl    rank 0: the run's TrainEvents but steps, one JSON object a line, each with its "seq"
step.json       rank 0: the latest step event, replaced (a run of days would otherwise leave millions of lines)
result.json     rank 0: detr's FitResult, once fit returned
error-<r>.json  a process that failed: its exception; the earliest one of a process's own (not one
                that only says a peer went away) is why the run failed
```
The folder is on the shared volume, so processes on other nodes use it the same way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch.distributed as dist

from cvat_plugin.home.layout import write_json_atomic
from detr import FitResult, TrainEvent
from detr.checkpoint import DiskFullError
from detr.runs import RunSpec

logger = logging.getLogger(__name__)

FOLDER = "launch"
#: Python's module path of the processes' entry point (``cvat_plugin.trainer.launch.worker``).
WORKER_MODULE = "cvat_plugin.trainer.launch.worker"


class LaunchError(RuntimeError):
    """The launched training failed; the message is the engine's when a process recorded one."""


class RunFiles:
    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.folder = self.run_dir / FOLDER

    # --- the trainer's side -----------------------------------------------------------------
    def prepare(self, spec: RunSpec) -> None:
        """Start afresh: what an earlier launch of the run left is dropped, then the request written."""
        shutil.rmtree(self.folder, ignore_errors=True)
        write_json_atomic(self.folder / "request.json", spec.to_dict())

    def request_stop(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "stop").touch()

    def read_result(self) -> FitResult | None:
        record = _read_json(self.folder / "result.json")
        if record is None:
            return None
        return FitResult(record["status"], record["epochs_done"], record["best_metrics"],
                         self.run_dir / record["model"], self.run_dir / record["checkpoint"], self.run_dir,
                         skipped_images=record["skipped_images"])

    def failure(self) -> LaunchError | None:
        """The first error a process had of its own, as the exception the trainer raises; None when there is
        none (a process was killed, and the others only lost it)."""
        records = [r for r in map(_read_json, sorted(self.folder.glob("error-*.json")))
                   if r is not None and not r["lost_peer"]]
        if not records:
            return None
        first = min(records, key=lambda r: r["time"])
        error = LaunchError(first["message"] if first["plain"] else f"{first['type']}: {first['message']}")
        # The cause tells the runner that the volume is full, and how much to free.
        if first.get("disk_full"):
            full = first["disk_full"]
            error.__cause__ = DiskFullError(Path(full["path"]), full["free_mb"], full["needed_mb"])
        elif first.get("errno") is not None:
            error.__cause__ = OSError(first["errno"], first["message"], first.get("filename"))
        logger.error("Training process rank %s failed: %s: %s", first["rank"], first["type"], first["message"])
        return error

    # --- the processes' side ----------------------------------------------------------------
    def read_request(self) -> RunSpec:
        record = _read_json(self.folder / "request.json")
        if record is None:
            raise LaunchError(f"{self.folder / 'request.json'} is missing or unreadable: the trainer writes it "
                              "before it starts the training processes; is this the run folder it shares?")
        return RunSpec.from_dict(record)

    def stop_requested(self) -> bool:
        return (self.folder / "stop").exists()

    def write_result(self, result: FitResult) -> None:
        write_json_atomic(self.folder / "result.json", {
            "status": result.status, "epochs_done": result.epochs_done, "best_metrics": result.best_metrics,
            "model": os.path.relpath(result.model_path, result.out_dir),
            "checkpoint": os.path.relpath(result.checkpoint_path, result.out_dir),
            "skipped_images": result.skipped_images,
        })

    def write_error(self, rank: int, error: BaseException) -> None:
        record: dict[str, Any] = {"rank": rank, "time": time.time(), "type": type(error).__name__,
                                  "message": str(error).strip() or type(error).__name__,
                                  "plain": isinstance(error, (ValueError, RuntimeError)),
                                  "lost_peer": _lost_peer(error)}
        if isinstance(error, DiskFullError):
            record["disk_full"] = {"path": str(error.path), "free_mb": error.free_mb, "needed_mb": error.needed_mb}
        elif isinstance(error, OSError):
            record.update(errno=error.errno, filename=error.filename if isinstance(error.filename, str) else None)
        write_json_atomic(self.folder / f"error-{rank}.json", record)


class EventLog:
    """A ``detr.fit`` callback (rank 0) that writes the run's events for the trainer to read."""

    def __init__(self, files: RunFiles):
        self.files = files
        self.seq = 0

    def __call__(self, event: TrainEvent) -> None:
        self.seq += 1
        record = {"seq": self.seq, **dataclasses.asdict(event)}
        if event.kind == "step":
            write_json_atomic(self.files.folder / "step.json", record)
            return
        with open(self.files.folder / "events.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


class EventReader:
    """Reads the events an EventLog wrote since the last call, in order."""

    def __init__(self, files: RunFiles):
        self.files = files
        self.offset = 0
        self.partial = b""
        self.seq = 0

    def read(self) -> list[TrainEvent]:
        # The step first: the writer appended every older event before it replaced the step, so
        # the lines read next hold them all; a step older than what was already relayed is dropped.
        step = _read_json(self.files.folder / "step.json")
        try:
            with open(self.files.folder / "events.jsonl", "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        self.offset += len(chunk)
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()  # a line still being written
        records = [json.loads(line) for line in lines if line.strip()]
        if step is not None and step["seq"] > self.seq:
            records.append(step)
        events = []
        for record in sorted(records, key=lambda r: r["seq"]):
            self.seq = max(self.seq, record.pop("seq"))
            events.append(TrainEvent(**record))
        return events


def follow(files: RunFiles, callbacks: Sequence[Callable[[TrainEvent], None]], should_stop: Callable[[], bool],
           *, ended: Callable[[], bool], on_stop: Callable[[], None] = lambda: None, interval_s: float) -> bool:
    """Relay the run's events to ``callbacks`` until ``ended()``; the first time ``should_stop()`` is
    true, ask the processes to stop and call ``on_stop``. Returns whether a stop was asked."""
    reader = EventReader(files)
    stop_asked = False
    while True:
        done = ended()  # before reading, so that the last events are read after the end
        for event in reader.read():
            for callback in callbacks:
                callback(event)
        if done:
            return stop_asked
        if not stop_asked and should_stop():
            files.request_stop()
            stop_asked = True
            on_stop()
        time.sleep(interval_s)


def _lost_peer(error: BaseException) -> bool:
    """Whether ``error`` only says that another process went away (NCCL and the store raise
    DistError; gloo a RuntimeError from its transport)."""
    return isinstance(error, dist.DistError) or "/gloo/" in str(error)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
