"""Shared helpers for the benchmarks: random inputs, timing, and printing a comparison."""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch


def random_batch(batch: int, size: int, num_classes: int, boxes_per_image: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=gen)
    targets = []
    for _ in range(batch):
        centers = torch.rand(boxes_per_image, 2, generator=gen) * 0.6 + 0.2
        sizes = torch.rand(boxes_per_image, 2, generator=gen) * 0.3 + 0.05
        targets.append(
            {
                "labels": torch.randint(0, num_classes, (boxes_per_image,), generator=gen),
                "boxes": torch.cat([centers, sizes], 1),
            }
        )
    return images, targets


def model_bench_parser(
    description: str, *, batch_nargs: str | None, repeat: int, sizes: bool = False
) -> argparse.ArgumentParser:
    """The options every model benchmark takes: models, precisions, input, timing rounds, device, threads.
    ``batch_nargs="+"`` and ``sizes`` take several batch sizes and image sizes."""
    from detr.recipes import MODEL_PRESETS

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["detr-r50", "fast", "fast-light"], choices=list(MODEL_PRESETS),
                        help="our model presets to run (default: detr-r50 fast fast-light)")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--no-peer", action="store_true", help="skip Hugging Face DETR")
    parser.add_argument("--batch", type=int, nargs=batch_nargs, default=[1] if batch_nargs else 2)
    if sizes:
        parser.add_argument("--size", type=int, nargs="+", default=[512, 800])
    else:
        parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--classes", type=int, default=91)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=repeat)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = PyTorch's default)")
    parser.add_argument("--peak-only", action="store_true", help=argparse.SUPPRESS)  # see peak_memory_mb
    return parser


def peak_memory_mb(
    runs: dict[str, Callable[[], None]], device: torch.device, child_argv: Callable[[str, str], list[str]]
) -> dict[str, float]:
    """Peak memory of each run in MiB: on CUDA the allocator's peak over two calls; on a CPU the
    peak resident memory of a fresh process that builds and runs that one alone (``script --peak-only``
    with ``child_argv(preset, precision)``), so that models do not add up."""
    peaks = {}
    for label, run in runs.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            run()
            run()
            peaks[label] = torch.cuda.max_memory_allocated(device) / 2**20
            continue
        name, precision = label.rsplit(" ", 1)
        command = [sys.executable, sys.argv[0], *child_argv(name, precision), "--peak-only"]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        peaks[label] = float(result.stdout.strip().splitlines()[-1])
    return peaks


def report_peak_of_the_only_run(runs: dict[str, Callable[[], None]]) -> None:
    """The child's side of ``peak_memory_mb``: two calls of its one run, then its peak RSS in MiB."""
    (run,) = runs.values()
    run()
    run()
    print(_peak_rss_mb())


def _peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's ``VmHWM`` starts afresh at ``exec``, whereas
    ``ru_maxrss`` keeps the peak of the parent that forked this process."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_argv(args: argparse.Namespace, size: int, batch: int) -> Callable[[str, str], list[str]]:
    """The command line of a child that runs one model (``hf-detr`` for the peer) at one precision."""

    def argv(name: str, precision: str) -> list[str]:
        models = [] if name == "hf-detr" else [name]
        return ["--models", *models, "--precision", precision, "--size", str(size), "--batch", str(batch),
                "--classes", str(args.classes), "--device", args.device, "--threads", str(args.threads),
                *([] if name == "hf-detr" else ["--no-peer"])]

    return argv


def prepare(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads``, seed, and return the ``--device``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return torch.device(args.device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    runs: dict[str, Callable[[], None]], *, rounds: int, repeat: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each function, timed in alternating rounds so that machine load
    affects both sides alike."""
    for fn in runs.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(repeat):
                fn()
            sync(device)
            times[name].append((time.perf_counter() - start) / repeat)
    return times


def report(title: str, times: dict[str, list[float]], unit_items: int, unit: str = "img") -> dict[str, float]:
    """Print median seconds per call and throughput for each side, then ours/peer speed-up."""
    print(title)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, med in medians.items():
        spread = f"{min(times[name]) * 1000:.0f}-{max(times[name]) * 1000:.0f}"
        print(f"  {name:<16} {med * 1000:9.1f} ms/step  ({spread} ms)  {unit_items / med:7.2f} {unit}/s")
    peer = next((name for name in medians if name != "cvat-detr"), None)
    if "cvat-detr" in medians and peer is not None:
        print(f"  speed-up     {medians[peer] / medians['cvat-detr']:.2f}x ({peer} time / our time)")
    return medians
