"""Data-parallel training: two gloo processes on the CPU train the same model as one process."""

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detr import ModelConfig, TrainConfig, fit
from detr.synthetic import make_shapes_dataset

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, out: str, model: dict, train: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fit(data, out, model_config=ModelConfig.from_dict(model), train_config=TrainConfig.from_dict(train))
    finally:
        dist.destroy_process_group()


def test_two_processes_train_like_one(tmp_path, tiny_model, tiny_train):
    # Same-size images at one scale (padding changes what a CNN sees near borders), no dropout
    # and frozen norms: every remaining difference would come from the data split or the
    # gradient averaging, which must match the single process up to float rounding. Two steps
    # only: later, float-level differences can flip a near-tie in the Hungarian matching.
    shapes_zip = make_shapes_dataset(tmp_path / "task.zip", num_images=24, image_size=(128, 128), seed=3)
    model = tiny_model.replace(dropout=0.0, backbone_norm="frozen")
    # fp32: bf16 rounding differs with the batch split and would hide the comparison
    train = tiny_train.replace(epochs=1, batch_size=10, random_crop=False, multi_scale=False, hflip=False,
                               precision="fp32")
    single = fit(shapes_zip, tmp_path / "single", model_config=model, train_config=train)
    mp.spawn(
        _worker,
        args=(2, _free_port(), str(shapes_zip), str(tmp_path / "ddp"), model.to_dict(), train.to_dict()),
        nprocs=2,
    )
    a = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (1, 0)
    worst = max((a["model"][k].float() - b["model"][k].float()).abs().max().item() for k in a["model"])
    assert worst < 1e-4, worst
    # The losses the run reports are the whole batch's, as one process computes them, not rank 0's share.
    one, two = (json.loads((tmp_path / run / "metrics.jsonl").read_text()) for run in ("single", "ddp"))
    losses = [key for key in one if key.startswith("train_loss")]
    assert losses and all(abs(one[key] - two[key]) < 1e-4 for key in losses), [(one[k], two[k]) for k in losses]
    assert (tmp_path / "ddp" / "model.pt").is_file() and (tmp_path / "ddp" / "report" / "samples.png").is_file()
    assert single.status == "completed"
