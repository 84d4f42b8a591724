"""Training-step speed (forward, loss, backward, optimizer) vs Hugging Face DETR, same run.

    python bench/train_step.py --backbone resnet50 --batch 2 --size 512

Both models: same architecture and trainable parameters, random init, AdamW, grad clip 0.1,
the same random images and boxes. Prints ms/step, images/s and the speed-up.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import interleaved, model_bench_parser, prepare, random_batch, report  # noqa: E402
from bench.peer import build_peer, peer_targets  # noqa: E402
from detr import build_model  # noqa: E402
from detr.criterion import SetCriterion, total_loss  # noqa: E402
from detr.matcher import HungarianMatcher  # noqa: E402


def main() -> None:
    args = model_bench_parser(__doc__, batch_nargs=None, repeat=2).parse_args()
    device = prepare(args)

    ours = build_model(args.classes, backbone=args.backbone).to(device).train()
    criterion = SetCriterion(args.classes, HungarianMatcher()).to(device)
    peer = build_peer(args.classes, backbone=args.backbone).to(device).train()
    images, targets = random_batch(args.batch, args.size, args.classes)
    images = images.to(device)
    mask = torch.zeros(args.batch, args.size, args.size, dtype=torch.bool, device=device)
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    hf_targets = peer_targets(targets)
    pixel_mask = (~mask).long()

    def optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
        backbone = [p for n, p in model.named_parameters() if "backbone" in n and p.requires_grad]
        rest = [p for n, p in model.named_parameters() if "backbone" not in n and p.requires_grad]
        return torch.optim.AdamW([{"params": rest}, {"params": backbone, "lr": 1e-5}], lr=1e-4, weight_decay=1e-4)

    opt_ours, opt_peer = optimizer(ours), optimizer(peer)
    weights = criterion.weight_dict(6)

    def step_ours() -> None:
        losses = criterion(ours(images, mask), targets)
        loss = total_loss(losses, weights)
        opt_ours.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ours.parameters(), 0.1)
        opt_ours.step()

    def step_peer() -> None:
        loss = peer(pixel_values=images, pixel_mask=pixel_mask, labels=hf_targets).loss
        opt_peer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(peer.parameters(), 0.1)
        opt_peer.step()

    print(
        f"train step: {args.backbone}, batch {args.batch}, {args.size}x{args.size}, {device}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    times = interleaved(
        {"cvat-detr": step_ours, "hf-detr": step_peer}, rounds=args.rounds, repeat=args.repeat, warmup=1, device=device
    )
    report("", times, args.batch)


if __name__ == "__main__":
    main()
