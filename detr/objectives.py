"""What each architecture is trained to minimise: its training forward pass (the model plus the
training-only queries) and its weighted losses.

An ``Objective`` has a ``forward`` module, ``(images, mask, targets) -> outputs`` (one module,
so DistributedDataParallel can wrap it), and ``losses(outputs, targets)`` giving the named
losses and the weights that add them up. Training-only parameters live in ``extras`` (saved in
checkpoints, never in the model file).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .assigner import DenseCriterion
from .config import TrainConfig
from .criterion import SetCriterion
from .denoising import DenoisingQueries
from .fast_detr import FastDETR, set_outputs
from .groups import QueryGroups, SelectedQueryGroups
from .matcher import HungarianMatcher
from .model import DETR


class _WithTrainingQueries(nn.Module):
    """A model and its training-only queries, Group DETR's query groups and DN-DETR's denoising
    queries, as one module (so DistributedDataParallel can wrap it). Without them it is the model's
    own forward; with them the outputs of the model's own queries come first (group 0) and the
    denoising ones under ``"denoising"``."""

    def __init__(self, model: nn.Module, groups: nn.Module | None, denoising: DenoisingQueries | None):
        super().__init__()
        self.model = model
        self.groups = groups
        self.denoising = denoising

    def forward(self, images: Tensor, mask: Tensor, targets: list[dict]) -> dict:
        if self.groups is None and self.denoising is None:
            return self.model(images, mask)
        return self.forward_with_queries(images, mask, targets)

    def forward_with_queries(self, images: Tensor, mask: Tensor, targets: list[dict]) -> dict:
        raise NotImplementedError

    def expand_targets(self, targets: list[dict]) -> list[dict]:
        """The targets of every query group, group-major, as the outputs fold the groups into the batch."""
        return targets if self.groups is None else self.groups.expand_targets(targets)


class TrainingForward(_WithTrainingQueries):
    """DETR's training forward pass."""

    def __init__(self, model: DETR, groups: QueryGroups | None = None, denoising: DenoisingQueries | None = None):
        super().__init__(model, groups, denoising)

    def forward_with_queries(self, images: Tensor, mask: Tensor, targets: list[dict]) -> dict:
        model = self.model
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


class DetrObjective:
    """The official DETR's set loss, with optional query groups and denoising queries."""

    def __init__(self, model: DETR, cfg: TrainConfig):
        focal = (cfg.focal_alpha, cfg.focal_gamma) if model.config.classifier == "sigmoid" else None
        self.criterion = _set_criterion(
            model.config.num_classes, cfg, focal=focal, varifocal=focal is not None and cfg.varifocal
        )
        groups = (
            QueryGroups(cfg.query_groups, model.num_queries, model.config.hidden_dim) if cfg.query_groups > 1 else None
        )
        denoising = (
            DenoisingQueries(cfg.denoising_groups, model.config.num_classes, model.config.hidden_dim)
            if cfg.denoising_groups > 0
            else None
        )
        self.extras = {"query_groups": groups, "denoising": denoising}
        self.forward = TrainingForward(model, groups, denoising)

    def losses(self, outputs: dict, targets: list[dict]) -> tuple[dict[str, Tensor], dict[str, float]]:
        denoising = outputs.pop("denoising", None)
        losses = self.criterion(outputs, self.forward.expand_targets(targets))
        weights = self.criterion.weight_dict(len(outputs.get("aux_outputs", [])) + 1)
        if denoising is not None:
            _add_denoising(self.criterion, denoising, losses, weights)
        return losses, weights


class FastTrainingForward(_WithTrainingQueries):
    """The fast architecture's training forward pass: query groups and denoising queries join
    the decoder, masked so that the model's own queries never see them."""

    def __init__(
        self, model: FastDETR, groups: SelectedQueryGroups | None = None, denoising: DenoisingQueries | None = None
    ):
        super().__init__(model, groups, denoising)

    def forward_with_queries(self, images: Tensor, mask: Tensor, targets: list[dict]) -> dict:
        model = self.model
        encoded = model.encode(images, mask)
        content, boxes = model.select_queries(encoded)
        group_mask = None
        if self.groups is not None:
            group_mask = self.groups.self_attention_mask(content.shape[1], content.device)
            content, boxes = self.groups.expand(content, boxes)
        matching = content.shape[1]
        attention_mask = group_mask
        if self.denoising is not None:
            noisy = self.denoising.prepare(targets, matching, group_mask, model.config.nheads, model.config.dec_layers)
            noisy_boxes = noisy.boxes * encoded.valid_ratio.repeat(1, 2)[:, None]  # to canvas coordinates
            content = torch.cat([content, noisy.content.to(content.dtype)], 1)
            boxes = torch.cat([boxes, noisy_boxes], 1)
            attention_mask = noisy.attention_mask
        logits, refined = model.decode(encoded, content, boxes, self_attn_mask=attention_mask)
        own_logits, own_boxes = logits[:, :, :matching], refined[:, :, :matching]
        ratio = encoded.valid_ratio
        if self.groups is not None:
            own_logits, own_boxes = self.groups.fold(own_logits), self.groups.fold(own_boxes)
            ratio = ratio.repeat(self.groups.num_groups, 1)
        out = set_outputs(own_logits, own_boxes, ratio, with_aux=model.aux_loss)
        out["dense"] = encoded
        if self.denoising is not None:
            groups, per_group = self.denoising.num_groups, noisy.per_group
            folded = [x[:, :, matching:].unflatten(2, (groups, per_group)).transpose(1, 2).flatten(1, 2)
                      for x in (logits, refined)]
            ratio = encoded.valid_ratio.repeat(groups, 1)
            noisy_out = set_outputs(folded[0], folded[1], ratio, with_aux=model.aux_loss)
            out["denoising"] = (noisy_out, noisy.targets, noisy.indices)
        return out


class FastObjective:
    """The fast architecture: varifocal set loss on every decoder layer, plus the dense head's
    one-to-many loss with the same weights, plus denoising queries when enabled."""

    def __init__(self, model: FastDETR, cfg: TrainConfig):
        self.criterion = _set_criterion(
            model.config.num_classes, cfg, focal=(cfg.focal_alpha, cfg.focal_gamma), varifocal=cfg.varifocal
        )
        self.dense = DenseCriterion()
        self.dense_weights = {
            "loss_dense_cls": cfg.ce_loss_coef * cfg.dense_loss_coef,
            "loss_dense_bbox": cfg.bbox_loss_coef * cfg.dense_loss_coef,
            "loss_dense_giou": cfg.giou_loss_coef * cfg.dense_loss_coef,
        }
        denoising = (
            DenoisingQueries(cfg.denoising_groups, model.config.num_classes, model.config.hidden_dim, position=False)
            if cfg.denoising_groups > 0
            else None
        )
        groups = SelectedQueryGroups(cfg.query_groups, model.config.hidden_dim) if cfg.query_groups > 1 else None
        self.extras = {"query_groups": groups, "denoising": denoising}
        self.forward = FastTrainingForward(model, groups, denoising)

    def losses(self, outputs: dict, targets: list[dict]) -> tuple[dict[str, Tensor], dict[str, float]]:
        encoded = outputs.pop("dense")
        denoising = outputs.pop("denoising", None)
        losses = self.criterion(outputs, self.forward.expand_targets(targets))
        weights = self.criterion.weight_dict(len(outputs.get("aux_outputs", [])) + 1)
        losses.update(self.dense(encoded.dense, targets, encoded.valid_ratio))
        weights.update(self.dense_weights)
        if denoising is not None:
            _add_denoising(self.criterion, denoising, losses, weights)
        return losses, weights


Objective = DetrObjective | FastObjective


def build_objective(model: nn.Module, cfg: TrainConfig) -> Objective:
    if isinstance(model, FastDETR):
        return FastObjective(model, cfg)
    return DetrObjective(model, cfg)  # type: ignore[arg-type]


def _set_criterion(
    num_classes: int, cfg: TrainConfig, *, focal: tuple[float, float] | None, varifocal: bool
) -> SetCriterion:
    return SetCriterion(
        num_classes,
        HungarianMatcher(cfg.set_cost_class, cfg.set_cost_bbox, cfg.set_cost_giou, focal=focal),
        eos_coef=cfg.eos_coef,
        ce_loss_coef=cfg.ce_loss_coef,
        bbox_loss_coef=cfg.bbox_loss_coef,
        giou_loss_coef=cfg.giou_loss_coef,
        focal=focal,
        varifocal=varifocal,
    )


def _add_denoising(
    criterion: SetCriterion, denoising: tuple, losses: dict[str, Tensor], weights: dict[str, float]
) -> None:
    """Denoising queries have known pairs: no matching, and the set loss's weights."""
    noisy_outputs, noisy_targets, indices = denoising
    noisy_losses = criterion(noisy_outputs, noisy_targets, indices=indices)
    losses.update({f"{name}_dn": value for name, value in noisy_losses.items() if name != "class_error"})
    weights.update({f"{name}_dn": weight for name, weight in list(weights.items()) if name in noisy_losses})
