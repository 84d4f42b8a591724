"""``cvat-detr export`` and ``cvat-detr train``: build a training set from CVAT and train on it, here or in
the trainer function."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from cvat_plugin.cli.exits import EXIT_INTERRUPTED, EXIT_OK, UsageError
from cvat_plugin.cli.jobs import follow_job, report_job
from cvat_plugin.cli.options import (
    add_home_option,
    add_source_options,
    add_split_options,
    export_source,
    make_client,
    print_dataset_summary,
    redact_argv,
    trainer_client,
)
from cvat_plugin.home.layout import DetrHome, new_id, source_name
from cvat_plugin.home.models import ModelStore
from cvat_plugin.progress import ProgressReporter
from cvat_plugin.training.options import training_setup
from cvat_plugin.training.schema import MODEL, option, options_in
from detr.config import OptionError
from detr.flags import add_option_flag

if TYPE_CHECKING:  # torch comes with them: imported when a training starts
    from cvat_plugin.training.options import TrainingSetup
    from cvat_plugin.training.weights import StartingPoint
    from detr import FitResult
    from detr.runs import RunSpec

logger = logging.getLogger(__name__)

#: Model options the flags leave out: the training set's labels set the number of classes.
UNFLAGGED = ("num_classes",)

#: Where ``--local`` starts without ``--weights``: random init (the COCO and ImageNet files are the trainer
#: image's; here ``--weights coco|imagenet`` finds them in $DETR_WEIGHTS).
LOCAL_WEIGHTS = "scratch"

class ExportCommand:
    description = ("Export a CVAT task or project (COCO 1.0 with images) and build its training set: images/, "
                   "annotations/{train,val}.json, labels.json, manifest.json.")

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        add_source_options(parser)
        parser.add_argument("--out", type=Path, required=True, help="folder for the training set")
        parser.add_argument("--overwrite", action="store_true", help="replace --out if it is not empty")
        parser.add_argument("--seed", type=int, default=0, help="seed of the validation split (default: 0)")
        add_split_options(parser)

    def execute(self, args: argparse.Namespace, stdout: TextIO, pbar: ProgressReporter) -> int:
        if args.out.exists() and not args.overwrite and (not args.out.is_dir() or any(args.out.iterdir())):
            # checked before the export, which can take long
            raise UsageError(f"--out {args.out} already exists and is not empty: choose another folder, or pass "
                             f"--overwrite to replace it")
        with make_client(args) as client:
            manifest = export_source(client, args, args.out, seed=args.seed, overwrite=args.overwrite, pbar=pbar)
        print_dataset_summary(manifest, args.out, stdout)
        return EXIT_OK


class TrainCommand:
    description = ("Export a CVAT task or project, build its training set under $DETR_HOME/datasets and train DETR "
                   "on it: "
                   "--local in this process (the model goes to $DETR_HOME/models/task-<id>-v<n>/), or --trainer in the "
                   "trainer function, which shares $DETR_HOME, follows the job and publishes the model.")

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        add_source_options(parser)
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--local", action="store_true", help="train in this process")
        where.add_argument("--trainer", metavar="URL", default=os.environ.get("DETR_TRAINER_URL"),
                           help="train in the trainer function at URL (its HTTP trigger); $DETR_HOME must be its "
                                "shared volume and $DETR_TRAINER_TOKEN its token (default: $DETR_TRAINER_URL)")
        add_home_option(parser)
        add_split_options(parser)
        # The flag table: one flag per option of the schema (cvat_plugin.training.schema), with its help,
        # range and choices; --val-fraction comes with the split options.
        start = parser.add_argument_group("recipe and model (unset model options: the preset's)")
        for name in ("recipe", "model_preset"):
            add_option_flag(start, option(name), default=option(name).default)
        add_option_flag(start, option("weights"), unset=f"the trainer's; {LOCAL_WEIGHTS} with --local")
        start.add_argument("--pretrained", help="with --local: official DETR checkpoint or a model.pt of ours (file "
                                                "or URL) to fine-tune from, instead of --weights")
        start.add_argument("--backbone-weights", help="with --local: torchvision ImageNet weights of the backbone "
                                                      "(file) to start from, instead of --weights")
        for model_option in options_in("model"):
            if model_option.name not in UNFLAGGED:
                add_option_flag(start, model_option, unset="the preset's")
        remote = parser.add_argument_group("trainer function (--trainer)")
        add_option_flag(remote, option("publish"), unset="the trainer publishes when it has a Nuclio dashboard")
        train = parser.add_argument_group("training (detr.TrainConfig fields; unset: the recipe's, else the default)")
        for train_option in options_in("train"):
            add_option_flag(train, train_option)

    def execute(self, args: argparse.Namespace, stdout: TextIO, pbar: ProgressReporter) -> int:
        # Check every option before any work starts.
        if args.pretrained and args.backbone_weights:
            raise UsageError("pass either --pretrained or --backbone-weights, not both")
        if not args.local and not args.trainer:
            raise UsageError("pass --local to train in this process, or --trainer URL (or set DETR_TRAINER_URL)")
        files = bool(args.pretrained or args.backbone_weights)
        if args.trainer and files:
            raise UsageError("the trainer starts from its own files: pass --weights coco|imagenet|scratch|previous "
                             "instead of --pretrained/--backbone-weights")
        if args.local and args.publish is not None:
            raise UsageError("--publish is for --trainer; publish a model trained with --local with `cvat-detr publish "
                             "<model id>`")
        if files and args.weights:
            raise UsageError("--weights and --pretrained/--backbone-weights both choose the starting weights: pass one "
                             "of them")
        # Locally, without --weights or a file, the run starts from random init.
        weights = args.weights or (None if args.trainer or files else LOCAL_WEIGHTS)
        options, setup = _checked_options(args, weights)
        seed = setup.train_options.get("seed", 0)
        if args.trainer:
            return _train_on_trainer(args, options, seed, stdout, pbar)
        return _train_here(args, options, setup, seed, stdout, pbar)


def _train_here(args: argparse.Namespace, options: dict, setup: TrainingSetup, seed: int, stdout: TextIO,
                pbar: ProgressReporter) -> int:
    """Build the training set under $DETR_HOME/datasets, train in this process and register the model as the
    next version of the task's (or project's) line, as the trainer does."""
    from cvat_plugin.training.run import RunRequest, plan, register
    from cvat_plugin.training.weights import StartingPoint

    home = DetrHome(args.home)
    start = (StartingPoint(pretrained=args.pretrained, backbone_weights=args.backbone_weights)
             if args.pretrained or args.backbone_weights else _local_start(setup, args, home))
    dataset_id = _build_training_set(args, home, seed, stdout, pbar)
    request = RunRequest(dataset_id=dataset_id, run_id=new_id(), task_id=args.task, project_id=args.project,
                         options=options, start=start,
                         command="cvat-detr " + " ".join(shlex.quote(a) for a in redact_argv(args.argv)))
    spec = plan(home, request)
    print(spec.reason, file=stdout)
    result = _fit_with_progress(spec, pbar)
    if result.status == "cancelled":  # as for the trainer's cancelled jobs: no model joins the line
        print(f"Interrupted: no model was registered; the run keeps its checkpoint: {result.checkpoint_path}",
              file=stdout)
        return EXIT_INTERRUPTED
    entry = register(home, request, result)
    metrics = entry.metrics
    print(f"Model: {entry.model_path} ({result.status} after {result.epochs_done} epochs; "
          f"AP {metrics.get('AP', float('nan')):.3f}, AP50 {metrics.get('AP50', float('nan')):.3f})", file=stdout)
    print(f"Run: {spec.out_dir}", file=stdout)
    print(f"Publish it as a CVAT detector with `cvat-detr publish {entry.id}`", file=stdout)
    return EXIT_OK


def _local_start(setup: TrainingSetup, args: argparse.Namespace, home: DetrHome) -> StartingPoint:
    """The files of ``--weights`` here, found before the export: the baked ones in $DETR_WEIGHTS, or the newest
    model of the task or project in DETR_HOME."""
    from cvat_plugin.training.weights import MissingWeightsFile, WeightsError, starting_point

    try:
        return starting_point(setup.weights, setup.backbone, task_id=args.task, project_id=args.project,
                              models=ModelStore(home))
    except MissingWeightsFile as e:
        raise UsageError(f"--weights {e.weights} needs {e.path}, which is not there: set DETR_WEIGHTS to the folder "
                         f"that holds {e.path.name}, or pass the file (or its URL) as --pretrained (a DETR "
                         f"checkpoint) or --backbone-weights (ImageNet weights)") from e
    except WeightsError as e:
        raise UsageError(str(e)) from e


def _checked_options(args: argparse.Namespace, weights: str | None) -> tuple[dict[str, Any], TrainingSetup]:
    """The job options the flags set, checked together as the trainer checks them (``training_setup``; each
    flag was checked as it was parsed), and what they give; the CLI exits 2 with the trainer's message. The
    options are what the trainer receives and what the model card records, whichever path trains."""
    train = {o.name: getattr(args, o.name) for o in options_in("train") if getattr(args, o.name) is not None}
    model = {o.name: getattr(args, o.name) for o in options_in("model")
             if o.name not in UNFLAGGED and getattr(args, o.name) is not None}
    job = {"recipe": args.recipe, "model_preset": args.model_preset, **({"weights": weights} if weights else {})}
    try:
        setup = training_setup({**train, **job, **({MODEL: model} if model else {})})
    except OptionError as e:
        raise UsageError(str(e)) from e
    options: dict[str, Any] = {**setup.train_options, **job}
    if setup.model_options:
        options[MODEL] = setup.model_options
    return options, setup


def _train_on_trainer(args: argparse.Namespace, options: dict, seed: int, stdout: TextIO,
                      pbar: ProgressReporter) -> int:
    """Build the training set on the shared volume, submit a job to the trainer and follow it."""
    trainer = trainer_client(args)
    trainer.health()  # before the export: an unreachable trainer fails fast
    dataset_id = _build_training_set(args, DetrHome(args.home), seed, stdout, pbar)
    job = trainer.submit(dataset_id, task_id=args.task, project_id=args.project, options=options,
                         publish=args.publish)
    print(f"Job {job['id']} submitted to the trainer at {args.trainer}", file=stdout)
    final = follow_job(trainer, job["id"], args.poll_interval, stdout, pbar)
    return EXIT_INTERRUPTED if final is None else report_job(final, stdout)


def _build_training_set(args: argparse.Namespace, home: DetrHome, seed: int, stdout: TextIO,
                        pbar: ProgressReporter) -> str:
    """Export ``--task`` or ``--project`` into a new training set under DETR_HOME/datasets; returns its id."""
    dataset_id = new_id(source_name(args.task, args.project))
    dataset_dir = home.dataset_dir(dataset_id)
    with make_client(args) as client:
        manifest = export_source(client, args, dataset_dir, seed=seed, overwrite=False, pbar=pbar)
    print_dataset_summary(manifest, dataset_dir, stdout)
    return dataset_id


def _fit_with_progress(spec: RunSpec, pbar: ProgressReporter) -> FitResult:
    """Run ``spec`` in this process; the first Ctrl-C asks the loop to stop after saving a checkpoint."""
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        def on_interrupt(signum: int, frame: Any) -> None:
            if stop.is_set():
                raise KeyboardInterrupt
            logger.warning("Stopping after the current step (Ctrl-C again to abort without a checkpoint)")
            stop.set()
        previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        return spec.fit(callbacks=[_TrainProgress(pbar)], should_stop=stop.is_set)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


class _TrainProgress:
    """Feeds ``TrainEvent``s to a progress reporter: one bar over all steps, a log line per epoch."""

    def __init__(self, pbar: ProgressReporter) -> None:
        self.pbar = pbar
        self.done = 0

    def __call__(self, event) -> None:
        if event.kind == "train_start":
            self.pbar.start(event.total_steps, desc="Training", unit="step")
            self.done = event.global_step
            self.pbar.advance(self.done)
        elif event.kind in ("step", "epoch_end"):
            self.pbar.advance(event.global_step - self.done)
            self.done = event.global_step
            if event.kind == "epoch_end":
                loss = event.losses.get("loss", sum(event.losses.values()))
                logger.info("Epoch %d/%d: loss %.4f, AP %.4f", event.epoch + 1, event.epochs, loss,
                            event.metrics.get("AP", float("nan")))
        elif event.kind == "train_end":
            self.pbar.finish()
