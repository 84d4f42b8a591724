"""``cvat-detr status`` and ``cvat-detr cancel``: the trainer's jobs, followed with a progress bar."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Optional, TextIO

from cvat_plugin.cli.exits import EXIT_INTERRUPTED, EXIT_OK, TrainerJobFailed, UsageError
from cvat_plugin.cli.options import add_trainer_option, trainer_client
from cvat_plugin.home.jobs import JobNotFound
from cvat_plugin.nuclio.publish import (
    PublishError,
)
from cvat_plugin.progress import ProgressReporter

logger = logging.getLogger(__name__)


def follow_job(trainer, job_id: str, poll_interval: float, stdout: TextIO, pbar: ProgressReporter) -> Optional[dict]:
    """Follow a trainer job with a progress bar until it ends; None when Ctrl-C stopped following."""
    progress = _JobProgress(pbar)
    try:
        return trainer.follow(job_id, on_update=progress, poll_interval=poll_interval)
    except KeyboardInterrupt:
        print(f"Stopped following job {job_id}; it goes on in the trainer", file=stdout)
        return None
    finally:
        progress.close()


class _JobProgress:
    """Shows a trainer job's progress (percent) and logs each epoch's loss and mAP."""

    def __init__(self, pbar: ProgressReporter) -> None:
        self.pbar = pbar
        self.done = 0
        self.epoch = 0
        self.started = False

    def __call__(self, job: dict) -> None:
        if job.get("state") == "running" and not self.started:
            self.pbar.start(100, desc="Training", unit="%")
            self.started = True
        percent = int(100 * float(job.get("progress") or 0))
        if self.started and percent > self.done:
            self.pbar.advance(percent - self.done)
            self.done = percent
        if job.get("epoch", 0) > self.epoch and job.get("metrics"):
            self.epoch = job["epoch"]
            logger.info("Epoch %d/%d: loss %s, AP %s", job["epoch"], job.get("epochs"), job.get("loss"),
                        job["metrics"].get("AP"))

    def close(self) -> None:
        if self.started:
            self.pbar.finish()


def report_job(job: dict, stdout: TextIO) -> int:
    """The end of a trainer job in a few lines, and its exit code."""
    if job["state"] == "failed":
        raise TrainerJobFailed(f"job {job['id']}: {job.get('error') or 'no reason given'}")
    if job["state"] == "cancelled":
        print(f"Job {job['id']} was cancelled", file=stdout)
        return EXIT_INTERRUPTED
    metrics = job.get("best_metrics") or {}
    print(f"Model: {job['model_id']} (job {job['id']}, {job.get('epoch')} epochs; "
          f"AP {metrics.get('AP', float('nan')):.3f}, AP50 {metrics.get('AP50', float('nan')):.3f})", file=stdout)
    if job.get("function"):
        print(f"Published as {job['function']}: it is listed in CVAT's Models page", file=stdout)
    if job.get("error"):  # the model is saved; publishing it failed
        raise PublishError(job["error"])
    return EXIT_OK



class StatusCommand:
    description = "Show the trainer's jobs (newest first), or one job in detail; --follow waits for it to end."
    connections = ()

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("job", nargs="?", help="job id (default: list the jobs)")
        only = parser.add_mutually_exclusive_group()
        only.add_argument("--task", type=int, help="only the jobs of this CVAT task")
        only.add_argument("--project", type=int, help="only the jobs of this CVAT project")
        parser.add_argument("--follow", action="store_true", help="with JOB: follow it until it ends")
        parser.add_argument("--poll-interval", type=float, default=5.0, help="seconds between polls (default: 5)")
        parser.add_argument("--json", action="store_true", help="print the trainer's job objects as JSON")
        add_trainer_option(parser)

    def execute(self, args: argparse.Namespace, stdout: TextIO, pbar: ProgressReporter) -> int:
        if args.follow and not args.job:
            raise UsageError("--follow needs a JOB id")
        trainer = trainer_client(args)
        if not args.job:
            jobs = trainer.list(task_id=args.task, project_id=args.project)
            if args.json:
                json.dump(jobs, stdout, indent=2)
                print(file=stdout)
            else:
                _print_jobs(jobs, stdout)
            return EXIT_OK
        from cvat_plugin.trainer.client import FINAL_STATES

        job = _job_call(trainer.get, args.job)
        if args.follow and job["state"] not in FINAL_STATES:
            job = follow_job(trainer, args.job, args.poll_interval, stdout, pbar)
            if job is None:
                return EXIT_INTERRUPTED
        if args.json:
            json.dump(job, stdout, indent=2)
            print(file=stdout)
            return EXIT_OK
        _print_jobs([job], stdout)
        return report_job(job, stdout) if args.follow else EXIT_OK


class CancelCommand:
    description = ("Cancel a trainer job: a queued job at once, a running one within a training step (it keeps "
                   "its last checkpoint and its best model so far).")
    connections = ()

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("job", help="job id (see `cvat-detr status`)")
        add_trainer_option(parser)

    def execute(self, args: argparse.Namespace, stdout: TextIO, pbar: ProgressReporter) -> int:
        from cvat_plugin.trainer.client import TrainerRequestError

        trainer = trainer_client(args)
        try:
            job = _job_call(trainer.cancel, args.job)
        except TrainerRequestError as e:
            if e.status == 409:  # already over: nothing to do, and not an error for scripts
                print(f"Job {args.job} has already ended; nothing to cancel", file=stdout)
                return EXIT_OK
            raise
        if job["state"] == "cancelled":
            print(f"Job {args.job} cancelled", file=stdout)
        else:
            print(f"Job {args.job} is stopping; follow it with `cvat-detr status {args.job} --follow`", file=stdout)
        return EXIT_OK



def _job_call(call, job_id: str) -> dict:
    """``call(job_id)`` on the trainer, its 404 turned into :class:`JobNotFound`."""
    from cvat_plugin.trainer.client import TrainerRequestError

    try:
        return call(job_id)
    except TrainerRequestError as e:
        if e.status == 404:
            raise JobNotFound(job_id, where="the trainer", hint="list them with `cvat-detr status`") from e
        raise


def _print_jobs(jobs: list[dict], stdout: TextIO) -> None:
    if not jobs:
        print("No jobs", file=stdout)
        return
    rows = [("JOB", "TASK", "STATE", "EPOCH", "AP50", "MODEL", "NOTE")]
    for job in jobs:
        ap50 = (job.get("best_metrics") or job.get("metrics") or {}).get("AP50")
        note = job.get("error") or (f"published as {job['function']}" if job.get("function") else "")
        if job.get("state") == "running" and job.get("eta_s") is not None:
            note = note or f"about {max(1, round(job['eta_s'] / 60))} min left"
        source = job.get("task_id") or (f"project {job['project_id']}" if job.get("project_id") else "-")
        rows.append((job["id"], str(source), job["state"],
                     f"{job.get('epoch', 0)}/{job.get('epochs', 0)}", "-" if ap50 is None else f"{ap50:.3f}",
                     job.get("model_id") or "-", note))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1], file=stdout)



