"""One training step and one pass of inference over a data loader."""

from __future__ import annotations

import contextlib
import math
from typing import Iterable

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .criterion import total_loss
from .evaluate import Prediction
from .objectives import Objective
from .postprocess import dense_postprocess, postprocess
from .precision import autocast, prepare_images


def to_device(
    images: Tensor, mask: Tensor, targets: list[dict], device: torch.device, precision: str = "fp32"
) -> tuple[Tensor, Tensor, list[dict]]:
    non_blocking = device.type == "cuda"
    images = prepare_images(images.to(device, non_blocking=non_blocking), precision)
    mask = mask.to(device, non_blocking=non_blocking)
    targets = [
        {k: (v.to(device, non_blocking=non_blocking) if isinstance(v, Tensor) else v) for k, v in t.items()}
        for t in targets
    ]
    return images, mask, targets


def train_step(
    forward: nn.Module,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    batch: tuple[Tensor, Tensor, list[dict]],
    device: torch.device,
    *,
    clip_max_norm: float,
    precision: str,
) -> tuple[Tensor, dict[str, Tensor]] | None:
    """Forward, loss, backward and optimizer step. Returns (weighted loss, named losses) as
    device tensors, or None when the loss was not finite and the step was skipped.

    ``forward`` is the objective's forward module, possibly wrapped in DistributedDataParallel;
    ``precision`` is resolved (``fp32`` or ``bf16``)."""
    images, mask, targets = to_device(*batch, device, precision)
    with autocast(device, precision), _training_attention(device):
        outputs = forward(images, mask, targets)
    losses, weights = objective.losses(outputs, targets)
    loss = total_loss(losses, weights)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_max_norm > 0:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, clip_max_norm)
    else:
        norm = loss.detach()
    # A non-finite loss or gradient would poison the weights: skip the update instead.
    # (One host sync per step; the optimizer step reads the gradients anyway.)
    if not math.isfinite(float(norm)):
        optimizer.zero_grad(set_to_none=True)
        return None
    optimizer.step()
    return loss.detach(), {k: v.detach() for k, v in losses.items()}


def _training_attention(device: torch.device) -> contextlib.AbstractContextManager:
    """On CPUs, plain (math) attention: for the short sequences here its backward is several times
    faster than the flash kernel's (about 10 % of a training step)."""
    return sdpa_kernel(SDPBackend.MATH) if device.type == "cpu" else contextlib.nullcontext()


@torch.no_grad()
def predict(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor, list[dict]]],
    device: torch.device,
    *,
    precision: str = "fp32",
) -> dict[int, Prediction]:
    """Predictions for every image of the loader in original-image pixels, keyed by image id."""
    return predict_heads(model, batches, device, precision=precision)["decoder"]


@torch.no_grad()
def predict_heads(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor, list[dict]]],
    device: torch.device,
    *,
    precision: str = "fp32",
) -> dict[str, dict[int, Prediction]]:
    """``predict`` for every head of the model: ``"decoder"`` always, and ``"dense"`` (the fast
    architecture's dense head after NMS) when the model has one."""
    was_training = model.training
    model.eval()
    results: dict[str, dict[int, Prediction]] = {"decoder": {}}
    try:
        for images, mask, targets in batches:
            images, mask, _ = to_device(images, mask, [], device, precision)
            with autocast(device, precision):
                outputs = model(images, mask)
            sizes = torch.stack([t["orig_size"] for t in targets]).to(device)
            heads = {"decoder": postprocess(outputs, sizes, classifier=model.config.classifier)}
            if "dense" in outputs:
                encoded = outputs["dense"]
                heads["dense"] = dense_postprocess(encoded.dense, encoded.valid_ratio, sizes)
            for head, detections in heads.items():
                for t, det in zip(targets, detections):
                    results.setdefault(head, {})[int(t["image_id"])] = Prediction(
                        boxes=det["boxes"].float().cpu().numpy(),
                        scores=det["scores"].float().cpu().numpy(),
                        labels=det["labels"].cpu().numpy().astype(np.int64),
                    )
    finally:
        model.train(was_training)
    return results
