"""Training on the trainer's own node: in its process with one GPU or none, else one process per GPU.

Several processes are started with torchrun (``python -m torch.distributed.run --standalone``, the
same Python as the trainer) on the launch worker; the trainer follows them through the run folder
(``launch.files``): it relays their events to the job, asks them to stop with the stop file, and
reads their result back. Their output goes to the trainer's log; when one fails, the job's error
is the engine's message if the process recorded one, else the last lines of their output.

If the trainer dies, torchrun gets SIGTERM (Linux's parent-death signal) and passes it on: the
processes stop after their step with a checkpoint, and the job resumes when the trainer restarts.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from typing import Callable, Sequence

from cvat_plugin.trainer.launch.files import WORKER_MODULE, LaunchError, RunFiles, follow
from detr import FitResult, TrainEvent
from detr.distributed import processes_for_batch
from detr.runs import RunSpec

logger = logging.getLogger(__name__)

#: Lines of the processes' output a failure quotes.
OUTPUT_TAIL_LINES = 12
#: How long processes that were asked to stop because the trainer failed may take for their checkpoint.
STOP_TIMEOUT_S = 60.0
#: How long the output is read on after torchrun ended.
OUTPUT_JOIN_S = 10.0
_PR_SET_PDEATHSIG = 1


class LocalLauncher:
    def __init__(self, processes: int = 1, *, poll_interval_s: float = 0.2):
        """``processes``: the most processes a job trains in (one per GPU); 1 trains in this process."""
        self.processes = processes
        self.poll_interval_s = poll_interval_s

    @property
    def description(self) -> str:
        return "in the trainer's process" if self.processes == 1 else f"up to {self.processes} processes (torchrun)"

    def fit(self, spec: RunSpec, *, callbacks: Sequence[Callable[[TrainEvent], None]] = (),
            should_stop: Callable[[], bool] | None = None) -> FitResult:
        """``detr.fit``'s contract, in as many processes as the batch splits among (see ``processes_for_batch``)."""
        processes = 1
        if self.processes > 1:
            _, processes = processes_for_batch(spec.train_config.batch_size, 1, self.processes)
        if processes < self.processes:
            logger.warning("Training in %d of %d processes: the batch splits into equal shares among %d at most; "
                           "a batch_size that is a multiple of %d uses every GPU", processes, self.processes,
                           processes, self.processes)
        if processes == 1:
            return spec.fit(callbacks=callbacks, should_stop=should_stop)
        files = RunFiles(spec.out_dir)
        files.prepare(spec)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   "-m", WORKER_MODULE, str(files.run_dir)]
        logger.info("Starting %d training processes: %s", processes, " ".join(command))
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_die_with_parent)
        output = _Output(process)
        try:
            follow(files, callbacks, should_stop or (lambda: False), ended=lambda: process.poll() is not None,
                   interval_s=self.poll_interval_s)
        finally:
            if process.poll() is None:  # the trainer failed (e.g. writing the job): stop them with a checkpoint
                files.request_stop()
                _wait(process, STOP_TIMEOUT_S)
            output.join()
        result = files.read_result()
        if process.returncode == 0 and result is not None:
            return result
        failure = files.failure()
        if failure is not None:
            raise failure
        raise LaunchError(f"the training processes failed (torchrun exit code {process.returncode}); the last "
                          "lines of their output:\n" + "\n".join(output.tail))


class _Output:
    """Copies the processes' output to the trainer's log, keeping the last lines for an error."""

    def __init__(self, process: subprocess.Popen):
        self.tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
        self._thread = threading.Thread(target=self._copy, args=(process.stdout,), name="detr-train-output",
                                        daemon=True)
        self._thread.start()

    def _copy(self, stream) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.tail.append(line)
                logger.info("| %s", line)

    def join(self) -> None:
        self._thread.join(OUTPUT_JOIN_S)  # a process left behind may hold the pipe open


def _wait(process: subprocess.Popen, timeout: float) -> None:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        logger.error("The training processes did not stop within %.0f s: killing them", timeout)
        process.kill()
        process.wait()


if sys.platform == "linux":
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it

    def _die_with_parent() -> None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
else:
    _die_with_parent = None
