"""One training step and one pass of inference over a data loader."""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from .criterion import SetCriterion, total_loss
from .denoising import DenoisingQueries
from .evaluate import Prediction
from .groups import QueryGroups
from .model import DETR
from .postprocess import postprocess


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA; a no-op elsewhere (CPU autocast is slower for this model)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(
    images: Tensor, mask: Tensor, targets: list[dict], device: torch.device
) -> tuple[Tensor, Tensor, list[dict]]:
    non_blocking = device.type == "cuda"
    images = images.to(device, non_blocking=non_blocking)
    mask = mask.to(device, non_blocking=non_blocking)
    targets = [
        {k: (v.to(device, non_blocking=non_blocking) if isinstance(v, Tensor) else v) for k, v in t.items()}
        for t in targets
    ]
    return images, mask, targets


class TrainingForward(nn.Module):
    """The training forward pass as one module (so DistributedDataParallel can wrap it): the
    model, plus the training-only queries when enabled: Group DETR's query groups and
    DN-DETR's denoising queries. Their outputs are under ``"denoising"``."""

    def __init__(self, model: DETR, groups: QueryGroups | None = None, denoising: DenoisingQueries | None = None):
        super().__init__()
        self.model = model
        self.groups = groups
        self.denoising = denoising

    def forward(self, images: Tensor, mask: Tensor, targets: list[dict]) -> dict:
        model = self.model
        if self.groups is None and self.denoising is None:
            return model(images, mask)
        queries = self.groups.queries(model) if self.groups is not None else model.query_embed.weight
        matching_mask = self.groups.self_attention_mask(images.device) if self.groups is not None else None
        matching = queries.shape[0]
        if self.denoising is None:
            hs = model.decode(images, mask, query_embed=queries, tgt_mask=matching_mask)
            return self.groups.outputs(model, hs)
        noisy = self.denoising.prepare(targets, matching, matching_mask, model.config.nheads, model.config.dec_layers)
        batch = images.shape[0]
        content = torch.cat([queries.new_zeros(batch, matching, queries.shape[1]), noisy.content.to(queries.dtype)], 1)
        position = torch.cat([queries.expand(batch, -1, -1), noisy.position.to(queries.dtype)], 1)
        hs = model.decode(images, mask, tgt=content, query_embed=position, tgt_mask=noisy.attention_mask)
        own = hs[:, :, :matching]
        out = self.groups.outputs(model, own) if self.groups is not None else model.heads(own, with_aux=model.aux_loss)
        out["denoising"] = (self.denoising.outputs(model, hs[:, :, matching:], noisy), noisy.targets, noisy.indices)
        return out

    def expand_targets(self, targets: list[dict]) -> list[dict]:
        return targets if self.groups is None else self.groups.expand_targets(targets)


def train_step(
    forward: nn.Module,
    criterion: SetCriterion,
    optimizer: torch.optim.Optimizer,
    batch: tuple[Tensor, Tensor, list[dict]],
    device: torch.device,
    *,
    clip_max_norm: float,
    amp: bool,
    expand_targets: Callable[[list[dict]], list[dict]],
) -> tuple[Tensor, dict[str, Tensor]] | None:
    """Forward, loss, backward and optimizer step. Returns (weighted loss, named losses) as
    device tensors, or None when the loss was not finite and the step was skipped.

    ``forward`` is a ``TrainingForward``, possibly wrapped in DistributedDataParallel."""
    images, mask, targets = to_device(*batch, device)
    with autocast(device, amp):
        outputs = forward(images, mask, targets)
    denoising = outputs.pop("denoising", None)
    losses = criterion(outputs, expand_targets(targets))
    num_layers = len(outputs.get("aux_outputs", [])) + 1
    weights = criterion.weight_dict(num_layers)
    if denoising is not None:  # known pairs: no matching, and the same loss weights
        noisy_outputs, noisy_targets, indices = denoising
        noisy_losses = criterion(noisy_outputs, noisy_targets, indices=indices)
        losses.update({f"{name}_dn": value for name, value in noisy_losses.items() if name != "class_error"})
        weights.update({f"{name}_dn": weight for name, weight in list(weights.items())})
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


@torch.no_grad()
def predict(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor, list[dict]]], device: torch.device, *, amp: bool = True
) -> dict[int, Prediction]:
    """Predictions for every image of the loader in original-image pixels, keyed by image id."""
    was_training = model.training
    model.eval()
    results: dict[int, Prediction] = {}
    try:
        for images, mask, targets in batches:
            images, mask, _ = to_device(images, mask, [], device)
            with autocast(device, amp):
                outputs = model(images, mask)
            sizes = torch.stack([t["orig_size"] for t in targets])
            for t, det in zip(targets, postprocess(outputs, sizes, classifier=model.config.classifier)):
                results[int(t["image_id"])] = Prediction(
                    boxes=det["boxes"].cpu().numpy().astype(np.float32),
                    scores=det["scores"].cpu().numpy().astype(np.float32),
                    labels=det["labels"].cpu().numpy().astype(np.int64),
                )
    finally:
        model.train(was_training)
    return results
