"""Inference speed vs Hugging Face DETR at the same configuration, same run.

    python bench/inference.py --backbone resnet50 --batch 2 --size 512

Both models: eval mode, no gradients, random init, the same random images (no padding).
Prints ms per batch, images/s and the speed-up, for each requested batch size.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import interleaved, model_bench_parser, prepare, random_batch, report  # noqa: E402
from bench.peer import build_peer  # noqa: E402
from detr import build_model  # noqa: E402


def main() -> None:
    args = model_bench_parser(__doc__, batch_nargs="+", repeat=3).parse_args()
    device = prepare(args)
    ours = build_model(args.classes, backbone=args.backbone).to(device).eval()
    peer = build_peer(args.classes, backbone=args.backbone).to(device).eval()

    for batch in args.batch:
        images, _ = random_batch(batch, args.size, args.classes)
        images = images.to(device)
        pixel_mask = torch.ones(batch, args.size, args.size, dtype=torch.long, device=device)

        def run_ours() -> None:
            with torch.inference_mode():
                ours(images)

        def run_peer() -> None:
            with torch.inference_mode():
                peer(pixel_values=images, pixel_mask=pixel_mask)

        print(
            f"inference: {args.backbone}, batch {batch}, {args.size}x{args.size}, {device}, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}"
        )
        times = interleaved(
            {"cvat-detr": run_ours, "hf-detr": run_peer},
            rounds=args.rounds,
            repeat=args.repeat,
            warmup=1,
            device=device,
        )
        report("", times, batch)


if __name__ == "__main__":
    main()
