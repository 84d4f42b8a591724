"""One training on the shared volume, whichever path asked for it (``cvat-detr train --local`` or the
trainer function): what to run, and the model it gives.

- :func:`plan`: what to run. The run folder's checkpoint is resumed when there is one (a restarted or
  continued job); otherwise the starting weights are resolved (``cvat_plugin.training.weights``) and
  the recipe plans a new run (``detr.runs.plan_run``).
- Running it is the caller's: :meth:`detr.runs.RunSpec.fit` runs the spec in this process.
- :func:`register`: the run's best model becomes the next version of its task's (or project's) model
  line, with its card (``cvat_plugin.home.models``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cvat_plugin.home.layout import DetrHome
from cvat_plugin.home.models import ModelEntry, ModelStore, TrainedModel
from cvat_plugin.training.options import training_setup
from cvat_plugin.training.weights import StartingPoint, starting_point
from detr import FitResult, load_model_file
from detr.runs import RunSpec, plan_run
from detr.train import CHECKPOINT_FILE


@dataclass(frozen=True)
class RunRequest:
    """A training of a training set on the shared volume."""

    dataset_id: str
    run_id: str
    """The run folder ``runs/<run_id>``: a trainer job's id, or a local run's."""
    task_id: int | None
    project_id: int | None
    """Set instead of ``task_id`` for a training on a whole CVAT project."""
    options: dict[str, Any]
    """Training options (``cvat_plugin.training.options``): weights, recipe, model_preset, model, TrainConfig
    fields."""
    start: StartingPoint | None = None
    """Starting weights already resolved (the command line's files); None: option ``weights`` decides when
    the run is planned."""
    command: str | None = None
    """The ``cvat-detr`` command line (secrets redacted) that asked for the training, for the model card."""


def plan(home: DetrHome, request: RunRequest) -> RunSpec:
    """What to run for ``request``. Raises ``WeightsError`` when the starting weights are not there, and
    ``detr.ConfigError`` when the settings do not make a run (or a resume changes the model's)."""
    setup = training_setup(request.options)
    run_dir = home.run_dir(request.run_id)
    resume = (run_dir / CHECKPOINT_FILE).is_file()
    if resume:  # the checkpoint holds the weights
        start = StartingPoint()
    else:
        start = request.start or starting_point(setup.weights, setup.backbone, task_id=request.task_id,
                                                project_id=request.project_id, models=ModelStore(home))
    return plan_run(home.dataset_dir(request.dataset_id), run_dir, resume=resume, pretrained=start.pretrained,
                    backbone_weights=start.backbone_weights, recipe=setup.recipe, preset=setup.model_preset,
                    model_overrides=setup.model_options, train_overrides=setup.train_options)


def register(home: DetrHome, request: RunRequest, result: FitResult) -> ModelEntry:
    """Register the best model of a finished run (``result.model_path`` must exist) with its card."""
    model = load_model_file(result.model_path)
    try:
        run_config = json.loads((result.out_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # the card is best effort: the model file has the model's settings
        run_config = {}
    trained = TrainedModel(
        task_id=request.task_id, project_id=request.project_id, dataset_id=request.dataset_id,
        run_id=request.run_id, labels=list(model["labels"]), threshold=model["threshold"],
        metrics=result.best_metrics, status=result.status, epochs_done=result.epochs_done,
        config={"model": run_config.get("model", model["model_config"]), "train": run_config.get("train")},
        pretrained=run_config.get("pretrained"), backbone_weights=run_config.get("backbone_weights"),
        options=request.options, command=request.command,
    )
    return ModelStore(home).add(trained, model_file=result.model_path, report_dir=result.out_dir / "report")
