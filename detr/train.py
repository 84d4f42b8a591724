"""The fit loop: data, model, optimiser, schedule, checkpoints, resume, cancel, events.

Progress is reported as small frozen ``TrainEvent`` objects to callbacks (a CLI progress bar,
the trainer function's job file, tests), never by reaching into the loop's state.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Sampler

from .checkpoint import (
    CHECKPOINT_FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    atomic_save,
    atomic_write_json,
    load_backbone_weights,
    load_detr_weights,
    load_model_file,
    model_config_of,
    safe_load,
    save_model_file,
)
from .config import ConfigError, ModelConfig, TrainConfig, cpu_count
from .data import DatasetError, DetectionData, DetectionDataset, collate, load_detection_data
from .distributed import Distributed, average_over_processes, setup_distributed
from .engine import predict, predict_heads, train_step
from .evaluate import DEFAULT_THRESHOLD, EvalResult, coco_map, evaluate_predictions
from .model import build_model_from_config
from .objectives import build_objective
from .precision import prepare_model, resolve_precision
from .report import write_report
from .transforms import eval_transforms, train_transforms

logger = logging.getLogger(__name__)

#: A run folder's last training checkpoint: what a resume continues from.
CHECKPOINT_FILE = "checkpoint.pt"

#: Consecutive skipped (non-finite) steps after which training stops with advice.
MAX_BAD_STEPS = 20
#: Minimum seconds between two "step" events (each one costs a device sync for the loss value).
STEP_EVENT_INTERVAL_S = 0.5


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what to change."""


@dataclass(frozen=True)
class TrainEvent:
    kind: str  # "train_start" | "step" | "epoch_end" | "train_end"
    epoch: int  # 0-based epoch in progress (or just finished, for epoch_end)
    epochs: int
    step: int  # steps done in this epoch
    steps_per_epoch: int
    global_step: int
    total_steps: int
    losses: dict[str, float] = field(default_factory=dict)  # running means over the epoch
    metrics: dict = field(default_factory=dict)  # validation metrics (epoch_end, train_end)
    lr: float = 0.0
    elapsed_s: float = 0.0
    eta_s: float | None = None
    status: str = ""  # train_end: completed | cancelled | early_stopped


@dataclass
class FitResult:
    status: str  # "completed" | "cancelled" | "early_stopped"
    epochs_done: int
    best_metrics: dict
    model_path: Path
    checkpoint_path: Path
    out_dir: Path
    skipped_images: list[str] = field(default_factory=list)
    """Images the run left out because their file is missing or unreadable."""


Callback = Callable[[TrainEvent], None]


def read_run_config(out_dir: str | Path) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configuration stored in a run's last checkpoint (to resume with overrides)."""
    ckpt = _load_checkpoint(Path(out_dir) / CHECKPOINT_FILE)
    return ModelConfig.from_dict(ckpt["model_config"]), TrainConfig.from_dict(ckpt["train_config"])


def fit(
    data: str | Path,
    out_dir: str | Path,
    *,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    pretrained: str | None = None,
    backbone_weights: str | None = None,
    resume: bool = False,
    val_fraction: float = 0.15,
    callbacks: Sequence[Callback] = (),
    should_stop: Callable[[], bool] | None = None,
) -> FitResult:
    """Train on ``data`` and write ``out_dir/{model.pt, checkpoint.pt, metrics.jsonl, config.json, report/}``.

    With ``resume=True`` the run continues from ``out_dir/checkpoint.pt`` with everything
    restored (weights, optimiser, schedule, EMA, RNG, position in the epoch); ``train_config``
    may then extend ``epochs``; ``None`` keeps the checkpoint's.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = _load_checkpoint(out / CHECKPOINT_FILE) if resume else None
    if ckpt is not None:
        saved_model = ModelConfig.from_dict(ckpt["model_config"])
        if model_config is not None and model_config.replace(num_classes=saved_model.num_classes) != saved_model:
            raise TrainingError("the model settings differ from the checkpoint's; resume without model options")
        model_config = saved_model
        train_config = train_config or TrainConfig.from_dict(ckpt["train_config"])
        if pretrained or backbone_weights:
            raise TrainingError(
                "--pretrained/--backbone-weights cannot be combined with --resume: the checkpoint has the weights"
            )
    train_config = train_config or TrainConfig()
    if model_config is None and pretrained:
        model_config = model_config_of(pretrained)  # one of our model files keeps its architecture
    if pretrained and backbone_weights:
        raise TrainingError(
            "pass either --pretrained (a whole DETR) or --backbone-weights (an ImageNet ResNet), not both"
        )

    dist_info, device = setup_distributed(train_config.device)
    if train_config.batch_size % dist_info.world_size:
        raise ConfigError(
            f"--batch-size {train_config.batch_size} must be a multiple of the {dist_info.world_size} "
            "processes: each trains on an equal share of every batch"
        )
    if not dist_info.is_main:  # rank 0 extracts archives first; the others then read its copy
        dist_info.barrier()
    dataset = load_detection_data(data, val_fraction=val_fraction, seed=train_config.seed, work_dir=out / "data")
    if dist_info.is_main:
        dist_info.barrier()
    if ckpt is not None and ckpt["labels"] != dataset.labels:
        raise TrainingError(
            f"the dataset's labels {dataset.labels} differ from the checkpoint's {ckpt['labels']}; "
            "resume only on a dataset with the same labels, or start a new run"
        )
    if not any(len(r.labels) for r in dataset.train):
        raise DatasetError(f"{data}: the training split has no boxes to learn from; annotate some objects first")
    model_config = (model_config or ModelConfig()).replace(num_classes=len(dataset.labels))

    _seed_everything(train_config.seed)
    model = build_model_from_config(model_config, train_backbone=train_config.lr_backbone > 0)
    if pretrained:
        logger.info("DETR weights from %s: %s", pretrained, load_detr_weights(model, pretrained).describe())
    if backbone_weights:
        logger.info(
            "Backbone weights from %s: %s", backbone_weights, load_backbone_weights(model, backbone_weights).describe()
        )
    model.to(device)

    loop = _Loop(model, dataset, train_config, device, out, callbacks, should_stop, dist_info)
    if dist_info.is_main:
        atomic_write_json(
            {
                "model": model_config.to_dict(),
                "train": train_config.to_dict(),
                "labels": dataset.labels,
                "data": str(data),
                "pretrained": pretrained,
                "backbone_weights": backbone_weights,
                "val_fraction": val_fraction,
                "images": {"train": len(dataset.train), "val": len(dataset.val)},
                "warnings": dataset.warnings,
            },
            out / "config.json",
        )
    if ckpt is not None:
        loop.restore(ckpt)
    return loop.run()


class _EpochBatches(Sampler[list[int]]):
    """Shuffled batches drawn from (seed, epoch) alone, so a resumed run replays the same order;
    ``start`` skips the batches an interrupted epoch already trained on. With several processes
    each takes its slice of every global batch.

    Landscape and portrait images are batched apart where they can be (torchvision's and
    Detectron2's aspect-ratio grouping): a batch is padded to its largest height and width, so
    mixing them would nearly double the pixels to compute. Images left over in each group fill
    mixed batches, so every epoch still has ``size // batch_size`` batches."""

    def __init__(
        self, landscape: list[bool], batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ):
        self.landscape, self.batch_size, self.seed = landscape, batch_size, seed
        self.size = len(landscape)
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return max(1, self.size // self.batch_size) - self.start

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        n = max(1, self.size // self.batch_size)  # drop the last partial batch, as the reference does
        batches, leftovers = [], []
        for wide in (True, False):
            group = [i for i in order if self.landscape[i] == wide]
            full = len(group) // self.batch_size * self.batch_size
            batches += [group[b : b + self.batch_size] for b in range(0, full, self.batch_size)]
            leftovers += group[full:]
        batches += [leftovers[b : b + self.batch_size] for b in range(0, len(leftovers), self.batch_size)]
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        batches = [batch for batch in batches if len(batch) == self.batch_size] or [order]
        share = self.batch_size // self.world_size
        for b in range(self.start, n):
            batch = batches[b % len(batches)]
            yield batch[self.rank * share : (self.rank + 1) * share]


class _AugmentedDataset(DetectionDataset):
    """Augmentation randomness seeded per (seed, epoch, index): identical with any number of
    workers and after a resume."""

    def __init__(self, records, transforms, seed: int):
        super().__init__(records, transforms)
        self.seed, self.epoch = seed, 0

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_003 + index)
            return super().__getitem__(index)


class _Loop:
    def __init__(
        self,
        model: nn.Module,
        data: DetectionData,
        cfg: TrainConfig,
        device: torch.device,
        out: Path,
        callbacks: Sequence[Callback],
        should_stop: Callable[[], bool] | None,
        dist_info: Distributed,
    ):
        self.model, self.data, self.cfg, self.device, self.out = model, data, cfg, device, out
        self.callbacks, self.should_stop = list(callbacks), should_stop or (lambda: False)
        self.dist = dist_info
        self.precision = resolve_precision(cfg.precision, device)
        logger.info("Training in %s on %s", self.precision, device)
        prepare_model(model, self.precision)
        self.objective = build_objective(model, cfg)
        self.extras = {name: module.to(device) for name, module in self.objective.extras.items() if module is not None}
        self.train_set = _AugmentedDataset(
            data.train,
            train_transforms(
                cfg.image_size, cfg.max_size, hflip=cfg.hflip, random_crop=cfg.random_crop, multi_scale=cfg.multi_scale
            ),
            cfg.seed,
        )
        world = dist_info.world_size
        batch_size = max(world, min(cfg.batch_size, len(data.train) // world * world))
        landscape = [r.width >= r.height for r in data.train]
        self.batches = _EpochBatches(landscape, batch_size, cfg.seed, dist_info.rank, world)
        self.forward = self.objective.forward
        self.train_forward: nn.Module = self.forward
        if dist_info.enabled:
            self.train_forward = DistributedDataParallel(
                self.forward, device_ids=[device.index] if device.type == "cuda" else None
            )
        pin = device.type == "cuda"
        workers = min(cfg.num_workers, cpu_count())  # more processes than CPUs only thrash
        if workers < cfg.num_workers:
            logger.warning("num_workers=%d is more than the %d CPUs here: using %d", cfg.num_workers, workers, workers)
        # Loaders draw worker seeds from their own generator, never from the global RNG that
        # dropout uses: a resumed run then replays exactly.
        self.loader_rng = torch.Generator()
        self.train_loader = DataLoader(
            self.train_set,
            batch_sampler=self.batches,
            collate_fn=collate,
            num_workers=workers,
            pin_memory=pin,
            generator=self.loader_rng,
        )
        by_shape = sorted(data.val, key=lambda r: r.width / r.height)  # little padding in each batch
        self.val_loader = DataLoader(
            DetectionDataset(by_shape, eval_transforms(cfg.image_size, cfg.max_size)),
            batch_size=cfg.batch_size,
            collate_fn=collate,
            num_workers=workers,
            pin_memory=pin,
            generator=torch.Generator(),
        )
        self.steps_per_epoch = max(1, len(data.train) // self.batches.batch_size)
        self.optimizer = torch.optim.AdamW(
            self._param_groups(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type in ("cuda", "cpu")
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.ema = (
            AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
            if cfg.ema_decay > 0
            else None
        )
        self.epoch, self.start_step = 0, 0
        self.best_ap, self.best_metrics, self.evals_since_best = -1.0, {}, 0
        self.started = time.monotonic()
        self.steps_this_session = 0

    # --- set-up -----------------------------------------------------------------------------
    def _param_groups(self) -> list[dict]:
        backbone = [p for n, p in self.model.named_parameters() if n.startswith("backbone.") and p.requires_grad]
        rest = [p for n, p in self.model.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
        for extra in self.extras.values():
            rest += list(extra.parameters())
        groups = [{"params": rest, "lr": self.cfg.lr}]
        if backbone:
            groups.append({"params": backbone, "lr": self.cfg.lr_backbone})
        return groups

    @property
    def total_steps(self) -> int:
        return self.cfg.epochs * self.steps_per_epoch

    def _lr_factor(self, step: int) -> float:
        cfg = self.cfg
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        if cfg.schedule == "cosine":
            progress = min(1.0, step / max(1, self.total_steps))
            return warm * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))
        drop_at = max(1, round(cfg.lr_drop * cfg.epochs)) * self.steps_per_epoch
        return warm * (0.1 if step >= drop_at and cfg.lr_drop < 1 else 1.0)

    def restore(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        for name, extra in self.extras.items():
            if ckpt.get(name) is not None:
                extra.load_state_dict(ckpt[name])
        self.epoch, self.start_step = ckpt["epoch"], ckpt["step"]
        self.best_ap, self.best_metrics = ckpt["best_ap"], ckpt["best_metrics"]
        self.evals_since_best = ckpt["evals_since_best"]
        _set_rng(ckpt["rng"])
        logger.info("Resuming at epoch %d, step %d of %d", self.epoch + 1, self.start_step, self.steps_per_epoch)

    # --- the loop ---------------------------------------------------------------------------
    def run(self) -> FitResult:
        self._emit("train_start", step=self.start_step)
        status = "completed"
        while self.epoch < self.cfg.epochs:
            losses = self._train_epoch()
            if losses is None:
                status = "cancelled"
                break
            self._end_epoch(losses)
            patience_spent = self.cfg.patience > 0 and self.evals_since_best >= self.cfg.patience
            if self.dist.any(self.dist.is_main and patience_spent, self.device):
                logger.info("No better mAP in %d evaluations: stopping early", self.evals_since_best)
                status = "early_stopped"
                break
        # A stop asked during the last step or the final evaluation still holds: no report, and the
        # caller keeps no model of a cancelled run.
        if status != "cancelled" and self.dist.any(self.should_stop(), self.device):
            status = "cancelled"
        self._finish(cancelled=status == "cancelled")
        self._emit("train_end", step=self.start_step, metrics=self.best_metrics, status=status)
        return FitResult(
            status, self.epoch, self.best_metrics, self.out / "model.pt", self.out / CHECKPOINT_FILE, self.out,
            skipped_images=list(self.data.skipped),
        )

    def _train_epoch(self) -> dict[str, float] | None:
        """Train the rest of the current epoch; None when cancelled (checkpoint saved)."""
        self.model.train()
        self.batches.epoch, self.batches.start = self.epoch, self.start_step
        self.train_set.epoch = self.epoch
        self.loader_rng.manual_seed(self.cfg.seed * 100003 + self.epoch)
        sums: dict[str, torch.Tensor] = {}
        count, bad_in_a_row, last_event = 0, 0, 0.0
        for step, batch in enumerate(self.train_loader, start=self.start_step + 1):
            if self.dist.any(self.should_stop(), self.device):
                self.start_step = step - 1
                self._save_checkpoint()
                return None
            result = train_step(
                self.train_forward,
                self.objective,
                self.optimizer,
                batch,
                self.device,
                clip_max_norm=self.cfg.clip_max_norm,
                precision=self.precision,
            )
            self.scheduler.step()
            self.steps_this_session += 1
            if result is None:
                bad_in_a_row += 1
                logger.warning("Non-finite loss at epoch %d step %d: step skipped", self.epoch + 1, step)
                if bad_in_a_row >= MAX_BAD_STEPS:
                    raise TrainingError(
                        f"the loss was not finite for {bad_in_a_row} steps in a row; "
                        f"lower the learning rate (--lr, now {self.cfg.lr}) or check the boxes"
                    )
                continue
            bad_in_a_row = 0
            loss, parts = result
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            for k, v in {"loss": loss, **parts}.items():
                sums[k] = sums[k] + v if k in sums else v.clone()
            count += 1
            now = time.monotonic()
            # Every process takes part in averaging the losses, so they decide together when to report.
            due = now - last_event >= STEP_EVENT_INTERVAL_S
            if step == self.steps_per_epoch or self.dist.any(due, self.device):
                last_event = now
                self._emit("step", step=step, losses=_means(sums, count))
        self.start_step = 0
        return _means(sums, count)

    def _end_epoch(self, losses: dict[str, float]) -> None:
        epoch_done = self.epoch + 1
        record: dict = {
            "epoch": epoch_done,
            "lr": self.optimizer.param_groups[0]["lr"],
            "time_s": round(time.monotonic() - self.started, 2),
            **{f"train_{k}": v for k, v in losses.items()},
        }
        metrics: dict = {}
        evaluate_now = epoch_done % self.cfg.eval_every == 0 or epoch_done == self.cfg.epochs
        self.epoch = epoch_done
        if not self.dist.is_main:  # rank 0 evaluates and writes; the others wait for it
            self.dist.barrier()
            return
        if evaluate_now:
            result, head_metrics = self.evaluate()
            metrics = {**result.summary(), **head_metrics}
            ap = metrics.get("AP") or 0.0
            improved = ap > self.best_ap
            if improved:
                self.best_ap, self.best_metrics, self.evals_since_best = ap, {**metrics, "epoch": epoch_done}, 0
                save_model_file(
                    self.out / "model.pt",
                    self._eval_model(),
                    labels=self.data.labels,
                    threshold=result.threshold,
                    metrics=self.best_metrics,
                    image_size=self.cfg.image_size,
                    max_size=self.cfg.max_size,
                )
            else:
                self.evals_since_best += 1
            record.update({k: v for k, v in metrics.items() if k != "per_class"}, best=improved)
        self._save_checkpoint()
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self._emit("epoch_end", epoch=epoch_done - 1, step=self.steps_per_epoch, losses=losses, metrics=metrics)
        self.dist.barrier()

    def evaluate(self) -> tuple[EvalResult, dict[str, float | None]]:
        """The model's metrics on the validation images, and those of its other heads (``dense_AP50``...)."""
        heads = predict_heads(self._eval_model(), self.val_loader, self.device, precision=self.precision)
        extra: dict[str, float | None] = {}
        if "dense" in heads:
            dense, _, _ = coco_map(self.data.val, heads["dense"], len(self.data.labels))
            extra = {"dense_AP": dense["AP"], "dense_AP50": dense["AP50"]}
        return evaluate_predictions(self.data.val, heads["decoder"], self.data.labels), extra

    def _eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _finish(self, *, cancelled: bool) -> None:
        """Make sure a model file exists, then write the report of the best model (rank 0).

        A cancelled run stops fast (a container being shut down has seconds): no evaluation or
        report, and if no epoch was evaluated yet, the model is kept with the default threshold."""
        if self.dist.is_main and not (self.out / "model.pt").is_file():
            save_model_file(
                self.out / "model.pt",
                self._eval_model(),
                labels=self.data.labels,
                threshold=DEFAULT_THRESHOLD,
                metrics={},
                image_size=self.cfg.image_size,
                max_size=self.cfg.max_size,
            )
        if self.dist.is_main and not cancelled:
            best = build_model_from_config(self.model.config, train_backbone=False)
            best.load_state_dict(load_model_file(self.out / "model.pt")["state_dict"])
            best = prepare_model(best.to(self.device), self.precision)
            predictions = predict(best, self.val_loader, self.device, precision=self.precision)
            result = evaluate_predictions(self.data.val, predictions, self.data.labels)
            write_report(
                self.out / "report",
                result=result,
                records=self.data.val,
                predictions=predictions,
                metrics_path=self.out / "metrics.jsonl",
            )
        self.dist.barrier()

    # --- bookkeeping ------------------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        if not self.dist.is_main:
            return
        atomic_save(
            {
                "format": CHECKPOINT_FORMAT,
                "version": FORMAT_VERSION,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                **{name: extra.state_dict() for name, extra in self.extras.items()},
                "epoch": self.epoch,
                "step": self.start_step,
                "rng": _get_rng(),
                "model_config": self.model.config.to_dict(),
                "train_config": self.cfg.to_dict(),
                "labels": self.data.labels,
                "best_ap": self.best_ap,
                "best_metrics": self.best_metrics,
                "evals_since_best": self.evals_since_best,
            },
            self.out / CHECKPOINT_FILE,
        )

    def _emit(
        self,
        kind: str,
        *,
        step: int,
        epoch: int | None = None,
        losses: dict | None = None,
        metrics: dict | None = None,
        status: str = "",
    ) -> None:
        if not self.dist.is_main:
            return
        epoch = self.epoch if epoch is None else epoch
        global_step = epoch * self.steps_per_epoch + step
        elapsed = time.monotonic() - self.started
        eta = None
        if self.steps_this_session:
            eta = elapsed / self.steps_this_session * max(0, self.total_steps - global_step)
        event = TrainEvent(
            kind,
            epoch,
            self.cfg.epochs,
            step,
            self.steps_per_epoch,
            global_step,
            self.total_steps,
            dict(losses or {}),
            dict(metrics or {}),
            self.optimizer.param_groups[0]["lr"],
            elapsed,
            eta,
            status,
        )
        for callback in self.callbacks:
            callback(event)


def _means(sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
    """Running means of the losses over the epoch's steps and over the processes.

    Each process's loss covers its share of the batch, normalised by the whole batch's boxes;
    their mean is the loss one process would have computed on the whole batch. Every process
    calls this at the same step (a collective call under DDP); all have the same keys and count.
    """
    if not sums:
        return {}
    keys = list(sums)
    values = torch.stack([sums[k].float() for k in keys]).div(max(count, 1))
    return dict(zip(keys, average_over_processes(values).tolist()))  # one host sync


def _load_checkpoint(path: Path) -> dict:
    ckpt = safe_load(path, "training checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a cvat-detr training checkpoint; start a new run without --resume")
    return ckpt


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _get_rng() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "python": list(_flatten_state(random.getstate())),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _flatten_state(state: tuple) -> Iterator:
    version, internal, gauss = state
    yield version
    yield list(internal)
    yield gauss


def _set_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
