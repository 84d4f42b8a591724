"""Small-data convergence vs Hugging Face DETR: AP50 over wall-clock time, same data, same budget, one run.

    python bench/convergence.py --budget 600                       # ours (the product default) vs HF DETR
    python bench/convergence.py --budget 1800 --only fast          # the 30-minute curve of the default
    python bench/convergence.py --budget 300 --ablation            # + the fast architecture's steps

Data: generated shapes (4 classes, 1-12 objects per image, small and partly occluded objects,
varied backgrounds and image sizes), 500 training and 100 held-out images, 192 px, batch 8,
random init everywhere. Runs:

- ``fast``: what a CVAT task of this size gets from random init (``plan_training``: the fast
  architecture with the small-data recipe), its schedule planned for the budget;
- ``previous``: the official architecture at the tiny size (ResNet-18, d=128, 2+2 layers, 30
  queries) with the small-data recipe, what the product trained before;
- ``hf-detr``: ``DetrForObjectDetection`` at that tiny size with HF's defaults (frozen batch
  norm, AdamW 2e-4), fed by the same loader;
- ``--ablation``: the fast architecture built up step by step from a plain multi-scale DETR
  (``+`` rows, cumulative) and the full one with each step taken out (``no-`` rows).

Each run trains until the budget of wall-clock seconds is spent, evaluating the held-out
images with pycocotools after every epoch (evaluation time counts against the budget alike for
every run). Prints AP50 at fixed times (and the dense head's own AP50 after NMS for the fast
architecture) and writes a PNG.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peer import build_peer, peer_targets  # noqa: E402
from detr.config import TINY_MODEL, ModelConfig, TrainConfig  # noqa: E402
from detr.data import DetectionDataset, collate, load_detection_data  # noqa: E402
from detr.engine import predict  # noqa: E402
from detr.evaluate import evaluate_predictions  # noqa: E402
from detr.recipes import plan_training  # noqa: E402
from detr.synthetic import make_shapes_dataset  # noqa: E402
from detr.train import fit  # noqa: E402
from detr.transforms import eval_transforms, train_transforms  # noqa: E402

CLASSES = ("circle", "square", "triangle", "cross")
#: The official architecture's size for ``previous`` and the peer.
MODEL = TINY_MODEL.replace(num_queries=30)
#: What every run shares: input size, batch and evaluation after each epoch.
COMMON = {"image_size": 192, "max_size": 320, "batch_size": 8, "num_workers": 0, "eval_every": 1}
#: Images per second each of our runs trains at here (2 cores, evaluation included), to plan its schedule
#: for the budget: a cosine schedule that ends with the budget, as a user who knows the time would set it.
IMAGES_PER_S = {"fast": 17.0, "previous": 28.0}
#: The fast architecture step by step: (name, model overrides, train overrides) of the product
#: default it differs from. Cumulative rows start from a multi-scale DETR with learnt queries,
#: global cross-attention, focal loss and no dense supervision.
_PLAIN = {"two_stage": False, "cross_attention": "global"}, {"dense_loss_coef": 0.0, "varifocal": False}
ABLATION: list[tuple[str, dict, dict]] = [
    ("+multi-scale", _PLAIN[0], _PLAIN[1]),
    ("+dense-head", _PLAIN[0], {"varifocal": False}),
    ("+two-stage", {"cross_attention": "global"}, {"varifocal": False}),
    ("+varifocal", {"cross_attention": "global"}, {}),
    ("+deformable", {}, {}),
    ("+light-backbone", {"backbone": "regnet_x_400mf"}, {}),
    ("no-multi-scale", {"feature_levels": 1}, {}),
    ("no-dense-head", {"two_stage": False}, {"dense_loss_coef": 0.0}),
    ("no-two-stage", {"two_stage": False}, {}),
    ("no-varifocal", {}, {"varifocal": False}),
    ("no-deformable", {"cross_attention": "global"}, {}),
]


def make_data(root: Path, seed: int) -> Path:
    return make_shapes_dataset(
        root / "shapes.zip", num_images=600, classes=CLASSES, objects=(1, 12), object_size=(0.06, 0.35),
        image_size=(160, 320), max_overlap=0.5, background="mixed", seed=seed,
    )


def run_ours(name: str, data: Path, out: Path, model: ModelConfig, train: TrainConfig, budget: float) -> list:
    """(seconds, AP50, dense-head AP50 or None) after each epoch of our engine until the budget is spent."""
    curve: list[tuple[float, float, float | None]] = []
    started = time.monotonic()

    def on_event(event: Any) -> None:
        if event.kind == "epoch_end" and event.metrics:
            dense = event.metrics.get("dense_AP50")
            curve.append((time.monotonic() - started, float(event.metrics.get("AP50") or 0.0), dense))
            extra = f"  dense head {dense:.3f}" if dense is not None else ""
            print(f"  {name}: {curve[-1][0]:6.0f} s  AP50 {curve[-1][1]:.3f}{extra}", flush=True)

    fit(data, out / name, model_config=model, train_config=train, val_fraction=100 / 600, callbacks=[on_event],
        should_stop=lambda: time.monotonic() - started > budget)
    return curve


class PeerAsDetr(torch.nn.Module):
    """HF DETR behind our model's call: (images, mask) -> pred_logits, pred_boxes; softmax with no-object last."""

    def __init__(self, peer: torch.nn.Module):
        super().__init__()
        self.peer = peer
        self.config = MODEL.replace(classifier="softmax")

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> dict:
        out = self.peer(pixel_values=images, pixel_mask=(~mask).long())
        return {"pred_logits": out.logits, "pred_boxes": out.pred_boxes}


def run_peer(data_path: Path, out: Path, budget: float, seed: int) -> list:
    """HF DETR's own loss and matcher, AdamW 2e-4, grad clip 0.1, our loader and evaluation."""
    torch.manual_seed(seed)
    data = load_detection_data(data_path, val_fraction=100 / 600, seed=0, work_dir=out / "peer-data")
    cfg = TrainConfig(**COMMON)
    train_set = DetectionDataset(data.train, train_transforms(cfg.image_size, cfg.max_size))
    val_set = DetectionDataset(data.val, eval_transforms(cfg.image_size, cfg.max_size))
    loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                         collate_fn=collate)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=cfg.batch_size, collate_fn=collate)
    peer = build_peer(len(data.labels), backbone=MODEL.backbone, hidden_dim=MODEL.hidden_dim, nheads=MODEL.nheads,
                      enc_layers=MODEL.enc_layers, dec_layers=MODEL.dec_layers,
                      dim_feedforward=MODEL.dim_feedforward, dropout=MODEL.dropout, num_queries=MODEL.num_queries)
    model = PeerAsDetr(peer)
    optimizer = torch.optim.AdamW([p for p in peer.parameters() if p.requires_grad], lr=2e-4, weight_decay=1e-4)
    curve: list[tuple[float, float]] = []
    started = time.monotonic()
    while time.monotonic() - started < budget:
        peer.train()
        for images, mask, targets in loader:
            loss = peer(pixel_values=images, pixel_mask=(~mask).long(), labels=peer_targets(targets)).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(peer.parameters(), 0.1)
            optimizer.step()
            if time.monotonic() - started > budget:
                break
        metrics = evaluate_predictions(data.val, predict(model, val_loader, torch.device("cpu")), data.labels).metrics
        curve.append((time.monotonic() - started, float(metrics.get("AP50") or 0.0), None))
        print(f"  hf-detr: {curve[-1][0]:6.0f} s  AP50 {curve[-1][1]:.3f}", flush=True)
    return curve


def at(curve: list, seconds: float, column: int = 1) -> float | None:
    """AP50 (``column`` 2: the dense head's) of the last evaluation finished by ``seconds`` (0 before the first)."""
    done = [point[column] for point in curve if point[0] <= seconds]
    return done[-1] if done else 0.0


def plot(curves: dict[str, list], path: Path, budget: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        ax.plot([0] + [p[0] / 60 for p in curve], [0] + [p[1] for p in curve], marker="o", ms=3, label=name)
    ax.set(xlabel=f"training time (min, {torch.get_num_threads()} CPU threads)", ylabel="held-out AP50",
           xlim=(0, budget / 60), ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=600, help="wall-clock seconds per run (default: 600)")
    parser.add_argument("--epochs", type=int, default=0,
                        help="epochs the previous recipe plans for (default: what the budget buys on 2 cores)")
    parser.add_argument("--fast-epochs", type=int, default=0,
                        help="epochs the fast runs' schedule plans for (default: what the budget buys on 2 cores)")
    parser.add_argument("--ablation", action="store_true", help="also run the fast architecture's steps")
    parser.add_argument("--only", nargs="*", help="run only these (fast, previous, hf-detr, ablation row names)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = PyTorch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench-convergence"), help="results folder")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="convergence-"))
    data = make_data(work, args.seed)

    # The fast default's cosine schedule ends with the budget (a user sets --epochs for their time).
    fast_epochs = args.fast_epochs or max(1, round(args.budget * IMAGES_PER_S["fast"] / 500))
    previous_epochs = args.epochs or max(1, round(args.budget * IMAGES_PER_S["previous"] / 500))
    fast = plan_training(num_train_images=500, train_overrides={**COMMON, "epochs": fast_epochs})
    previous = plan_training(recipe="small-data", preset="tiny", num_train_images=500,
                             model_overrides={"num_queries": MODEL.num_queries},
                             train_overrides={**COMMON, "epochs": previous_epochs})
    print(f"fast: {fast.reason}; {fast_epochs} epochs planned; previous: {previous_epochs}", flush=True)
    runs: dict[str, Callable[[], list]] = {
        "fast": lambda: run_ours("fast", data, work, fast.model, fast.train, args.budget),
        "previous": lambda: run_ours("previous", data, work, previous.model, previous.train, args.budget),
        "hf-detr": lambda: run_peer(data, work, args.budget, args.seed),
    }
    if args.ablation:
        for name, model_extra, train_extra in ABLATION:
            model = fast.model.replace(**model_extra)
            train = fast.train.replace(**train_extra)
            runs[name] = lambda n=name, m=model, t=train: run_ours(n, data, work, m, t, args.budget)
    curves = {}
    for name, run in runs.items():
        if args.only and name not in args.only:
            continue
        print(f"{name} ({args.budget:.0f} s)", flush=True)
        curves[name] = run()
    marks = [m for m in (60, 120, 180, 300, 450, 600, 900, 1200, 1800) if m <= args.budget] or [args.budget]
    print("\nheld-out AP50 at   " + "".join(f"{m / 60:>7.1f}m" for m in marks) + "   dense head at the end")
    for name, curve in curves.items():
        dense = at(curve, args.budget, column=2)
        print(f"  {name:<16}" + "".join(f"{at(curve, m):8.3f}" for m in marks)
              + (f"   {dense:.3f}" if dense is not None else "   -"))
    (args.out / "curves.json").write_text(json.dumps(curves, indent=1))
    plot(curves, args.out / "ap50_vs_time.png", args.budget)
    print(f"\ncurves: {args.out / 'curves.json'}  plot: {args.out / 'ap50_vs_time.png'}")


if __name__ == "__main__":
    main()
