"""Inference speed of our architectures vs Hugging Face DETR, same images, same run.

    python bench/inference.py --size 512 800 --batch 1
    python bench/inference.py --models detr-r50 fast --precision fp32 bf16 --size 512 --batch 1 8

Ours: each model preset (``detr.recipes.MODEL_PRESETS``) at each precision (fp32; bf16 autocast
with channels-last weights, ``detr.precision``). The peer: ``DetrForObjectDetection`` at the
DETR-R50 configuration in fp32. All in eval mode, no gradients, random init, the same random
images (no padding). Prints ms per batch, images/s, GFLOPs per image (counted by PyTorch's
``FlopCounterMode`` in fp32), peak memory (CPU: of a process running that model alone; CUDA:
allocated) and each model's speed-up over the peer.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    child_argv,
    interleaved,
    model_bench_parser,
    peak_memory_mb,
    prepare,
    random_batch,
    report,
    report_peak_of_the_only_run,
)
from bench.peer import build_peer  # noqa: E402
from detr.model import build_model_from_config  # noqa: E402
from detr.precision import autocast, prepare_images, prepare_model  # noqa: E402
from detr.recipes import MODEL_PRESETS  # noqa: E402


def build(preset: str, num_classes: int) -> torch.nn.Module:
    return build_model_from_config(MODEL_PRESETS[preset].replace(num_classes=num_classes)).eval()


def gflops_per_image(model: torch.nn.Module, images: torch.Tensor) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # its module tracker fails under inference_mode
        model(images)
    return counter.get_total_flops() / images.shape[0] / 1e9


def main() -> None:
    args = model_bench_parser(__doc__, batch_nargs="+", repeat=3, sizes=True).parse_args()
    device = prepare(args)
    models = {}
    for name in args.models:
        for precision in args.precision:
            model = build(name, args.classes).to(device)
            models[f"{name} {precision}"] = (prepare_model(model, precision), precision)
    peer = None if args.no_peer else build_peer(args.classes, backbone="resnet50").to(device).eval()

    for size in args.size:
        for batch in args.batch:
            images, _ = random_batch(batch, size, args.classes)
            images = images.to(device)
            runs: dict[str, Callable[[], None]] = {}
            for label, (model, precision) in models.items():
                inputs = prepare_images(images, precision)

                def run(model=model, inputs=inputs, precision=precision) -> None:
                    with torch.inference_mode(), autocast(device, precision):
                        model(inputs)

                runs[label] = run
            if peer is not None:
                pixel_mask = torch.ones(batch, size, size, dtype=torch.long, device=device)

                def run_peer() -> None:
                    with torch.inference_mode():
                        peer(pixel_values=images, pixel_mask=pixel_mask)

                runs["hf-detr fp32"] = run_peer
            if args.peak_only:
                report_peak_of_the_only_run(runs)
                return
            print(
                f"\ninference: batch {batch}, {size}x{size}, {device}, {torch.get_num_threads()} threads, "
                f"torch {torch.__version__}"
            )
            times = interleaved(runs, rounds=args.rounds, repeat=args.repeat, warmup=1, device=device)
            medians = report("", times, batch)
            flops = {name: gflops_per_image(build(name, args.classes).to(device), images[:1]) for name in args.models}
            print("  GFLOPs/img   " + "  ".join(f"{name} {value:.1f}" for name, value in flops.items()))
            peaks = peak_memory_mb(runs, device, child_argv(args, size, batch))
            print("  peak MiB     " + "  ".join(f"{label} {mb:.0f}" for label, mb in peaks.items()))
            if peer is not None:
                base = medians["hf-detr fp32"]
                print("  vs hf-detr   " + "  ".join(f"{label} {base / t:.2f}x" for label, t in medians.items()
                                                   if label != "hf-detr fp32"))


if __name__ == "__main__":
    main()
