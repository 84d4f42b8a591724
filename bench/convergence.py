"""Small-data convergence vs Hugging Face DETR: AP50 over wall-clock time, same data, same budget, one run.

    python bench/convergence.py --budget 600                 # ours (small-data recipe) vs HF DETR
    python bench/convergence.py --budget 600 --ablation      # + each small-data technique alone

Data: generated shapes (4 classes, 1-12 objects per image, small and partly occluded objects,
varied backgrounds and image sizes), 500 training and 100 held-out images. Model size for
every run: ResNet-18, d=128, 2+2 layers, FFN 512, 30 queries, random init, 192 px, batch 8.
The peer is ``DetrForObjectDetection`` with HF's defaults (frozen batch norm, AdamW 2e-4),
fed by the same loader. Each run trains until the budget of wall-clock seconds is spent,
evaluating the held-out images with pycocotools after every epoch (evaluation time counts
against the budget alike for every run). Prints AP50 at fixed times and writes a PNG.
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
MODEL = TINY_MODEL.replace(num_queries=30)
#: What every run shares: input size, batch and evaluation after each epoch.
COMMON = {"image_size": 192, "max_size": 320, "batch_size": 8, "num_workers": 0, "eval_every": 1}
#: The official recipe at this model size, as the peer trains: one learning rate for all, frozen batch norm.
VANILLA = ({"backbone_norm": "frozen"}, {"lr": 2e-4, "lr_backbone": 2e-4})
#: Each small-data technique alone on top of the vanilla run (model overrides, train overrides).
TECHNIQUES: dict[str, tuple[dict, dict]] = {
    "trainable-norm": ({"backbone_norm": "batch"}, {}),
    "query-groups": ({}, {"query_groups": 8}),
    "denoising": ({}, {"denoising_groups": 5}),
    "focal": ({"classifier": "sigmoid"}, {"set_cost_class": 2.0, "ce_loss_coef": 2.0}),
    "lr-warmup-cosine": ({}, {"lr": 1e-3, "lr_backbone": 1e-3, "warmup_steps": 100, "schedule": "cosine"}),
    "fixed-scale": ({}, {"multi_scale": False, "random_crop": False}),
    "ema": ({}, {"ema_decay": 0.999}),
}


def make_data(root: Path, seed: int) -> Path:
    return make_shapes_dataset(
        root / "shapes.zip", num_images=600, classes=CLASSES, objects=(1, 12), object_size=(0.06, 0.35),
        image_size=(160, 320), max_overlap=0.5, background="mixed", seed=seed,
    )


def run_ours(name: str, data: Path, out: Path, model: ModelConfig, train: TrainConfig, budget: float) -> list:
    """(seconds, AP50) after each epoch of our engine until the budget is spent."""
    curve: list[tuple[float, float]] = []
    started = time.monotonic()

    def on_event(event: Any) -> None:
        if event.kind == "epoch_end" and event.metrics:
            curve.append((time.monotonic() - started, float(event.metrics.get("AP50") or 0.0)))
            print(f"  {name}: {curve[-1][0]:6.0f} s  AP50 {curve[-1][1]:.3f}", flush=True)

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
        curve.append((time.monotonic() - started, float(metrics.get("AP50") or 0.0)))
        print(f"  hf-detr: {curve[-1][0]:6.0f} s  AP50 {curve[-1][1]:.3f}", flush=True)
    return curve


def at(curve: list[tuple[float, float]], seconds: float) -> float:
    """AP50 of the last evaluation finished by ``seconds`` (0 before the first)."""
    return max([ap for t, ap in curve if t <= seconds], default=0.0) if curve else 0.0


def plot(curves: dict[str, list], path: Path, budget: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        ax.plot([0] + [t / 60 for t, _ in curve], [0] + [ap for _, ap in curve], marker="o", ms=3, label=name)
    ax.set(xlabel="training time (min, 2 CPU cores)", ylabel="held-out AP50", xlim=(0, budget / 60), ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=600, help="wall-clock seconds per run (default: 600)")
    parser.add_argument("--epochs", type=int, default=10,
                        help="epochs the schedules plan for (default: 10, about what 600 s buys on 2 cores)")
    parser.add_argument("--ablation", action="store_true", help="also run vanilla plus each technique alone")
    parser.add_argument("--only", nargs="*", help="run only these (small-data, hf-detr, vanilla, technique names)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = PyTorch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench-convergence"), help="results folder")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="convergence-"))
    data = make_data(work, args.seed)

    small = plan_training(recipe="small-data", preset="tiny", num_train_images=500,
                          model_overrides={"num_queries": MODEL.num_queries},
                          train_overrides={**COMMON, "epochs": args.epochs})
    runs: dict[str, Callable[[], list]] = {
        "small-data": lambda: run_ours("small-data", data, work, small.model, small.train, args.budget),
        "hf-detr": lambda: run_peer(data, work, args.budget, args.seed),
    }
    if args.ablation:
        variants = {"vanilla": ({}, {})} | TECHNIQUES
        for name, (model_extra, train_extra) in variants.items():
            model = MODEL.replace(**{**VANILLA[0], **model_extra})
            train = TrainConfig.from_dict({**COMMON, "epochs": args.epochs, **VANILLA[1], **train_extra})
            runs[name] = lambda n=name, m=model, t=train: run_ours(n, data, work, m, t, args.budget)
    curves = {}
    for name, run in runs.items():
        if args.only and name not in args.only:
            continue
        print(f"{name} ({args.budget:.0f} s)", flush=True)
        curves[name] = run()
    marks = [m for m in (60, 120, 180, 300, 450, 600, 900, 1200) if m <= args.budget] or [args.budget]
    print("\nheld-out AP50 at   " + "".join(f"{m / 60:>7.1f}m" for m in marks))
    for name, curve in curves.items():
        print(f"  {name:<16}" + "".join(f"{at(curve, m):8.3f}" for m in marks))
    (args.out / "curves.json").write_text(json.dumps(curves, indent=1))
    plot(curves, args.out / "ap50_vs_time.png", args.budget)
    print(f"\ncurves: {args.out / 'curves.json'}  plot: {args.out / 'ap50_vs_time.png'}")


if __name__ == "__main__":
    main()
