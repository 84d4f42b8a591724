"""Training throughput of one job in 1, 2, ... processes, through the trainer's local launcher (torchrun for N > 1).

    python bench/processes.py --processes 1 2 --device cpu         # gloo on a CPU: checks the mechanism only
    python bench/processes.py --processes 1 2 4 8 --device cuda --preset fast --size 512 --batch 32

Generates a shapes dataset and trains the same job (same global batch, so the same training) in each
process count. Prints the images/s of the training steps after the first epoch (the job evaluates only
at its end, which is not timed), and the wall time of the whole run, process start-up included. A batch
that does not split into N equal shares trains in fewer processes; the count used is printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cvat_plugin.trainer.launch import LocalLauncher  # noqa: E402
from detr import TrainConfig, TrainEvent  # noqa: E402
from detr.distributed import processes_for_batch
from detr.recipes import MODEL_PRESETS  # noqa: E402
from detr.runs import RunSpec  # noqa: E402
from detr.synthetic import make_shapes_dataset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one process per GPU)")
    parser.add_argument("--preset", choices=MODEL_PRESETS, default="fast")
    parser.add_argument("--images", type=int, default=96, help="generated training images (plus 15 %% validation)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=8, help="the global batch (split among the processes)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="data-loader workers per process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = make_shapes_dataset(Path(tmp) / "data", num_images=round(args.images / 0.85), seed=0,
                                   image_size=(args.size, args.size), layout="cvat-folder")
        train = TrainConfig(epochs=args.epochs, batch_size=args.batch, image_size=args.size,
                            max_size=args.size * 4 // 3, num_workers=args.workers, device=args.device,
                            eval_every=args.epochs)
        print(f"{args.preset}, {args.size} px, batch {args.batch}, {args.epochs} epochs, {args.device}")
        for processes in args.processes:
            steps: list[TrainEvent] = []
            started = time.monotonic()
            spec = RunSpec(Path(data), Path(tmp) / f"run{processes}", MODEL_PRESETS[args.preset], train)
            LocalLauncher(processes).fit(spec, callbacks=[lambda e: steps.append(e) if e.kind == "step" else None])
            wall = time.monotonic() - started
            timed = [e for e in steps if e.epoch >= 1]
            first, last = timed[0], timed[-1]
            images = (last.global_step - first.global_step) * args.batch
            used = processes_for_batch(args.batch, 1, processes)[1]
            print(f"{used} process(es): {images / (last.elapsed_s - first.elapsed_s):7.1f} images/s in training "
                  f"steps, {wall:6.1f} s for the run")


if __name__ == "__main__":
    main()
