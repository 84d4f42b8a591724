"""The ``cvat-detr`` command: export a CVAT task as a training set, train DETR on it locally,
publish trained models as CVAT detectors (Nuclio functions), annotate tasks with them.

Each command is a class with ``description``, ``configure_parser`` and ``execute``, as in
cvat-cli. ``main`` is the one place where errors become messages and exit codes.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import logging
import os
import shlex
import signal
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence, TextIO

from cvat_plugin.annotate import (
    DEFAULT_TIMEOUT as DEFAULT_ANNOTATE_TIMEOUT,
)
from cvat_plugin.annotate import (
    AnnotateError,
    AnnotationResult,
    UnknownFunction,
    annotate_locally,
    annotate_with_function,
)
from cvat_plugin.auth import credentials_from
from cvat_plugin.client import (
    DEFAULT_EXPORT_TIMEOUT,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_RETRIES,
    AuthenticationError,
    CvatClient,
    CvatConnectionError,
    CvatError,
    CvatHTTPError,
    NotFoundError,
    PermissionDeniedError,
)
from cvat_plugin.dataset import DEFAULT_VAL_FRACTION, DatasetError, export_task
from cvat_plugin.model_store import ModelEntry, ModelNotFound, ModelStore, keep_report
from cvat_plugin.nuclio import (
    DEFAULT_DEPLOY_TIMEOUT,
    DashboardUnreachable,
    FunctionNotFound,
    NuclioClient,
    NuclioError,
)
from cvat_plugin.nuclio import (
    DEFAULT_POLL_INTERVAL as DEFAULT_NUCLIO_POLL_INTERVAL,
)
from cvat_plugin.nuclio import (
    DEFAULT_RETRIES as DEFAULT_NUCLIO_RETRIES,
)
from cvat_plugin.progress import NullProgressReporter, ProgressReporter, TqdmProgressReporter
from cvat_plugin.publish import (
    DEFAULT_BASE_FUNCTION,
    DEVICES,
    PublishError,
    PublishSettings,
    publish,
    published_functions,
    unpublish,
)
from cvat_plugin.storage import Storage, copy_atomic, detr_home, new_id, write_json_atomic

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_UNREACHABLE = 5
EXIT_EXPORT = 6
EXIT_DATA = 7
EXIT_TRAINING = 8
EXIT_PUBLISH = 9
EXIT_ANNOTATE = 10
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = f"""exit codes:
  {EXIT_OK}    success
  {EXIT_ERROR}    unexpected error (a bug: please report it with the traceback)
  {EXIT_USAGE}    bad command line or options
  {EXIT_AUTH}    CVAT rejected the credentials (401) or the user has no access (403)
  {EXIT_NOT_FOUND}    the task, project, model, function or job does not exist (404)
  {EXIT_UNREACHABLE}    CVAT or the Nuclio dashboard unreachable or failing (connection errors, timeouts,
       429/5xx after retries)
  {EXIT_EXPORT}    the export failed, timed out or its download was incomplete
  {EXIT_DATA}    the task cannot make a training set (no images, no boxes, unreadable export)
  {EXIT_TRAINING}    training failed
  {EXIT_PUBLISH}    publishing failed (no base detector function, deploy error or timeout)
  {EXIT_ANNOTATE}   automatic annotation failed, timed out, or one is already running on the task
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); a training run keeps its last checkpoint

environment: CVAT_URL, CVAT_ACCESS_TOKEN, CVAT_TOKEN, CVAT_USERNAME, CVAT_PASSWORD, DETR_HOME,
  DETR_TRAINER_URL, NUCLIO_DASHBOARD_URL, NUCLIO_NAMESPACE, DETR_BASE_FUNCTION, DETR_PUBLISH_DEVICE"""

MODEL_PRESETS = ("auto", "detr-r50", "tiny", "fast", "fast-light", "fast-r50")
SECRET_OPTIONS = ("--access-token", "--token", "--password")


class UsageError(Exception):
    """The command line is wrong; the message names the option to fix."""


# --- shared pieces ------------------------------------------------------------------------------


def _connection_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("CVAT connection")
    group.add_argument("--url", default=os.environ.get("CVAT_URL"),
                       help="CVAT address, e.g. https://cvat.example.com (default: $CVAT_URL)")
    group.add_argument("--access-token", help="personal access token, CVAT newer than 2.42 "
                                              "(default: $CVAT_ACCESS_TOKEN)")
    group.add_argument("--token", help="legacy API key, sent as 'Authorization: Token' (default: $CVAT_TOKEN)")
    group.add_argument("--username", help="CVAT user (default: $CVAT_USERNAME); the password comes from "
                                          "$CVAT_PASSWORD or a prompt")
    group.add_argument("--password", help=argparse.SUPPRESS)  # visible in `ps`: prefer $CVAT_PASSWORD
    group.add_argument("--retries", type=int, default=DEFAULT_RETRIES,
                       help="retries on connection errors, 429 and 5xx (default: %(default)s)")
    group.add_argument("--export-timeout", type=float, default=DEFAULT_EXPORT_TIMEOUT,
                       help="seconds to wait for CVAT to prepare the export (default: %(default)s)")
    group.add_argument("--poll-interval", type=float, default=DEFAULT_POLL_INTERVAL,
                       help="seconds between two checks of a running export (default: %(default)s)")
    return parser


def _nuclio_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    settings = PublishSettings.from_env()
    group = parser.add_argument_group("Nuclio dashboard")
    group.add_argument("--nuclio-url", default=settings.dashboard_url,
                       help="Nuclio dashboard address, e.g. http://nuclio:8070 (default: $NUCLIO_DASHBOARD_URL)")
    group.add_argument("--namespace", default=settings.namespace,
                       help="function namespace CVAT reads (default: $NUCLIO_NAMESPACE or %(default)s)")
    group.add_argument("--deploy-timeout", type=float, default=DEFAULT_DEPLOY_TIMEOUT,
                       help="seconds to wait for a function to become ready (default: %(default)s)")
    group.add_argument("--poll-interval", type=float, default=DEFAULT_NUCLIO_POLL_INTERVAL,
                       help="seconds between two checks of a deploying function (default: %(default)s)")
    group.add_argument("--retries", type=int, default=DEFAULT_NUCLIO_RETRIES,
                       help="retries on connection errors, 429 and 5xx (default: %(default)s)")
    _add_home_option(parser)
    return parser


def _add_home_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", type=Path, default=None,
                        help=f"storage folder (default: $DETR_HOME or {detr_home({})})")


def _nuclio_client(args: argparse.Namespace) -> NuclioClient:
    if not args.nuclio_url:
        raise UsageError("no Nuclio dashboard address: pass --nuclio-url or set NUCLIO_DASHBOARD_URL")
    try:
        return NuclioClient(args.nuclio_url, namespace=args.namespace, deploy_timeout=args.deploy_timeout,
                            poll_interval=args.poll_interval, retries=args.retries)
    except NuclioError as e:
        raise UsageError(str(e)) from e


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _make_client(args: argparse.Namespace) -> CvatClient:
    if not args.url:
        raise UsageError("no CVAT address: pass --url or set CVAT_URL")
    username = args.username or os.environ.get("CVAT_USERNAME")
    password = args.password or os.environ.get("CVAT_PASSWORD")
    if username and not password and not (args.access_token or args.token) and sys.stdin.isatty():
        password = getpass.getpass(f"CVAT password for {username}: ")
    try:
        credentials = credentials_from(access_token=args.access_token, token=args.token, username=args.username,
                                       password=password)
        return CvatClient(args.url, credentials, retries=args.retries, export_timeout=args.export_timeout,
                          poll_interval=args.poll_interval)
    except (CvatError, ValueError) as e:
        raise UsageError(str(e)) from e


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    """What to export: a task, or a project (all its tasks, which share its labels)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", type=int, help="CVAT task id")
    source.add_argument("--project", type=int,
                        help="CVAT project id: all its tasks with images, in one training set; tasks in the Train / "
                             "Validation subsets decide the split, a Test task is held out")


def _export(client: CvatClient, args: argparse.Namespace, out_dir: Path, *, seed: int, overwrite: bool,
            pbar: ProgressReporter) -> dict:
    """The training set of ``--task`` or ``--project`` in ``out_dir``; returns its manifest."""
    if args.project is not None:
        from cvat_plugin.project_export import export_project

        return export_project(client, args.project, out_dir, val_fraction=args.val_fraction, seed=seed,
                              overwrite=overwrite, pbar=pbar)
    return export_task(client, args.task, out_dir, val_fraction=args.val_fraction, seed=seed, overwrite=overwrite,
                       pbar=pbar)


def _source_id(args: argparse.Namespace) -> str:
    """A new dataset / run / model id that names the task or project."""
    return new_id(args.task) if args.project is None else f"project{args.project}-{new_id()}"


def _add_split_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                        help="share of images held out for validation where no Train/Validation subsets decide "
                             "(default: %(default)s)")


def _print_dataset_summary(manifest: dict, out_dir: Path, stdout: TextIO) -> None:
    images, boxes = manifest["images"], manifest["boxes"]
    print(f"Training set: {out_dir}", file=stdout)
    source, split = manifest["source"], manifest["split"]
    if source.get("project_id") is not None:
        print(f"  project {source['project_id']}: {len(source['tasks'])} task(s); split by {split['method']}"
              f"{', ' + str(split['held_out']) + ' test images held out' if split.get('held_out') else ''}",
              file=stdout)
    print(f"  images: {images['train']} train, {images['val']} val ({images['negative']} without boxes, "
          f"{images['deleted_dropped']} deleted frames dropped); boxes: {boxes['train']} train, {boxes['val']} val",
          file=stdout)
    for label in manifest["labels"]:
        print(f"  {label['name']}: {label['boxes']['train']} train / {label['boxes']['val']} val boxes", file=stdout)
    if manifest["warnings"]:  # each was logged to stderr as it was found
        print(f"  {len(manifest['warnings'])} warning(s): see {out_dir / 'manifest.json'}", file=stdout)


# --- commands -----------------------------------------------------------------------------------


class ExportCommand:
    description = ("Export a CVAT task or project (COCO 1.0 with images) and build its training set: images/, "
                   "annotations/{train,val}.json, labels.json, manifest.json.")

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        _add_source_options(parser)
        parser.add_argument("--out", type=Path, required=True, help="folder for the training set")
        parser.add_argument("--overwrite", action="store_true", help="replace --out if it is not empty")
        parser.add_argument("--seed", type=int, default=0, help="seed of the validation split (default: 0)")
        _add_split_options(parser)

    def execute(self, args: argparse.Namespace, stdout: TextIO, pbar: ProgressReporter) -> int:
        if args.out.exists() and not args.overwrite and (not args.out.is_dir() or any(args.out.iterdir())):
            # checked before the export, which can take long
            raise UsageError(f"--out {args.out} already exists and is not empty: choose another folder, or pass "
                             f"--overwrite to replace it")
        with _make_client(args) as client:
            manifest = _export(client, args, args.out, seed=args.seed, overwrite=args.overwrite, pbar=pbar)
        _print_dataset_summary(manifest, args.out, stdout)
        return EXIT_OK


class TrainCommand:
    description = ("Export a CVAT task or project, build its training set under $DETR_HOME/datasets and train DETR "
                   "on it: "
                   "--local in this process (the model goes to $DETR_HOME/models/<id>/), or --trainer in the "
                   "trainer function, which shares $DETR_HOME, follows the job and publishes the model.")

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        from detr.config import BACKBONES, LIGHT_BACKBONES, TrainConfig
        from detr.recipes import RECIPES

        _add_source_options(parser)
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--local", action="store_true", help="train in this process")
        where.add_argument("--trainer", metavar="URL", default=os.environ.get("DETR_TRAINER_URL"),
                           help="train in the trainer function at URL (its HTTP trigger); $DETR_HOME must be its "
                                "shared volume and $DETR_TRAINER_TOKEN its token (default: $DETR_TRAINER_URL)")
        _add_home_option(parser)
        _add_split_options(parser)
        model = parser.add_argument_group("model")
        model.add_argument("--model-preset", choices=MODEL_PRESETS, default="auto",
                           help="auto: detr-r50 from a DETR checkpoint, fast-r50 from ImageNet weights, fast from "
                                "scratch; detr-r50: the official DETR-R50; fast: the fast-converging DETR "
                                "(ResNet-18, trains in CPU minutes); fast-light: fast on RegNetX-400MF; fast-r50: "
                                "fast on ResNet-50; tiny: a small official DETR (default: %(default)s)")
        model.add_argument("--recipe", choices=RECIPES, default="auto",
                           help="default: the official DETR recipe; small-data: trainable norms, warm-up + cosine, "
                                "one input scale; auto: small-data below 2000 training images "
                                "(default: %(default)s)")
        model.add_argument("--backbone", choices=BACKBONES + LIGHT_BACKBONES, help="override the preset's backbone")
        model.add_argument("--num-queries", type=int, help="override the preset's number of object queries")
        model.add_argument("--pretrained", help="official DETR checkpoint or a model.pt of ours (file or URL) to "
                                                "fine-tune from")
        model.add_argument("--backbone-weights", help="torchvision ImageNet weights of the backbone (file) to start "
                                                      "from")
        remote = parser.add_argument_group("trainer function (--trainer)")
        remote.add_argument("--weights", help="starting point on the trainer: coco (official DETR-R50), imagenet, "
                                              "scratch or previous (the newest model of the task or project) "
                                              "(default: the trainer's)")
        remote.add_argument("--publish", action=argparse.BooleanOptionalAction, default=None,
                            help="serve the model as a CVAT detector when the job succeeds (default: the trainer "
                                 "publishes when it has a Nuclio dashboard)")
        train = parser.add_argument_group("training (detr.TrainConfig fields)")
        for f in dataclasses.fields(TrainConfig):
            flag = "--" + f.name.replace("_", "-")
            if isinstance(f.default, bool):
                train.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                   help=f"(default: {f.default})")
            else:
                train.add_argument(flag, dest=f.name, type=type(f.default), default=None,
                                   help=f"(default: {f.default})")

    def execute(self, args: argparse.Namespace, stdout: TextIO, pbar: ProgressReporter) -> int:
        from detr import ConfigError, TrainConfig
        from detr.recipes import check_settings, count_training_images, plan_training, starting_point

        # Check every option before any work starts.
        train_options = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                         if getattr(args, f.name) is not None}
        model_options = {k: v for k, v in (("backbone", args.backbone), ("num_queries", args.num_queries)) if v}
        try:
            check_settings(recipe=args.recipe, preset=args.model_preset, model_overrides=model_options,
                           train_overrides=train_options)
        except ConfigError as e:
            raise UsageError(str(e)) from e
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
        run_id = _source_id(args)
        dataset_dir = storage.dataset_dir(run_id)
        run_dir, model_dir = storage.run_dir(run_id), storage.model_dir(run_id)
        with _make_client(args) as client:
            manifest = _export(client, args, dataset_dir, seed=train_options.get("seed", 0), overwrite=False,
                               pbar=pbar)
        _print_dataset_summary(manifest, dataset_dir, stdout)
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


def _train_on_trainer(args: argparse.Namespace, options: dict, seed: int, stdout: TextIO,
                      pbar: ProgressReporter) -> int:
    """Build the training set on the shared volume, submit a job to the trainer and follow it."""
    trainer = _trainer_client(args)
    trainer.health()  # before the export: an unreachable trainer fails fast
    dataset_id = _source_id(args)
    dataset_dir = Storage(args.home).dataset_dir(dataset_id)
    with _make_client(args) as client:
        manifest = _export(client, args, dataset_dir, seed=seed, overwrite=False, pbar=pbar)
    _print_dataset_summary(manifest, dataset_dir, stdout)
    job = trainer.submit(dataset_id, task_id=args.task, project_id=args.project, options=options,
                         publish=args.publish)
    print(f"Job {job['id']} submitted to the trainer at {args.trainer}", file=stdout)
    final = _follow_job(trainer, job["id"], args.poll_interval, stdout, pbar)
    return EXIT_INTERRUPTED if final is None else _report_job(final, stdout)


def _follow_job(trainer, job_id: str, poll_interval: float, stdout: TextIO, pbar: ProgressReporter) -> Optional[dict]:
    """Follow a trainer job with a progress bar until it ends; None when Ctrl-C stopped following."""
    progress = _JobProgress(pbar)
    try:
        return trainer.follow(job_id, on_update=progress, poll_interval=poll_interval)
    except KeyboardInterrupt:
        print(f"Stopped following job {job_id}; it goes on in the trainer", file=stdout)
        return None
    finally:
        progress.close()


class _JobProgress:
    """Shows a trainer job's progress (percent) and logs each epoch's loss and mAP."""

    def __init__(self, pbar: ProgressReporter) -> None:
        self.pbar = pbar
        self.done = 0
        self.epoch = 0
        self.started = False

    def __call__(self, job: dict) -> None:
        if job.get("state") == "running" and not self.started:
            self.pbar.start(100, desc="Training", unit="%")
            self.started = True
        percent = int(100 * float(job.get("progress") or 0))
        if self.started and percent > self.done:
            self.pbar.advance(percent - self.done)
            self.done = percent
        if job.get("epoch", 0) > self.epoch and job.get("metrics"):
            self.epoch = job["epoch"]
            logger.info("Epoch %d/%d: loss %s, AP %s", job["epoch"], job.get("epochs"), job.get("loss"),
                        job["metrics"].get("AP"))

    def close(self) -> None:
        if self.started:
            self.pbar.finish()


def _report_job(job: dict, stdout: TextIO) -> int:
    """The end of a trainer job in a few lines, and its exit code."""
    if job["state"] == "failed":
        raise TrainerJobFailed(f"job {job['id']}: {job.get('error') or 'no reason given'}")
    if job["state"] == "cancelled":
        print(f"Job {job['id']} was cancelled", file=stdout)
        return EXIT_INTERRUPTED
    metrics = job.get("best_metrics") or {}
    print(f"Model: {job['model_id']} (job {job['id']}, {job.get('epoch')} epochs; "
          f"AP {metrics.get('AP', float('nan')):.3f}, AP50 {metrics.get('AP50', float('nan')):.3f})", file=stdout)
    if job.get("function"):
        print(f"Published as {job['function']}: it is listed in CVAT's Models page", file=stdout)
    if job.get("error"):  # the model is saved; publishing it failed
        raise PublishError(job["error"])
    return EXIT_OK


class TrainerJobFailed(Exception):
    """The trainer ran the job and it failed; the message is the trainer's."""


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


def redact_argv(argv: Sequence[str]) -> list[str]:
    """The command line with the values of secret options replaced by ``***``."""
    redacted, hide_next = [], False
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if hide_next:
            redacted.append("***")
        elif flag in SECRET_OPTIONS and "=" in arg:
            redacted.append(f"{flag}=***")
        else:
            redacted.append(arg)
        hide_next = not hide_next and arg in SECRET_OPTIONS
    return redacted


class PublishCommand:
    description = ("Publish a trained model as a CVAT detector: a Nuclio function in project 'cvat' that reuses the "
                   "base detector's image (no rebuild) and names exactly the model's labels. Publishing the same "
                   "model again updates its function; other versions stay until unpublished.")
    connections = ("nuclio",)

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        settings = PublishSettings.from_env()
        parser.add_argument("model", metavar="RUN_OR_MODEL",
                            help="model id (see `cvat-detr models`), the run or job that trained it, or its folder "
                                 "under $DETR_HOME/models")
        parser.add_argument("--base-function", default=settings.base_function,
                            help="deployed detector function whose image and settings to reuse "
                                 f"(default: $DETR_BASE_FUNCTION or {DEFAULT_BASE_FUNCTION})")
        parser.add_argument("--device", choices=DEVICES, default=settings.device,
                            help="auto: as the base function; gpu/cpu: set or drop the GPU limit "
                                 "(default: $DETR_PUBLISH_DEVICE or %(default)s)")

    def execute(self, args: argparse.Namespace, stdout: TextIO, pbar: ProgressReporter) -> int:
        store = ModelStore(args.home)
        entry = store.resolve(args.model)
        with _nuclio_client(args) as nuclio:
            publication = publish(entry, nuclio=nuclio, store=store, base_function=args.base_function,
                                  device=args.device)
        print(f"{'Updated' if publication.updated else 'Published'} {publication.function} "
              f"({publication.device}): \"{publication.display_name}\" serves model {entry.id}; it is listed in "
              f"CVAT's Models page and its Automatic annotation dialog", file=stdout)
        return EXIT_OK


class UnpublishCommand:
    description = "Remove a function published by `cvat-detr publish`; the model itself stays in $DETR_HOME/models."
    connections = ("nuclio",)

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", metavar="NAME", help="function name, e.g. detr-task-7-v2 (see `cvat-detr models`)")

    def execute(self, args: argparse.Namespace, stdout: TextIO, pbar: ProgressReporter) -> int:
        with _nuclio_client(args) as nuclio:
            models = unpublish(args.name, nuclio=nuclio, store=ModelStore(args.home))
        served = f" (model {', '.join(entry.id for entry in models)})" if models else ""
        print(f"Removed function {args.name}{served}", file=stdout)
        return EXIT_OK


class ModelsCommand:
    description = ("List trained models with their metrics and source task, and where each is published "
                   "(checked against the Nuclio dashboard when one is configured); `models show ID`: one model's "
                   "training, metrics, per-class AP, threshold, publication and report images.")
    connections = ("nuclio",)

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("action", nargs="?", metavar="show", help="show one model (give its ID)")
        parser.add_argument("model", nargs="?", metavar="ID",
                            help="with show: a model id, the run or job that trained it, or its folder")
        only = parser.add_mutually_exclusive_group()
        only.add_argument("--task", type=int, help="only the models trained on this CVAT task")
        only.add_argument("--project", type=int, help="only the models trained on this CVAT project")
        parser.add_argument("--json", action="store_true", help="print JSON (one object per model) instead of a table")

    def execute(self, args: argparse.Namespace, stdout: TextIO, pbar: ProgressReporter) -> int:
        store = ModelStore(args.home)
        if args.action not in (None, "show"):
            raise UsageError(f"unexpected {args.action!r}: to see one model, run `cvat-detr models show "
                             f"{args.action}`")
        if args.action == "show":
            if not args.model:
                raise UsageError("`cvat-detr models show` needs a model id, e.g. `cvat-detr models show task-7-v2` "
                                 "(list them with `cvat-detr models`)")
            entry = store.resolve(args.model)
            view = store.describe(entry)
            view.update(folder=str(entry.folder),
                        report_files={name: str(entry.report_image(name)) for name in view["report"]})
            if args.json:
                print(json.dumps(view, indent=2), file=stdout)
            else:
                _print_model(view, stdout)
            return EXIT_OK
        entries = [entry for entry in store.entries() if (args.task is None or entry.task_id == args.task)
                   and (args.project is None or entry.project_id == args.project)]
        deployed = self._deployed(args)
        rows = [self._row(entry, store, deployed) for entry in entries]
        # functions we published whose model is not in this storage (another DETR_HOME, or deleted)
        known = {entry.id for entry in store.entries()}
        for model_id, function in sorted((deployed or {}).items()):
            annotations = function["metadata"].get("annotations") or {}
            task = annotations.get("cvat-detr/task-id")
            if model_id not in known and args.project is None and (args.task is None or task == str(args.task)):
                rows.append({"id": model_id, "task_id": int(task) if task else None, "task_name": None,
                             "version": None, "created": None, "metrics": {}, "labels": [],
                             "function": function["metadata"]["name"], "state": "model not in this DETR_HOME"})
        if args.json:
            print(json.dumps(rows, indent=2), file=stdout)
        elif not rows:
            print(f"No models in {store.models_dir}; train one with `cvat-detr train`", file=stdout)
        else:
            _print_models(rows, stdout)
        return EXIT_OK

    @staticmethod
    def _deployed(args: argparse.Namespace) -> Optional[dict]:
        """Our functions on the dashboard by model id; None when no dashboard is configured or reachable."""
        if not args.nuclio_url:
            return None
        try:
            with _nuclio_client(args) as nuclio:
                return published_functions(nuclio)
        except NuclioError as e:
            logger.warning("Cannot check the published functions: %s", e)
            return None

    @staticmethod
    def _row(entry: ModelEntry, store: ModelStore, deployed: Optional[dict]) -> dict:
        state = None
        if deployed is not None:
            function = deployed.get(entry.id)
            if function is not None:
                state = (function.get("status") or {}).get("state", "unknown")
            elif entry.function:
                state = "missing on the dashboard"
        on_dashboard = (deployed or {}).get(entry.id)
        return {**store.describe(entry),
                "function": entry.function or (on_dashboard and on_dashboard["metadata"]["name"]), "state": state}


def _print_models(rows: list[dict], stdout: TextIO) -> None:
    def metric(row: dict, key: str) -> str:
        value = row["metrics"].get(key)
        return f"{value:.3f}" if isinstance(value, (int, float)) else "-"

    table = [("MODEL", "TASK", "AP", "AP50", "LABELS", "CREATED", "FUNCTION")]
    for row in rows:
        task = "-" if row["task_id"] is None else f"{row['task_id']} {row['task_name'] or ''}".strip()
        if row.get("project_id") is not None:
            task = f"project {row['project_id']} {row['project_name'] or ''}".strip()
        function = row["function"] or "-"
        if row["state"] and row["state"] != "ready":
            function += f" ({row['state']})"
        table.append((row["id"], task, metric(row, "AP"), metric(row, "AP50"), str(len(row["labels"])),
                      (row["created"] or "-")[:19], function))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]) - 1)]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1], file=stdout)


def _print_model(view: dict, stdout: TextIO) -> None:
    """``models show``: one model as a user weighs it before publishing."""
    def number(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, (int, float)) else "-"

    if view["task_id"] is not None:
        task = f"task {view['task_id']}" + (f" \"{view['task_name']}\"" if view["task_name"] else "")
    elif view["project_id"] is not None:
        task = f"project {view['project_id']}" + (f" \"{view['project_name']}\"" if view["project_name"] else "")
    else:
        task = "no CVAT task"
    version = f", version {view['version']}" if view["version"] is not None else ""
    print(f"Model {view['id']} ({task}{version}), created {view['created'] or '-'}", file=stdout)
    images = view["images"]
    counts = f"{images['train']} train / {images['val']} val images" if images else "images -"
    epochs = "-" if view["epochs"] is None else view["epochs"]
    print(f"  trained: from {view['weights']}, {view['architecture']} ({view['backbone'] or '-'}), {epochs} epochs "
          f"(best {view['best_epoch'] or '-'}), {counts}", file=stdout)
    print("  metrics: " + "  ".join(f"{key} {number(value)}" for key, value in view["metrics"].items())
          + f"  threshold {number(view['threshold'])}", file=stdout)
    if view["publishing"]:
        published = "being published"
    elif view["published"]:
        publication = view["published"]
        published = f"{view['function']} \"{publication.get('display_name')}\" ({publication.get('device')})"
    else:
        published = view["function"] or "no"
    print(f"  published: {published}" + (f" (last try: {view['publish_error']})" if view["publish_error"] else ""),
          file=stdout)
    if view["per_class"]:
        table = [("LABEL", "AP", "AP50", "BOXES")] + [
            (row["name"], number(row["AP"]), number(row["AP50"]), "-" if row["boxes"] is None else str(row["boxes"]))
            for row in view["per_class"]]
        widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
        print("  per class:", file=stdout)
        for line in table:
            print("    " + "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip(), file=stdout)
    print("  report:" + ("" if view["report_files"] else " none (the run wrote none, or was cancelled)"), file=stdout)
    for name, path in view["report_files"].items():
        print(f"    {name:<17} {path}", file=stdout)


class AnnotateCommand:
    description = ("Annotate a CVAT task automatically with a trained model: through CVAT with the model's published "
                   "function (what the task's Automatic annotation does), or with --local in this process through "
                   "cvat-sdk, without Nuclio. Labels are matched to the task's by name.")

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--task", type=int, required=True, help="CVAT task id")
        parser.add_argument("--model", required=True,
                            help="published function name (see `cvat-detr models`), or a model id, run id or model "
                                 "folder: its published function, or with --local its model file")
        parser.add_argument("--local", action="store_true",
                            help="run the model here through cvat-sdk instead of CVAT's serverless function")
        parser.add_argument("--threshold", type=_threshold, default=None,
                            help="keep boxes scored at or above this, 0..1 (default: the model's calibrated threshold)")
        parser.add_argument("--clear-existing", action="store_true", help="remove the task's annotations first")
        parser.add_argument("--timeout", type=float, default=DEFAULT_ANNOTATE_TIMEOUT,
                            help="seconds to wait for CVAT to finish (default: %(default)s)")
        _add_home_option(parser)

    def execute(self, args: argparse.Namespace, stdout: TextIO, pbar: ProgressReporter) -> int:
        store = ModelStore(args.home)
        with _make_client(args) as client:
            if args.local:
                result = annotate_locally(client, args.task, _model_file(args.model, store), threshold=args.threshold,
                                          clear_existing=args.clear_existing, sdk_pbar=_sdk_progress(pbar))
            else:
                result = annotate_with_function(client, args.task, _function_of(args.model, store),
                                                threshold=args.threshold, clear_existing=args.clear_existing, pbar=pbar,
                                                poll_interval=args.poll_interval, timeout=args.timeout)
        _print_annotation(result, stdout)
        return EXIT_OK


def _model_file(reference: str, store: ModelStore) -> Path:
    path = Path(reference).expanduser()
    if path.is_file():
        return path
    if (path / "model.pt").is_file():
        return path / "model.pt"
    return store.resolve(reference).model_path


def _function_of(reference: str, store: ModelStore) -> str:
    """A model's published function, or ``reference`` itself taken as a function name."""
    try:
        entry = store.resolve(reference)
    except ModelNotFound:
        return reference
    if not entry.function:
        raise UsageError(f"model {entry.id} is not published: publish it with `cvat-detr publish {entry.id}`, "
                         f"or annotate with --local")
    return entry.function


def _sdk_progress(pbar: ProgressReporter):
    """cvat-sdk's tqdm reporter drawing where ours does; None (no progress) with --quiet.

    cvat-sdk names each bar's unit itself: passing one here makes tqdm fail on a repeated keyword."""
    if not isinstance(pbar, TqdmProgressReporter):
        return None
    from cvat_sdk.core.helpers import DeferredTqdmProgressReporter

    return DeferredTqdmProgressReporter(dict(pbar.tqdm_kwargs))


def _add_trainer_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trainer", metavar="URL", default=os.environ.get("DETR_TRAINER_URL"),
                        help="the trainer function's HTTP trigger (default: $DETR_TRAINER_URL); its token is "
                             "read from $DETR_TRAINER_TOKEN")


def _trainer_client(args: argparse.Namespace):
    from cvat_plugin.trainer_auth import TrainerTokenError, token_from_env
    from cvat_plugin.trainer_client import TrainerClient

    if not args.trainer:
        raise UsageError("pass --trainer URL (or set DETR_TRAINER_URL): the trainer function's HTTP trigger")
    try:
        token = token_from_env(who="cvat-detr --trainer")
    except TrainerTokenError as e:
        raise UsageError(str(e)) from None
    return TrainerClient(args.trainer, token=token)


class StatusCommand:
    description = "Show the trainer's jobs (newest first), or one job in detail; --follow waits for it to end."
    connections = ()

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("job", nargs="?", help="job id (default: list the jobs)")
        only = parser.add_mutually_exclusive_group()
        only.add_argument("--task", type=int, help="only the jobs of this CVAT task")
        only.add_argument("--project", type=int, help="only the jobs of this CVAT project")
        parser.add_argument("--follow", action="store_true", help="with JOB: follow it until it ends")
        parser.add_argument("--poll-interval", type=float, default=5.0, help="seconds between polls (default: 5)")
        parser.add_argument("--json", action="store_true", help="print the trainer's job objects as JSON")
        _add_trainer_option(parser)

    def execute(self, args: argparse.Namespace, stdout: TextIO, pbar: ProgressReporter) -> int:
        if args.follow and not args.job:
            raise UsageError("--follow needs a JOB id")
        trainer = _trainer_client(args)
        if not args.job:
            jobs = trainer.list(task_id=args.task, project_id=args.project)
            if args.json:
                json.dump(jobs, stdout, indent=2)
                print(file=stdout)
            else:
                _print_jobs(jobs, stdout)
            return EXIT_OK
        from cvat_plugin.trainer_client import FINAL_STATES

        job = _job_call(trainer.get, args.job)
        if args.follow and job["state"] not in FINAL_STATES:
            job = _follow_job(trainer, args.job, args.poll_interval, stdout, pbar)
            if job is None:
                return EXIT_INTERRUPTED
        if args.json:
            json.dump(job, stdout, indent=2)
            print(file=stdout)
            return EXIT_OK
        _print_jobs([job], stdout)
        return _report_job(job, stdout) if args.follow else EXIT_OK


class CancelCommand:
    description = ("Cancel a trainer job: a queued job at once, a running one within a training step (it keeps "
                   "its last checkpoint and its best model so far).")
    connections = ()

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("job", help="job id (see `cvat-detr status`)")
        _add_trainer_option(parser)

    def execute(self, args: argparse.Namespace, stdout: TextIO, pbar: ProgressReporter) -> int:
        from cvat_plugin.trainer_client import TrainerRequestError

        trainer = _trainer_client(args)
        try:
            job = _job_call(trainer.cancel, args.job)
        except TrainerRequestError as e:
            if e.status == 409:  # already over: nothing to do, and not an error for scripts
                print(f"Job {args.job} has already ended; nothing to cancel", file=stdout)
                return EXIT_OK
            raise
        if job["state"] == "cancelled":
            print(f"Job {args.job} cancelled", file=stdout)
        else:
            print(f"Job {args.job} is stopping; follow it with `cvat-detr status {args.job} --follow`", file=stdout)
        return EXIT_OK


class JobNotFound(Exception):
    """The trainer has no job by that id."""


def _job_call(call, job_id: str) -> dict:
    """``call(job_id)`` on the trainer, its 404 turned into :class:`JobNotFound`."""
    from cvat_plugin.trainer_client import TrainerRequestError

    try:
        return call(job_id)
    except TrainerRequestError as e:
        if e.status == 404:
            raise JobNotFound(f"the trainer has no job {job_id!r}; list them with `cvat-detr status`") from e
        raise


def _print_jobs(jobs: list[dict], stdout: TextIO) -> None:
    if not jobs:
        print("No jobs", file=stdout)
        return
    rows = [("JOB", "TASK", "STATE", "EPOCH", "AP50", "MODEL", "NOTE")]
    for job in jobs:
        ap50 = (job.get("best_metrics") or job.get("metrics") or {}).get("AP50")
        note = job.get("error") or (f"published as {job['function']}" if job.get("function") else "")
        if job.get("state") == "running" and job.get("eta_s") is not None:
            note = note or f"about {max(1, round(job['eta_s'] / 60))} min left"
        source = job.get("task_id") or (f"project {job['project_id']}" if job.get("project_id") else "-")
        rows.append((job["id"], str(source), job["state"],
                     f"{job.get('epoch', 0)}/{job.get('epochs', 0)}", "-" if ap50 is None else f"{ap50:.3f}",
                     job.get("model_id") or "-", note))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1], file=stdout)


def _print_annotation(result: AnnotationResult, stdout: TextIO) -> None:
    print(f"Task {result.task_id}: {result.added} shapes added by {result.model} ({result.shapes_after} in total)",
          file=stdout)


COMMANDS = {"export": ExportCommand(), "train": TrainCommand(), "publish": PublishCommand(),
            "unpublish": UnpublishCommand(), "models": ModelsCommand(), "annotate": AnnotateCommand(),
            "status": StatusCommand(), "cancel": CancelCommand()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cvat-detr", description="Train DETR on CVAT tasks and projects.", epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    connections = {"cvat": _connection_parser(), "nuclio": _nuclio_parser()}
    for name, command in COMMANDS.items():
        parents = [connections[kind] for kind in getattr(command, "connections", ("cvat",))]
        sub = subparsers.add_parser(name, help=command.description, description=command.description,
                                    parents=parents, epilog=EXIT_CODES_HELP,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        command.configure_parser(sub)
    return parser


def _exit_code(error: BaseException) -> Optional[int]:
    """The exit code of an error the commands expect (its message says what to do); None for a bug."""
    from cvat_plugin.trainer_client import TrainerError, TrainerUnavailable
    from detr import ConfigError, TrainingError
    from detr import DatasetError as EngineDatasetError

    if isinstance(error, UsageError):
        return EXIT_USAGE
    if isinstance(error, (AuthenticationError, PermissionDeniedError)):
        return EXIT_AUTH
    if isinstance(error, (NotFoundError, ModelNotFound, FunctionNotFound, JobNotFound, UnknownFunction)):
        return EXIT_NOT_FOUND
    if isinstance(error, (CvatConnectionError, DashboardUnreachable)) or (
            isinstance(error, CvatHTTPError) and (error.status >= 500 or error.status == 429)):
        return EXIT_UNREACHABLE
    if isinstance(error, CvatError):
        return EXIT_EXPORT
    if isinstance(error, (DatasetError, EngineDatasetError)):
        return EXIT_DATA
    if isinstance(error, TrainerUnavailable):
        return EXIT_UNREACHABLE
    if isinstance(error, (TrainingError, ConfigError, TrainerJobFailed, TrainerError)):
        return EXIT_TRAINING
    if isinstance(error, (PublishError, NuclioError)):
        return EXIT_PUBLISH
    if isinstance(error, AnnotateError):
        return EXIT_ANNOTATE
    return None


#: How the error line starts, by exit code (default "error").
_FAILURES = {EXIT_TRAINING: "training failed", EXIT_PUBLISH: "publishing failed"}


def main(argv: Optional[Sequence[str]] = None, *, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on bad usage and 0 on --help
        return int(e.code or 0)
    args.argv = argv
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=stderr,
                        format="%(levelname)s: %(message)s", force=True)
    if not args.verbose:  # their retry and import chatter is ours to summarise
        for noisy in ("urllib3", "datumaro"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    pbar = NullProgressReporter() if args.quiet else TqdmProgressReporter(file=stderr, leave=False)

    try:
        return COMMANDS[args.command].execute(args, stdout, pbar)
    except KeyboardInterrupt:
        print(f"cvat-detr {args.command}: interrupted", file=stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        code = _exit_code(e)
        if code is None:
            raise
        print(f"cvat-detr {args.command}: {_FAILURES.get(code, 'error')}: {e}", file=stderr)
        return code

if __name__ == "__main__":
    sys.exit(main())
