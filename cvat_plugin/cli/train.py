"""``cvat-detr export`` and ``cvat-detr train``: build a training set from CVAT and train on it, here or in
the trainer function."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from cvat_plugin.cli.exits import EXIT_INTERRUPTED, EXIT_OK, UsageError
from cvat_plugin.cli.jobs import follow_job, report_job
from cvat_plugin.cli.options import (
    add_home_option,
    add_option_flag,
    add_source_options,
    add_split_options,
    export_source,
    make_client,
    new_source_id,
    print_dataset_summary,
    redact_argv,
    trainer_client,
)
from cvat_plugin.home.layout import Storage, copy_atomic, write_json_atomic
from cvat_plugin.home.models import keep_report
from cvat_plugin.progress import ProgressReporter
from cvat_plugin.training.options import training_setup
from cvat_plugin.training.schema import MODEL, option, options_in
from detr.config import OptionError

logger = logging.getLogger(__name__)

#: Model options the flags leave out: the training set's labels set the number of classes.
UNFLAGGED = ("num_classes",)


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
                   "--local in this process (the model goes to $DETR_HOME/models/<id>/), or --trainer in the "
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
        start.add_argument("--pretrained", help="official DETR checkpoint or a model.pt of ours (file or URL) to "
                                                "fine-tune from")
        start.add_argument("--backbone-weights", help="torchvision ImageNet weights of the backbone (file) to start "
                                                      "from")
        for model_option in options_in("model"):
            if model_option.name not in UNFLAGGED:
                add_option_flag(start, model_option, unset="the preset's")
        remote = parser.add_argument_group("trainer function (--trainer)")
        add_option_flag(remote, option("weights"), unset="the trainer's")
        add_option_flag(remote, option("publish"), unset="the trainer publishes when it has a Nuclio dashboard")
        train = parser.add_argument_group("training (detr.TrainConfig fields; unset: the recipe's, else the default)")
        for train_option in options_in("train"):
            add_option_flag(train, train_option)

    def execute(self, args: argparse.Namespace, stdout: TextIO, pbar: ProgressReporter) -> int:
        from detr.recipes import count_training_images, plan_training, starting_point

        # Check every option before any work starts.
        train_options, model_options = _checked_options(args)
        if args.pretrained and args.backbone_weights:
            raise UsageError("pass either --pretrained or --backbone-weights, not both")
        if not args.local and not args.trainer:
            raise UsageError("pass --local to train in this process, or --trainer URL (or set DETR_TRAINER_URL)")
        if args.trainer:
            if args.pretrained or args.backbone_weights:
                raise UsageError("the trainer starts from its own files: pass --weights coco|imagenet|scratch|previous "
                                 "instead of --pretrained/--backbone-weights")
            options: dict[str, Any] = {**train_options, "recipe": args.recipe, "model_preset": args.model_preset}
            if model_options:
                options["model"] = model_options
            if args.weights:
                options["weights"] = args.weights
            return _train_on_trainer(args, options, train_options.get("seed", 0), stdout, pbar)
        if args.weights or args.publish is not None:
            raise UsageError("--weights and --publish are for --trainer; locally use --pretrained or "
                             "--backbone-weights, and publish with `cvat-detr publish`")

        storage = Storage(args.home)
        run_id = new_source_id(args)
        dataset_dir = storage.dataset_dir(run_id)
        run_dir, model_dir = storage.run_dir(run_id), storage.model_dir(run_id)
        with make_client(args) as client:
            manifest = export_source(client, args, dataset_dir, seed=train_options.get("seed", 0), overwrite=False,
                               pbar=pbar)
        print_dataset_summary(manifest, dataset_dir, stdout)
        start, base_model = starting_point(args.pretrained, args.backbone_weights)
        plan = plan_training(recipe=args.recipe, preset=args.model_preset,
                             num_train_images=count_training_images(dataset_dir), start=start,
                             base_model=base_model, model_overrides=model_options, train_overrides=train_options)
        print(plan.reason, file=stdout)
        model_config, train_config = plan.model, plan.train

        result = _fit_with_progress(dataset_dir, run_dir, model_config, train_config, args, pbar)
        if not result.model_path.is_file():
            print(f"Training stopped before the first evaluation; checkpoint: {result.checkpoint_path}", file=stdout)
            return EXIT_INTERRUPTED
        copy_atomic(result.model_path, model_dir / "model.pt")
        keep_report(run_dir / "report", model_dir)
        card = _model_card(run_id, manifest, result, model_dir / "model.pt", args)
        write_json_atomic(model_dir / "model.json", card)
        metrics = card["metrics"]
        print(f"Model: {model_dir / 'model.pt'} ({result.status} after {result.epochs_done} epochs; "
              f"AP {metrics.get('AP', float('nan')):.3f}, AP50 {metrics.get('AP50', float('nan')):.3f})",
              file=stdout)
        print(f"Run: {run_dir}", file=stdout)
        return EXIT_INTERRUPTED if result.status == "cancelled" else EXIT_OK


def _checked_options(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The train and model options the flags set: each flag was checked as it was parsed, here they are
    checked together as the trainer checks them (``training_setup``); the CLI exits 2 with its message."""
    train = {o.name: getattr(args, o.name) for o in options_in("train") if getattr(args, o.name) is not None}
    model = {o.name: getattr(args, o.name) for o in options_in("model")
             if o.name not in UNFLAGGED and getattr(args, o.name) is not None}
    try:
        setup = training_setup({**train, "recipe": args.recipe, "model_preset": args.model_preset,
                                **({MODEL: model} if model else {})})
    except OptionError as e:
        raise UsageError(str(e)) from e
    return setup.train_options, setup.model_options


def _train_on_trainer(args: argparse.Namespace, options: dict, seed: int, stdout: TextIO,
                      pbar: ProgressReporter) -> int:
    """Build the training set on the shared volume, submit a job to the trainer and follow it."""
    trainer = trainer_client(args)
    trainer.health()  # before the export: an unreachable trainer fails fast
    dataset_id = new_source_id(args)
    dataset_dir = Storage(args.home).dataset_dir(dataset_id)
    with make_client(args) as client:
        manifest = export_source(client, args, dataset_dir, seed=seed, overwrite=False, pbar=pbar)
    print_dataset_summary(manifest, dataset_dir, stdout)
    job = trainer.submit(dataset_id, task_id=args.task, project_id=args.project, options=options,
                         publish=args.publish)
    print(f"Job {job['id']} submitted to the trainer at {args.trainer}", file=stdout)
    final = follow_job(trainer, job["id"], args.poll_interval, stdout, pbar)
    return EXIT_INTERRUPTED if final is None else report_job(final, stdout)



def _fit_with_progress(dataset_dir: Path, run_dir: Path, model_config, train_config, args: argparse.Namespace,
                       pbar: ProgressReporter):
    """Run ``detr.train.fit``; the first Ctrl-C asks the loop to stop after saving a checkpoint."""
    from detr import fit

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
        return fit(dataset_dir, run_dir, model_config=model_config, train_config=train_config,
                   pretrained=args.pretrained, backbone_weights=args.backbone_weights, val_fraction=args.val_fraction,
                   callbacks=[_TrainProgress(pbar)], should_stop=stop.is_set)
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


def _model_card(model_id: str, manifest: dict, result, model_path: Path, args: argparse.Namespace) -> dict:
    """``model.json``: what the model predicts, how good it is, and what produced it."""
    from detr import load_model_file

    model = load_model_file(model_path)
    run_config = json.loads((result.out_dir / "config.json").read_text(encoding="utf-8"))
    source = manifest["source"]
    return {
        "id": model_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task_id": source["task_id"],
        "task_name": source["task_name"],
        **({"project_id": source["project_id"], "project_name": source.get("project_name"),
            "tasks": source.get("tasks", [])} if source.get("project_id") is not None else {}),
        "source_url": source["url"],
        "server_version": source["server_version"],
        "labels": [{"id": label["id"], "name": label["name"]} for label in manifest["labels"]],
        "metrics": result.best_metrics,
        "threshold": model.get("threshold"),
        "status": result.status,
        "epochs_done": result.epochs_done,
        "config": {"model": run_config["model"], "train": run_config["train"]},
        "pretrained": args.pretrained,
        "backbone_weights": args.backbone_weights,
        "dataset_id": model_id,
        "run_id": model_id,
        "command": "cvat-detr " + " ".join(shlex.quote(a) for a in redact_argv(args.argv)),
    }



