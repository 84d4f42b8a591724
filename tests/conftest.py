"""Shared fixtures: generated datasets and tiny configurations (no network, CPU only)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from detr.config import TINY_MODEL, TrainConfig
from detr.synthetic import make_shapes_dataset
from tests.fakes.cvat_server import fake_cvat  # noqa: F401  (fixture: a running fake CVAT server)
from tests.fakes.nuclio import TRAINER_TOKEN
from tests.fakes.nuclio_dashboard import fake_nuclio  # noqa: F401  (fixture: a running fake Nuclio dashboard)

#: Tiny training settings: small images, no workers (deterministic and quick to start).
TINY_TRAIN = TrainConfig(epochs=1, batch_size=4, image_size=128, max_size=192, num_workers=0, lr=1e-3,
                         lr_backbone=1e-3)


@pytest.fixture(autouse=True)
def _few_threads():
    # Tests are small: more threads only add scheduling overhead on a 2-core machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, 2))
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _trainer_token(monkeypatch):
    # What deploy.sh gives the trainer, the gateway and cvat-detr.
    monkeypatch.setenv("DETR_TRAINER_TOKEN", TRAINER_TOKEN)


@pytest.fixture(scope="session")
def shapes_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 generated images (3 classes) as a CVAT 'COCO 1.0' export zip."""
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes") / "task.zip", num_images=24, objects=(1, 3),
                               image_size=(96, 160), seed=7)


@pytest.fixture
def tiny_model():
    return TINY_MODEL


@pytest.fixture
def tiny_train():
    return TINY_TRAIN


@pytest.fixture
def restore_logging():
    """The trainer's init_context points the package loggers at stdout; put them back afterwards."""
    loggers = [logging.getLogger(name) for name in ("detr", "serverless", "cvat_plugin")]
    saved = [(log.handlers[:], log.level, log.propagate) for log in loggers]
    yield
    for log, (handlers, level, propagate) in zip(loggers, saved):
        log.handlers[:] = handlers
        log.setLevel(level)
        log.propagate = propagate
