"""Where a job's training runs: the trainer's ``JobRunner`` hands a launcher the run to train
(``detr.runs.RunSpec``) and gets its ``FitResult`` back, with the same contract wherever it trains
(events to the callbacks, a stop after the current step with a checkpoint once ``should_stop()`` is true,
resume from the run's checkpoint).

- ``local.LocalLauncher``: the trainer's node; in its own process with one GPU or none, else one
  process per GPU under torchrun;
- ``kubeflow.PyTorchJobLauncher``: a Kubeflow PyTorchJob per job, on several nodes.

``launcher_from_env`` picks one once, when the trainer starts (``settings`` lists the variables).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence

import torch

from cvat_plugin.trainer.launch.files import LaunchError
from cvat_plugin.trainer.launch.local import LocalLauncher
from cvat_plugin.trainer.launch.settings import LaunchConfigError, LaunchSettings
from detr import FitResult, TrainEvent
from detr.runs import RunSpec

__all__ = ["LaunchConfigError", "LaunchError", "Launcher", "LocalLauncher", "launcher_from_env"]


class Launcher(Protocol):
    description: str
    """Where it trains, for the trainer's log."""

    def fit(self, spec: RunSpec, *, callbacks: Sequence[Callable[[TrainEvent], None]] = (),
            should_stop: Callable[[], bool] | None = None) -> FitResult:
        """Train ``spec`` (``detr.runs.plan_run``) with ``detr.fit``'s contract; failures raise (``LaunchError``
        when the processes failed)."""
        ...


def launcher_from_env(home: Path, env: Mapping[str, str] = os.environ) -> Launcher:
    """The launcher the environment asks for (``home``: DETR_HOME); ``LaunchConfigError`` says what is wrong,
    including, for kubeflow, a cluster the trainer cannot use."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    settings = LaunchSettings.from_env(env, gpus=gpus, home=home)
    if settings.kube is None:
        return LocalLauncher(settings.processes)
    try:  # the client is an extra: pip install 'cvat-detr[kubeflow]'
        from cvat_plugin.trainer.launch.kubeflow import PyTorchJobLauncher, kube_client
    except ImportError as e:
        raise LaunchConfigError(f"DETR_TRAIN_BACKEND=kubeflow needs the kubernetes client ({e}); install "
                                "cvat-detr[kubeflow] in the trainer's image") from None
    launcher = PyTorchJobLauncher(settings.kube, kube_client(env))
    launcher.check()
    return launcher
