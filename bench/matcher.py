"""Hungarian matching per training step: our all-layers matcher vs the reference approach, same run.

    python bench/matcher.py --batch 8 --queries 100 --targets 10 --layers 6 [--groups 8]

The reference approach (facebookresearch/detr ``HungarianMatcher``, as HF's): for each decoder
layer, one cost matrix over the whole batch [B*Q, sum of targets], copied to the host, split,
and only its diagonal blocks solved; one host sync per layer, and with Group DETR one per
layer and group. Ours:
per-image blocks [L, B, Q, T_max] for every layer, one host copy per step. Both solve with
scipy and must give the same assignments, which is checked before timing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import interleaved, report  # noqa: E402
from detr.box_ops import cxcywh_to_xyxy, generalized_box_iou  # noqa: E402
from detr.matcher import HungarianMatcher  # noqa: E402


@torch.no_grad()
def reference_match(logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict], weights=(1.0, 5.0, 2.0)):
    """The reference's per-layer full-cost-matrix matching; returns result[layer][image]."""
    cost_class, cost_bbox, cost_giou = weights
    tgt_ids = torch.cat([t["labels"] for t in targets])
    tgt_boxes = torch.cat([t["boxes"] for t in targets])
    sizes = [len(t["boxes"]) for t in targets]
    result = []
    for layer_logits, layer_boxes in zip(logits, boxes):
        batch, queries = layer_logits.shape[:2]
        prob = layer_logits.flatten(0, 1).softmax(-1)
        out_bbox = layer_boxes.flatten(0, 1)
        cost = (
            cost_bbox * torch.cdist(out_bbox, tgt_boxes, p=1)
            - cost_class * prob[:, tgt_ids]
            - cost_giou * generalized_box_iou(cxcywh_to_xyxy(out_bbox), cxcywh_to_xyxy(tgt_boxes))
        )
        cost = cost.view(batch, queries, -1).cpu()  # a host sync per layer
        per_image = [linear_sum_assignment(c[i]) for i, c in enumerate(cost.split(sizes, -1))]
        result.append([(np.asarray(r, np.int64), np.asarray(c, np.int64)) for r, c in per_image])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--targets", type=int, default=10, help="boxes per image")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--groups", type=int, default=1, help="Group DETR query groups (folded into the batch)")
    parser.add_argument("--classes", type=int, default=91)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    batch = args.batch * args.groups
    logits = torch.randn(args.layers, batch, args.queries, args.classes + 1, generator=gen).to(device)
    boxes = (torch.rand(args.layers, batch, args.queries, 4, generator=gen) * 0.5 + 0.25).to(device)
    targets = [
        {
            "labels": torch.randint(0, args.classes, (args.targets,), generator=gen).to(device),
            "boxes": (torch.rand(args.targets, 4, generator=gen) * 0.4 + 0.3).to(device),
        }
        for _ in range(batch)
    ]
    matcher = HungarianMatcher()

    def reference() -> list:
        """Group DETR's reference loops over the groups: layers x groups host syncs."""
        chunks = [slice(g * args.batch, (g + 1) * args.batch) for g in range(args.groups)]
        per_group = [reference_match(logits[:, c], boxes[:, c], targets[c]) for c in chunks]
        return [sum((group[layer] for group in per_group), []) for layer in range(args.layers)]

    ours, ref = matcher(logits, boxes, targets), reference()
    same = all(
        np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        for layer_a, layer_b in zip(ours, ref) for a, b in zip(layer_a, layer_b)
    )
    if not same:
        raise SystemExit("the two matchers disagree; the comparison would be meaningless")
    times = interleaved(
        {"cvat-detr": lambda: matcher(logits, boxes, targets),
         "reference": reference},
        rounds=args.rounds, repeat=args.repeat, warmup=2, device=device,
    )
    title = (f"matching per step on {device.type}: batch {args.batch} x {args.groups} group(s), "
             f"{args.queries} queries, {args.targets} boxes/image, {args.layers} layers "
             f"(host syncs: ours 1, reference {args.layers * args.groups})")
    report(title + f"; identical assignments: {same}", times, batch, unit="img")

if __name__ == "__main__":
    main()
