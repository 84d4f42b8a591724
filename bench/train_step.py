"""Training-step speed (forward, loss, backward, optimizer) of our architectures vs Hugging Face DETR, same run.

    python bench/train_step.py --size 512 --batch 2
    python bench/train_step.py --models fast fast-light --precision fp32 bf16 --size 192 --batch 8

Ours: each model preset at each precision, with its training objective (the set loss; the fast
architecture adds its dense head's loss) through ``detr.engine.train_step`` as ``fit`` runs it
(AdamW, grad clip 0.1). The peer: ``DetrForObjectDetection`` at the DETR-R50 configuration in fp32
with the same trainable parameters. Random init, the same random images and boxes. Prints ms/step,
images/s, peak memory (CPU: of a process running that model alone; CUDA: allocated), and each
speed-up over the peer.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import torch

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
from bench.peer import build_peer, peer_targets  # noqa: E402
from detr.config import TrainConfig  # noqa: E402
from detr.engine import train_step  # noqa: E402
from detr.model import build_model_from_config  # noqa: E402
from detr.objectives import build_objective  # noqa: E402
from detr.precision import prepare_model  # noqa: E402
from detr.recipes import MODEL_PRESETS  # noqa: E402


def optimizer(model: torch.nn.Module, extra: list[torch.nn.Parameter] = ()) -> torch.optim.Optimizer:
    backbone = [p for n, p in model.named_parameters() if "backbone" in n and p.requires_grad]
    rest = [p for n, p in model.named_parameters() if "backbone" not in n and p.requires_grad] + list(extra)
    return torch.optim.AdamW([{"params": rest}, {"params": backbone, "lr": 1e-5}], lr=1e-4, weight_decay=1e-4)


def main() -> None:
    args = model_bench_parser(__doc__, batch_nargs=None, repeat=2).parse_args()
    device = prepare(args)
    images, targets = random_batch(args.batch, args.size, args.classes)
    images = images.to(device)
    mask = torch.zeros(args.batch, args.size, args.size, dtype=torch.bool, device=device)
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    batch = (images, mask, targets)

    runs: dict[str, Callable[[], None]] = {}
    for name in args.models:
        for precision in args.precision:
            model = build_model_from_config(MODEL_PRESETS[name].replace(num_classes=args.classes)).to(device).train()
            prepare_model(model, precision)
            objective = build_objective(model, TrainConfig(set_cost_class=2.0))
            opt = optimizer(model)

            def step(model=model, objective=objective, opt=opt, precision=precision) -> None:
                train_step(objective.forward, objective, opt, batch, device, clip_max_norm=0.1, precision=precision)

            runs[f"{name} {precision}"] = step
    if not args.no_peer:
        peer = build_peer(args.classes, backbone="resnet50").to(device).train()
        opt_peer = optimizer(peer)
        hf_targets = peer_targets(targets)
        pixel_mask = (~mask).long()

        def step_peer() -> None:
            loss = peer(pixel_values=images, pixel_mask=pixel_mask, labels=hf_targets).loss
            opt_peer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(peer.parameters(), 0.1)
            opt_peer.step()

        runs["hf-detr fp32"] = step_peer
    if args.peak_only:
        report_peak_of_the_only_run(runs)
        return

    print(
        f"train step: batch {args.batch}, {args.size}x{args.size}, {device}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    times = interleaved(runs, rounds=args.rounds, repeat=args.repeat, warmup=1, device=device)
    medians = report("", times, args.batch)
    peaks = peak_memory_mb(runs, device, child_argv(args, args.size, args.batch))
    print("  peak MiB     " + "  ".join(f"{label} {mb:.0f}" for label, mb in peaks.items()))
    if "hf-detr fp32" in medians:
        base = medians["hf-detr fp32"]
        print("  vs hf-detr   " + "  ".join(f"{label} {base / t:.2f}x" for label, t in medians.items()
                                           if label != "hf-detr fp32"))


if __name__ == "__main__":
    main()
