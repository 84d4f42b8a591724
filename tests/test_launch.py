"""Where jobs train: the settings read from the environment, how many processes share a batch, and the
files through which launched processes and the trainer talk (no processes started here)."""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path

import pytest
import torch

from cvat_plugin.trainer.launch.files import EventLog, EventReader, LaunchError, RunFiles
from cvat_plugin.trainer.launch.kubeflow import MAX_NAME, job_name
from cvat_plugin.trainer.launch.settings import KubeSettings, LaunchConfigError, LaunchSettings
from detr import FitResult, TrainConfig, TrainEvent
from detr.checkpoint import DiskFullError
from detr.config import TINY_MODEL
from detr.distributed import processes_for_batch
from detr.runs import RunSpec

HOME = Path("/var/lib/detr")
KUBE = {"DETR_TRAIN_BACKEND": "kubeflow", "DETR_KUBE_NAMESPACE": "training", "DETR_KUBE_IMAGE": "reg/trainer:1",
        "DETR_KUBE_PVC": "detr-home"}


@pytest.mark.parametrize(("env", "gpus", "processes"), [
    ({}, 0, 1),  # a CPU: in the trainer's process
    ({}, 1, 1),
    ({}, 4, 4),  # auto: one process per GPU
    ({"DETR_TRAIN_PROCESSES": "auto"}, 8, 8),
    ({"DETR_TRAIN_PROCESSES": "2"}, 0, 2),  # gloo processes on a CPU (tests)
    ({"DETR_TRAIN_PROCESSES": " 3 "}, 4, 3),
    ({"DETR_TRAIN_BACKEND": "local", "DETR_TRAIN_PROCESSES": "1"}, 4, 1),
])
def test_the_local_backend_trains_in_one_process_per_gpu_unless_told(env, gpus, processes):
    settings = LaunchSettings.from_env(env, gpus=gpus, home=HOME)
    assert (settings.backend, settings.processes, settings.kube) == ("local", processes, None)


@pytest.mark.parametrize(("env", "gpus", "message"), [
    ({"DETR_TRAIN_PROCESSES": "5"}, 4, "DETR_TRAIN_PROCESSES must be auto or a whole number from 1 to 4 (this trainer "
     "sees 4 CUDA GPU(s)), got 5"),
    ({"DETR_TRAIN_PROCESSES": "5"}, 0, "from 1 to 4 (without a CUDA GPU, processes share the CPU), got 5"),
    ({"DETR_TRAIN_PROCESSES": "0"}, 2, "from 1 to 2 (this trainer sees 2 CUDA GPU(s)), got 0"),
    ({"DETR_TRAIN_PROCESSES": "all"}, 2, "DETR_TRAIN_PROCESSES must be auto or a whole number from 1 to 2"),
    ({"DETR_TRAIN_BACKEND": "slurm"}, 0, "DETR_TRAIN_BACKEND must be one of local, kubeflow, got 'slurm'"),
    ({**KUBE, "DETR_KUBE_IMAGE": ""}, 0, "DETR_TRAIN_BACKEND=kubeflow needs DETR_KUBE_IMAGE: the image"),
    ({k: v for k, v in KUBE.items() if k != "DETR_KUBE_PVC"}, 0, "needs DETR_KUBE_PVC: the PersistentVolumeClaim"),
    ({k: v for k, v in KUBE.items() if k != "DETR_KUBE_NAMESPACE"}, 0, "needs DETR_KUBE_NAMESPACE"),
    ({**KUBE, "DETR_KUBE_NAMESPACE": "Training_1"}, 0, "DETR_KUBE_NAMESPACE='Training_1' is not a Kubernetes "
     "namespace name"),
    ({**KUBE, "DETR_KUBE_PVC": "detr home"}, 0, "DETR_KUBE_PVC='detr home' is not a volume claim name"),
    ({**KUBE, "DETR_KUBE_IMAGE": "reg/trainer 1"}, 0, "is not an image reference"),
    ({**KUBE, "DETR_KUBE_NODES": "0"}, 0, "DETR_KUBE_NODES must be a whole number from 1 to 64, got 0"),
    ({**KUBE, "DETR_KUBE_GPUS_PER_NODE": "two"}, 0, "DETR_KUBE_GPUS_PER_NODE must be a whole number from 1 to 16"),
    ({**KUBE, "DETR_TRAIN_PROCESSES": "2"}, 0, "with DETR_TRAIN_BACKEND=kubeflow set DETR_KUBE_NODES and "
     "DETR_KUBE_GPUS_PER_NODE instead"),
])
def test_a_wrong_setting_names_the_variable_and_what_it_accepts(env, gpus, message):
    with pytest.raises(LaunchConfigError, match=re.escape(message)):
        LaunchSettings.from_env(env, gpus=gpus, home=HOME)


def test_the_kubeflow_backend_reads_its_cluster_settings():
    settings = LaunchSettings.from_env({**KUBE, "DETR_KUBE_NODES": "3", "DETR_KUBE_GPUS_PER_NODE": "8"}, gpus=0,
                                       home=HOME)
    assert settings.backend == "kubeflow"
    assert settings.kube == KubeSettings("training", "reg/trainer:1", "detr-home", HOME, nodes=3, gpus_per_node=8)
    assert LaunchSettings.from_env(KUBE, gpus=1, home=HOME).kube.nodes == 1  # defaults: one node, one GPU


@pytest.mark.parametrize(("batch", "nodes", "per_node", "expected"), [
    (8, 1, 4, (1, 4)),
    (2, 1, 4, (1, 2)),  # a batch of 2 splits among 2 GPUs at most
    (6, 1, 4, (1, 3)),
    (7, 1, 4, (1, 1)),
    (16, 2, 4, (2, 4)),
    (4, 2, 4, (1, 4)),  # as many processes on one node beat two nodes
    (6, 3, 2, (3, 2)),
    (1, 4, 8, (1, 1)),
])
def test_a_batch_splits_among_the_most_processes_that_share_it_equally(batch, nodes, per_node, expected):
    assert processes_for_batch(batch, nodes, per_node) == expected


def test_job_names_are_dns_labels_one_per_job():
    assert job_name("20250131-142501-3f9a1c") == "detr-20250131-142501-3f9a1c"
    odd = ["Job_With.Upper", "x" * 80, "x" * 81, "--", "a/b"]
    names = [job_name(job_id) for job_id in odd]
    assert len(set(names)) == len(names)
    for name in names:
        assert len(name) <= MAX_NAME and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name


def _spec(out_dir: Path, **fields) -> RunSpec:
    return RunSpec(Path("data"), out_dir, TINY_MODEL, TrainConfig(batch_size=2), **fields)


def _event(kind: str, step: int, epoch: int = 0, **extra) -> TrainEvent:
    return TrainEvent(kind, epoch, 2, step, 3, epoch * 3 + step, 6, **extra)


def test_events_are_read_back_in_order_with_only_the_latest_step(tmp_path):
    files = RunFiles(tmp_path)
    files.prepare(_spec(files.run_dir))
    log, reader = EventLog(files), EventReader(files)
    assert reader.read() == []
    log(_event("train_start", 0))
    log(_event("step", 1, losses={"loss": 2.0}))
    log(_event("step", 2, losses={"loss": 1.5}))
    assert [(e.kind, e.step) for e in reader.read()] == [("train_start", 0), ("step", 2)]
    assert reader.read() == []
    log(_event("step", 3))
    log(_event("epoch_end", 3, metrics={"AP": 0.5, "per_class": {"circle": {"AP": None}}}))
    log(_event("step", 1, epoch=1))
    events = reader.read()
    assert [(e.kind, e.epoch, e.step) for e in events] == [("epoch_end", 0, 3), ("step", 1, 1)]
    assert events[0].metrics == {"AP": 0.5, "per_class": {"circle": {"AP": None}}}

    # A line being written is read once it is whole.
    events_file = files.folder / "events.jsonl"
    line = json.dumps({"seq": 99, **_event("train_end", 0, epoch=2).__dict__}) + "\n"
    with open(events_file, "a") as f:
        f.write(line[:10])
    assert reader.read() == []
    with open(events_file, "a") as f:
        f.write(line[10:])
    assert [e.kind for e in reader.read()] == ["train_end"]


def test_a_request_round_trips_to_the_run_spec(tmp_path):
    files = RunFiles(tmp_path / "run")
    spec = RunSpec(tmp_path / "data", files.run_dir, TINY_MODEL, TrainConfig(epochs=3, batch_size=4),
                   pretrained="/w/coco.pth", val_fraction=0.2, reason="small-data recipe")
    files.prepare(spec)
    assert files.read_request() == spec
    files.request_stop()
    assert files.stop_requested()
    files.prepare(_spec(files.run_dir, resume=True))  # a new launch of the run starts without the old stop
    assert not files.stop_requested() and files.read_request().resume


def test_a_result_is_read_back_in_the_readers_run_folder(tmp_path):
    written = RunFiles(tmp_path / "on-the-pod")
    written.prepare(_spec(written.run_dir))
    out = written.run_dir
    written.write_result(FitResult("completed", 2, {"AP": 0.4}, out / "model.pt", out / "checkpoint.pt", out,
                                   skipped_images=["a.jpg"]))
    (tmp_path / "here").symlink_to(out)
    result = RunFiles(tmp_path / "here").read_result()
    assert result == FitResult("completed", 2, {"AP": 0.4}, tmp_path / "here" / "model.pt",
                               tmp_path / "here" / "checkpoint.pt", tmp_path / "here", skipped_images=["a.jpg"])


LOST_PEER = RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:6362: "
                         "Connection reset by peer.")


def test_the_first_error_a_process_had_of_its_own_is_the_runs(tmp_path, monkeypatch):
    files = RunFiles(tmp_path)
    files.prepare(_spec(files.run_dir))
    assert files.failure() is None
    errors = [(0, LOST_PEER, 9.0),  # what the others record when a process fails: a consequence, even first
              (1, ValueError("data/annotations/train.json: no images; export the task again"), 10.0),
              (2, KeyError("later"), 12.0)]
    for rank, error, at in errors:
        with monkeypatch.context() as clock:
            clock.setattr("cvat_plugin.trainer.launch.files.time.time", lambda: at)
            files.write_error(rank, error)
    error = files.failure()
    assert isinstance(error, LaunchError)
    assert str(error) == "data/annotations/train.json: no images; export the task again"

    files.prepare(_spec(files.run_dir))
    files.write_error(0, LOST_PEER)
    files.write_error(1, torch.distributed.DistBackendError("NCCL communicator was aborted"))
    assert files.failure() is None, "a process died without a word: the others only lost it"


def test_a_full_volume_in_a_process_still_says_how_much_to_free(tmp_path):
    files = RunFiles(tmp_path)
    files.prepare(_spec(files.run_dir))
    files.write_error(0, DiskFullError(tmp_path / "checkpoint.pt", free_mb=0, needed_mb=42))
    error = files.failure()
    assert isinstance(error.__cause__, DiskFullError) and error.__cause__.needed_mb == 42
    files.prepare(_spec(files.run_dir))
    files.write_error(1, OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x")))
    cause = files.failure().__cause__
    assert isinstance(cause, OSError) and cause.errno == errno.ENOSPC and cause.filename == str(tmp_path / "x")
    assert str(files.failure()) == "OSError: [Errno 28] No space left on device: '" + str(tmp_path / "x") + "'"
