"""DN-DETR denoising queries: masking keeps DETR's own queries untouched, the noisy ones learn
their known targets, and nothing of them reaches the model file."""

import pytest
import torch

from detr import fit
from detr.config import TINY_MODEL
from detr.criterion import SetCriterion
from detr.denoising import DenoisingQueries
from detr.groups import QueryGroups
from detr.matcher import HungarianMatcher
from detr.model import build_model_from_config
from detr.objectives import TrainingForward

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TARGETS = [
    {"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])},
    {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.3]])},
    {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)},
]


def _model(**overrides):
    torch.manual_seed(0)
    return build_model_from_config(TINY_MODEL.replace(num_classes=3, **overrides)).eval()


@pytest.mark.parametrize("groups", [None, 3])
def test_detrs_own_queries_are_unaffected_by_the_noisy_ones(groups):
    model = _model()
    query_groups = QueryGroups(groups, model.num_queries, model.config.hidden_dim) if groups else None
    forward = TrainingForward(model, query_groups, DenoisingQueries(4, 3, model.config.hidden_dim)).eval()
    images = torch.rand(3, 3, 64, 80)
    mask = torch.zeros(3, 64, 80, dtype=torch.bool)
    with torch.no_grad():
        plain = model(images, mask)
        both = forward(images, mask, TARGETS)
    own = both["pred_logits"][: len(TARGETS)]  # group 0 is the model's own queries
    torch.testing.assert_close(own, plain["pred_logits"], atol=1e-5, rtol=1e-5)
    noisy, targets, indices = both["denoising"]
    per_group = max(len(t["labels"]) for t in TARGETS)
    assert noisy["pred_logits"].shape == (4 * 3, per_group, 4)
    assert len(noisy["aux_outputs"]) == model.config.dec_layers - 1
    assert targets == TARGETS * 4 and len(indices) == model.config.dec_layers
    assert [len(src) for src, _ in indices[0]] == [2, 1, 0] * 4


def test_each_noisy_query_sees_only_its_own_group_and_real_queries():
    dn = DenoisingQueries(2, 3, 32)
    batch = dn.prepare(TARGETS, matching_queries=5, matching_mask=None, nheads=1, num_layers=1)
    mask = batch.attention_mask  # [B, 5 + 2 * 2, 5 + 2 * 2]
    assert mask.shape == (3, 9, 9)
    assert not mask[:, :5, :5].any() and mask[:, :5, 5:].all()  # DETR's queries never see noisy ones
    assert mask[:, 5:, :5].all()
    first_image = ~mask[0, 5:, 5:]
    assert first_image.tolist() == [[True, True, False, False], [True, True, False, False],
                                    [False, False, True, True], [False, False, True, True]]
    second_image = ~mask[1, 5:, 5:]  # one object: nobody sees the padding query but itself
    assert second_image.tolist() == [[True, False, False, False], [True, True, False, False],
                                     [False, False, True, False], [False, False, True, True]]


def test_noise_stays_within_the_documented_bounds():
    dn = DenoisingQueries(50, 3, 32)
    torch.manual_seed(0)
    labels = torch.zeros(1, 1000, dtype=torch.long)
    boxes = torch.tensor([0.5, 0.5, 0.2, 0.4]).repeat(1, 1000, 1)
    noisy_labels, noisy = dn._noisy(labels, boxes)
    assert 0.1 < (noisy_labels != 0).float().mean() < 0.2  # a fifth flipped, a third of those back to 0
    assert ((noisy[..., 0] - 0.5).abs() <= 0.2 * 0.4 / 2 + 1e-6).all()
    assert ((noisy[..., 3] / 0.4 - 1).abs() <= 0.4 + 1e-6).all()


def test_denoising_losses_fall_when_the_noisy_queries_are_trained():
    model = _model().train()
    dn = DenoisingQueries(3, 3, model.config.hidden_dim)
    forward = TrainingForward(model, None, dn)
    criterion = SetCriterion(3, HungarianMatcher())
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(dn.parameters()), lr=1e-3)
    images, mask = torch.rand(3, 3, 64, 80), torch.zeros(3, 64, 80, dtype=torch.bool)
    losses = []
    for _ in range(40):
        out = forward(images, mask, TARGETS)
        noisy, targets, indices = out["denoising"]
        loss = sum(v for k, v in criterion(noisy, targets, indices=indices).items() if k.startswith("loss_"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_training_with_denoising_writes_a_plain_model_and_resumes(shapes_zip, tmp_path, tiny_model, tiny_train):
    cfg = tiny_train.replace(denoising_groups=2, query_groups=2)
    result = fit(shapes_zip, tmp_path / "run", model_config=tiny_model, train_config=cfg)
    assert result.status == "completed"
    saved = torch.load(tmp_path / "run/model.pt", weights_only=True)["state_dict"]
    assert not any(k.startswith(("label_embed", "box_embed", "extra_queries")) for k in saved)
    checkpoint = torch.load(tmp_path / "run/checkpoint.pt", weights_only=True)
    assert set(checkpoint["denoising"]) >= {"label_embed.weight"}
    resumed = fit(shapes_zip, tmp_path / "run", train_config=cfg.replace(epochs=cfg.epochs + 1), resume=True)
    assert resumed.status == "completed" and resumed.epochs_done == cfg.epochs + 1
