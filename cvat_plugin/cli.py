"""The ``cvat-detr`` command: export a CVAT task as a training set, train DETR on it locally.

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
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence, TextIO

from cvat_plugin.auth import credentials_from
from cvat_plugin.client import (
    DEFAULT_EXPORT_TIMEOUT, DEFAULT_POLL_INTERVAL, DEFAULT_RETRIES, AuthenticationError, CvatClient,
    CvatConnectionError, CvatError, CvatHTTPError, NotFoundError, PermissionDeniedError,
)
from cvat_plugin.dataset import DEFAULT_VAL_FRACTION, DatasetError, build_training_set
from cvat_plugin.progress import NullProgressReporter, ProgressReporter, TqdmProgressReporter
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
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = f"""exit codes:
  {EXIT_OK}    success
  {EXIT_ERROR}    unexpected error (a bug: please report it with the traceback)
  {EXIT_USAGE}    bad command line or options
  {EXIT_AUTH}    CVAT rejected the credentials (401) or the user has no access (403)
  {EXIT_NOT_FOUND}    the task does not exist (404)
  {EXIT_UNREACHABLE}    CVAT unreachable or failing (connection errors, timeouts, 429/5xx after retries)
  {EXIT_EXPORT}    the export failed, timed out or its download was incomplete
  {EXIT_DATA}    the task cannot make a training set (no images, no boxes, unreadable export)
  {EXIT_TRAINING}    training failed
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); a training run keeps its last checkpoint

environment: CVAT_URL, CVAT_ACCESS_TOKEN, CVAT_TOKEN, CVAT_USERNAME, CVAT_PASSWORD, DETR_HOME"""

MODEL_PRESETS = ("detr-r50", "tiny")
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


def _add_split_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                        help="share of images held out for validation when the task has no Train/Validation "
                             "subsets (default: %(default)s)")


def export_task(client: CvatClient, task_id: int, out_dir: Path, *, val_fraction: float, seed: int,
                overwrite: bool, pbar: ProgressReporter) -> dict:
    """Export task ``task_id`` and build its training set in ``out_dir``; returns the manifest."""
    task = client.get_task(task_id)
    if not task.get("size"):
        raise DatasetError(f"task {task_id} ({task.get('name')!r}) has no images; add data to it in CVAT")
    labels = client.get_labels(task_id)
    data_meta = client.get_data_meta(task_id)
    annotations = client.get_annotations(task_id)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir.parent) as tmp:
        export_zip = client.export_dataset(task_id, Path(tmp) / f"task_{task_id}_coco.zip", pbar=pbar)
        source = {"url": client.url, "task_id": task_id, "task_name": task.get("name"),
                  "server_version": str(client.server_version),
                  "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        return build_training_set(export_zip, out_dir, labels=labels, data_meta=data_meta, annotations=annotations,
                                  source=source, val_fraction=val_fraction, seed=seed, overwrite=overwrite,
                                  pbar=pbar)


def _print_dataset_summary(manifest: dict, out_dir: Path, stdout: TextIO) -> None:
    images, boxes = manifest["images"], manifest["boxes"]
    print(f"Training set: {out_dir}", file=stdout)
    print(f"  images: {images['train']} train, {images['val']} val ({images['negative']} without boxes, "
          f"{images['deleted_dropped']} deleted frames dropped); boxes: {boxes['train']} train, {boxes['val']} val",
          file=stdout)
    for label in manifest["labels"]:
        print(f"  {label['name']}: {label['boxes']['train']} train / {label['boxes']['val']} val boxes", file=stdout)
    if manifest["warnings"]:  # each was logged to stderr as it was found
        print(f"  {len(manifest['warnings'])} warning(s): see {out_dir / 'manifest.json'}", file=stdout)


# --- commands -----------------------------------------------------------------------------------


class ExportCommand:
    description = ("Export a CVAT task (COCO 1.0 with images) and build its training set: images/, "
                   "annotations/{train,val}.json, labels.json, manifest.json.")

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--task", type=int, required=True, help="CVAT task id")
        parser.add_argument("--out", type=Path, required=True, help="folder for the training set")
        parser.add_argument("--overwrite", action="store_true", help="replace --out if it is not empty")
        parser.add_argument("--seed", type=int, default=0, help="seed of the validation split (default: 0)")
        _add_split_options(parser)

    def execute(self, args: argparse.Namespace, stdout: TextIO, pbar: ProgressReporter) -> int:
        with _make_client(args) as client:
            manifest = export_task(client, args.task, args.out, val_fraction=args.val_fraction, seed=args.seed,
                                   overwrite=args.overwrite, pbar=pbar)
        _print_dataset_summary(manifest, args.out, stdout)
        return EXIT_OK


class TrainCommand:
    description = ("Export a CVAT task, build its training set under $DETR_HOME/datasets, train DETR on it "
                   "in this process and save the model under $DETR_HOME/models/<id>/ (model.pt, model.json).")

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        from detr.config import BACKBONES, TrainConfig

        parser.add_argument("--task", type=int, required=True, help="CVAT task id")
        parser.add_argument("--local", action="store_true", required=True,
                            help="train in this process (required: remote training comes with the trainer function)")
        parser.add_argument("--home", type=Path, default=None,
                            help=f"storage folder (default: $DETR_HOME or {detr_home({})})")
        _add_split_options(parser)
        model = parser.add_argument_group("model")
        model.add_argument("--model-preset", choices=MODEL_PRESETS, default="detr-r50",
                           help="detr-r50: the official DETR-R50 architecture; tiny: ResNet-18, 128 wide, 2+2 "
                                "layers, 20 queries, for tests and quick trials (default: %(default)s)")
        model.add_argument("--backbone", choices=BACKBONES, help="override the preset's ResNet")
        model.add_argument("--num-queries", type=int, help="override the preset's number of object queries")
        model.add_argument("--pretrained", help="official DETR checkpoint (file or URL) to fine-tune from")
        model.add_argument("--backbone-weights", help="torchvision ImageNet ResNet weights (file) to start from")
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
        from detr import ConfigError, ModelConfig, TrainConfig
        from detr.config import TINY_MODEL

        # Check every option before any work starts.
        try:
            train_config = TrainConfig.from_dict({f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                                                  if getattr(args, f.name) is not None})
            model_config = TINY_MODEL if args.model_preset == "tiny" else ModelConfig()
            overrides = {k: v for k, v in (("backbone", args.backbone), ("num_queries", args.num_queries)) if v}
            model_config = model_config.replace(**overrides)
        except ConfigError as e:
            raise UsageError(str(e)) from e
        if args.pretrained and args.backbone_weights:
            raise UsageError("pass either --pretrained or --backbone-weights, not both")

        storage = Storage(args.home)
        run_id = new_id(args.task)
        dataset_dir, run_dir, model_dir = storage.dataset_dir(run_id), storage.run_dir(run_id), storage.model_dir(run_id)
        with _make_client(args) as client:
            manifest = export_task(client, args.task, dataset_dir, val_fraction=args.val_fraction,
                                   seed=train_config.seed, overwrite=False, pbar=pbar)
        _print_dataset_summary(manifest, dataset_dir, stdout)

        result = _fit_with_progress(dataset_dir, run_dir, model_config, train_config, args, pbar)
        if not result.model_path.is_file():
            print(f"Training stopped before the first evaluation; checkpoint: {result.checkpoint_path}", file=stdout)
            return EXIT_INTERRUPTED
        copy_atomic(result.model_path, model_dir / "model.pt")
        card = _model_card(run_id, manifest, result, model_dir / "model.pt", args)
        write_json_atomic(model_dir / "model.json", card)
        print(f"Model: {model_dir / 'model.pt'} ({result.status} after {result.epochs_done} epochs; "
              f"AP {card['metrics'].get('AP', float('nan')):.3f}, AP50 {card['metrics'].get('AP50', float('nan')):.3f})",
              file=stdout)
        print(f"Run: {run_dir}", file=stdout)
        return EXIT_INTERRUPTED if result.status == "cancelled" else EXIT_OK


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


COMMANDS = {"export": ExportCommand(), "train": TrainCommand()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cvat-detr", description="Train DETR on CVAT tasks.", epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    connection = _connection_parser()
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.description, description=command.description,
                                    parents=[connection], epilog=EXIT_CODES_HELP,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        command.configure_parser(sub)
    return parser


def _exit_code(error: BaseException) -> int:
    if isinstance(error, (AuthenticationError, PermissionDeniedError)):
        return EXIT_AUTH
    if isinstance(error, NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(error, CvatConnectionError) or (isinstance(error, CvatHTTPError) and
                                                  (error.status >= 500 or error.status == 429)):
        return EXIT_UNREACHABLE
    return EXIT_EXPORT


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

    from detr import ConfigError, TrainingError
    from detr import DatasetError as EngineDatasetError

    try:
        return COMMANDS[args.command].execute(args, stdout, pbar)
    except UsageError as e:
        print(f"cvat-detr {args.command}: error: {e}", file=stderr)
        return EXIT_USAGE
    except CvatError as e:
        print(f"cvat-detr {args.command}: error: {e}", file=stderr)
        return _exit_code(e)
    except (DatasetError, EngineDatasetError) as e:
        print(f"cvat-detr {args.command}: error: {e}", file=stderr)
        return EXIT_DATA
    except (TrainingError, ConfigError) as e:
        print(f"cvat-detr {args.command}: training failed: {e}", file=stderr)
        return EXIT_TRAINING
    except KeyboardInterrupt:
        print(f"cvat-detr {args.command}: interrupted", file=stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
