"""Data-parallel training across processes (one per GPU, or gloo processes on a CPU).

Launch with ``torchrun --nproc-per-node N -m detr.cli train ...``: every process runs the same
``fit``; gradients are averaged by ``DistributedDataParallel``, each process trains on its
share of every global batch, and only rank 0 evaluates and writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .config import ConfigError


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every process when ``flag`` is True on at least one (a collective call)."""
        if not self.enabled:
            return flag
        value = torch.tensor(float(flag), device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def average_over_processes(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over data-parallel processes (itself in a single process).

    Normalising each process's sums by this global mean, then letting DDP average the
    gradients, gives exactly the single-process loss of the whole batch; averaging the
    processes' losses the same way gives the single-process loss values."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
        value = value / dist.get_world_size()
    return value


def setup_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the process group torchrun describes (or one already initialised) and pick this
    process's device; a single process otherwise."""
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if not dist.is_initialized():
        return Distributed(), _single_device(device_name)
    info = Distributed(dist.get_rank(), dist.get_world_size())
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", info.rank % torch.cuda.device_count())))
        torch.cuda.set_device(device)
        return info, device
    return info, torch.device("cpu")


def _single_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available; use --device cpu")
    return device


def processes_for_batch(batch_size: int, nodes: int, per_node: int) -> tuple[int, int]:
    """The most processes, as (nodes, processes per node) within those available, among which
    ``batch_size`` splits into equal shares (``fit`` requires it); fewer nodes on a tie, as they
    exchange gradients faster. The training is the same with any count: only its speed changes."""
    best = (1, 1)
    for n in range(1, nodes + 1):
        for p in range(1, per_node + 1):
            if batch_size % (n * p) == 0 and n * p > best[0] * best[1]:
                best = (n, p)
    return best
