"""One training process of a launched run: ``python -m cvat_plugin.trainer.launch.worker RUN_DIR``.

torchrun starts one per GPU, on the trainer's node or in each pod of a PyTorchJob. Each reads the run's
request (a ``detr.runs.RunSpec``), trains it (data-parallel across the processes: ``detr.distributed``), and stops
after its current step with a checkpoint once the trainer writes the stop file, or when it gets SIGTERM
(its pod is deleted, torchrun is stopped). ``fit`` makes every process agree on stopping at the same step.
Rank 0 writes the events and the result; a process that fails records its error (``launch.files``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Sequence

import torch.distributed as dist

from cvat_plugin.trainer.launch.files import EventLog, RunFiles

logger = logging.getLogger(__name__)


class StopSignal:
    """``fit``'s ``should_stop``: the trainer's stop file, or SIGTERM."""

    def __init__(self, files: RunFiles):
        self.files = files
        self.signalled = False

    def __call__(self) -> bool:
        return self.signalled or self.files.stop_requested()

    def on_signal(self, signum: int, frame: object) -> None:
        logger.info("Signal %d: stopping after this step with a checkpoint", signum)
        self.signalled = True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cvat_plugin.trainer.launch.worker", description=__doc__)
    parser.add_argument("run_dir", help="the run folder; its launch/request.json says what to train")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s")
    files = RunFiles(args.run_dir)
    stop = StopSignal(files)
    signal.signal(signal.SIGTERM, stop.on_signal)
    try:
        spec = files.read_request()
        result = spec.fit(callbacks=[EventLog(files)] if rank == 0 else [], should_stop=stop)
    except BaseException as e:  # recorded for the trainer whatever it is; the traceback goes to the log
        logger.exception("Training failed")
        files.write_error(rank, e)
        return 1
    if rank == 0:
        files.write_result(result)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
