"""One background worker that runs queued jobs one after another (FIFO) with ``detr.fit``, through a
launcher (``cvat_plugin.trainer.launch``: in this process, one process per GPU, or on a cluster).

The trainer function owns its GPUs, so jobs never run side by side. The HTTP handler
only enqueues and returns; this thread trains. It stops cleanly in two ways:

- ``cancel(job)``: the request is written to the job at once and its ``should_stop`` turns
  true; fit saves a checkpoint and returns, the job ends ``cancelled``. A cancel that arrives
  during the last step, the final evaluation or saving still holds: the job ends ``cancelled``
  and its model is neither registered nor published. Only once registration has begun is it
  too late (409). A restart never resumes a job whose cancel was recorded;
- ``terminate()`` (Nuclio's termination signal): the same, but the job becomes
  ``interrupted`` and is resumed from that checkpoint when the function starts again.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from pathlib import Path
from typing import Callable, Optional

from cvat_plugin.home.jobs import FINAL_STATES, WAITING_STATES, Job, JobStore, utc_now
from cvat_plugin.home.layout import DetrHome, copy_atomic
from cvat_plugin.home.models import ModelStore
from cvat_plugin.responses import RequestError
from cvat_plugin.trainer.launch import Launcher, LocalLauncher
from cvat_plugin.trainer.progress import JobProgress
from cvat_plugin.training.run import RunRequest, plan, register
from detr import FitResult
from detr.checkpoint import DiskFullError
from detr.files import DISK_FULL_ERRNOS
from detr.train import CHECKPOINT_FILE

logger = logging.getLogger(__name__)

#: How many names of skipped images a job lists (all are in the trainer's log).
SKIPPED_NAMES = 5

SuccessHook = Callable[[Job, Path], Optional[str]]
"""Called after a successful job's model is registered, with the job and the model's folder.

Returns the name of the Nuclio function that now serves the model (publishing), or None.
An exception is recorded in the job's ``error``; the job still succeeded.
"""


class JobRunner:
    def __init__(self, store: JobStore, home: DetrHome, *, on_success: SuccessHook | None = None,
                 launcher: Launcher | None = None):
        """``launcher``: where jobs train (``cvat_plugin.trainer.launch``); by default in this process."""
        self.store = store
        self.home = home
        self.models = ModelStore(home)
        self.launcher = launcher or LocalLauncher()
        self.on_success = on_success
        self._queue: deque[str] = deque()
        self._cond = threading.Condition()
        self._current: str | None = None
        self._cancel = threading.Event()
        self._terminating = threading.Event()
        self._registering = False
        """The current job finished training and its model is being registered: too late to cancel."""
        self._thread: threading.Thread | None = None

    # --- control, called from the handler ---------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="detr-trainer-worker", daemon=True)
        self._thread.start()

    def recover(self) -> None:
        """After a (re)start: jobs whose cancel was recorded end cancelled, jobs that were running are
        marked interrupted; every waiting job is queued."""
        for job in self.store.jobs():
            if job.state not in FINAL_STATES and job.cancel_requested:
                logger.info("Job %s was cancelled at %s before the trainer stopped: it stays cancelled", job.id,
                            job.cancel_requested)
                self.store.update(job.id, state="cancelled", finished=utc_now(), eta_s=None)
            elif job.state == "running":
                logger.warning("Job %s was running when the trainer stopped: it resumes from its last checkpoint",
                               job.id)
                self.store.update(job.id, state="interrupted")
        for job in self.store.waiting():
            self.enqueue(job.id)

    def enqueue(self, job_id: str) -> None:
        with self._cond:
            self._queue.append(job_id)
            self._cond.notify()

    def cancel(self, job_id: str) -> Job:
        """Cancel a waiting job at once, or ask the running one to stop (it ends within a step)."""
        with self._cond:
            job = self.store.get(job_id)
            if job.state in FINAL_STATES:
                raise RequestError(f"job {job_id} already {job.state}; there is nothing to cancel", status=409)
            if job_id == self._current:
                if self._registering:
                    raise RequestError(
                        f"job {job_id} has finished training and its model is being registered; it can no longer "
                        "be cancelled: unpublish or delete the model once the job has succeeded", status=409)
                # Written first: a cancel that could not be recorded is refused (507), not half done.
                cancelled = self.store.update(job_id, cancel_requested=job.cancel_requested or utc_now())
                self._cancel.set()
                logger.info("Job %s: cancel requested", job_id)
                return cancelled
            if job_id in self._queue:
                self._queue.remove(job_id)
            logger.info("Job %s: cancelled before it started", job_id)
            return self.store.update(job_id, state="cancelled", finished=utc_now(), eta_s=None)

    def terminate(self, timeout: float | None = None) -> bool:
        """Stop the worker: the running job saves a checkpoint and stays resumable. True if it stopped in time."""
        self._terminating.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def current(self) -> str | None:
        """The job the worker runs; None once it has ended (the worker may still be tidying up)."""
        job_id = self._current
        return job_id if job_id is not None and self.store.get(job_id).state not in FINAL_STATES else None

    @property
    def queued(self) -> list[str]:
        with self._cond:
            return list(self._queue)

    # --- the worker thread ------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._terminating.is_set():
                    self._cond.wait()
                if self._terminating.is_set():
                    return
                self._current = self._queue.popleft()
                self._cancel.clear()
            try:
                self._run(self._current)
            except Exception:  # a bug here must not kill the worker and strand the queue
                logger.exception("Job %s: unexpected error in the trainer", self._current)
            finally:
                with self._cond:
                    self._current = None

    def _should_stop(self) -> bool:
        return self._cancel.is_set() or self._terminating.is_set()

    def _run(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job.state not in WAITING_STATES:
            return
        run_dir = self.home.runs / job.id
        if self._cancel.is_set():
            self.store.update(job_id, state="cancelled", finished=utc_now(), eta_s=None)
            return
        self.store.update(job_id, state="running", started=job.started or utc_now(), finished=None, error=None)
        logger.info("Job %s: %s on dataset %s", job_id, "resuming" if job.state == "interrupted" else "starting",
                    job.dataset_id)
        try:
            result = self._fit(job, run_dir)
            if result.skipped_images:
                self.store.update(job_id, skipped_images={"count": len(result.skipped_images),
                                                          "first": result.skipped_images[:SKIPPED_NAMES]})
            with self._cond:  # a cancel is honoured up to this point, and refused after it
                stopped = result.status == "cancelled" or self._should_stop()
                self._registering = not stopped
            if not stopped:
                try:
                    self._succeed(job, result)
                finally:
                    with self._cond:
                        self._registering = False
                return
        except Exception as e:
            logger.exception("Job %s failed", job_id)
            self._fail(job_id, self._describe(e, job_id))
            return
        if self._terminating.is_set() and not self._cancel.is_set():
            logger.info("Job %s: checkpoint saved; it resumes when the trainer restarts", job_id)
            self.store.update(job_id, state="interrupted", eta_s=None)
        else:
            logger.info("Job %s cancelled after %d epoch(s)", job_id, result.epochs_done)
            self.store.update(job_id, state="cancelled", finished=utc_now(), eta_s=None)

    def _fit(self, job: Job, run_dir: Path) -> FitResult:
        checkpoint = run_dir / CHECKPOINT_FILE
        if job.resume_from and not checkpoint.exists():
            copy_atomic(self.home.runs / job.resume_from / CHECKPOINT_FILE, checkpoint)
        spec = plan(self.home, _request(job))
        if spec.reason is not None:
            logger.info("Job %s: %s", job.id, spec.reason)
            self.store.update(job.id, recipe=spec.reason)
        return self.launcher.fit(spec, callbacks=[JobProgress(self.store, job.id)], should_stop=self._should_stop)

    def _fail(self, job_id: str, error: str) -> None:
        """Record a failure; when the volume cannot take even job.json, the job still answers as failed
        until a restart, which resumes it from its last checkpoint once there is room."""
        changes = {"state": "failed", "finished": utc_now(), "eta_s": None, "error": error}
        try:
            self.store.update(job_id, **changes)
        except OSError as e:
            logger.error("Job %s: cannot record its failure in job.json (%s)", job_id, e)
            self.store.update(job_id, persist=False, **changes)

    def _describe(self, error: Exception, job_id: str) -> str:
        """One line for the job's ``error``: a full volume says so and how much to free; the engine's other
        messages already say what to change."""
        needed_mb, path = _disk_full(error)
        if needed_mb is not None:
            where = path.relative_to(self.home.root) if path and path.is_relative_to(self.home.root) else path
            return self.home.disk_full(
                needed_mb, writing=str(where or f"the files of job {job_id}"),
                then=f'continue from the last checkpoint with a job of "resume_from": "{job_id}"')
        text = str(error).strip() or type(error).__name__
        plain = isinstance(error, (ValueError, RuntimeError))
        return text if plain else f"{type(error).__name__}: {text}"

    def _succeed(self, job: Job, result: FitResult) -> None:
        entry = register(self.home, _request(job), result)
        model_id, folder = entry.id, entry.folder
        best_metrics = result.best_metrics
        changes: dict = {"state": "succeeded", "finished": utc_now(), "eta_s": None, "progress": 1.0,
                         "model_id": model_id, "best_metrics": best_metrics}
        if self.on_success is not None:
            try:
                changes["function"] = self.on_success(self.store.get(job.id), folder)
            except Exception as e:
                logger.exception("Job %s: the model was saved as %s but the success hook failed", job.id, model_id)
                changes["error"] = f"model {model_id} was saved, but publishing it failed: {self._describe(e, job.id)}"
        self.store.update(job.id, **changes)
        logger.info("Job %s succeeded: model %s, AP %s", job.id, model_id, best_metrics.get("AP"))


def _request(job: Job) -> RunRequest:
    """The training a job asks for: its run folder is ``runs/<job id>``."""
    return RunRequest(dataset_id=job.dataset_id, run_id=job.id, task_id=job.task_id, project_id=job.project_id,
                      options=job.options)


def _disk_full(error: BaseException) -> tuple[int | None, Path | None]:
    """(MB to free, the file) when ``error`` or its cause is a full disk, else (None, None)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, DiskFullError):
            return seen.needed_mb, seen.path
        if isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS:
            return 1, Path(seen.filename) if isinstance(seen.filename, str) else None
        seen = seen.__cause__ or seen.__context__
    return None, None
