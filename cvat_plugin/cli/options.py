"""Options and clients several commands share: the CVAT connection, the Nuclio dashboard, the trainer,
the storage folder and the source (task or project) of a training set."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Sequence, TextIO

from cvat_plugin.cli.exits import UsageError
from cvat_plugin.cvat.auth import credentials_from
from cvat_plugin.cvat.client import (
    DEFAULT_EXPORT_TIMEOUT,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_RETRIES,
    CvatClient,
    CvatError,
)
from cvat_plugin.cvat.dataset import export_task
from cvat_plugin.home.layout import detr_home
from cvat_plugin.nuclio.client import (
    DEFAULT_DEPLOY_TIMEOUT,
    NuclioClient,
    NuclioError,
)
from cvat_plugin.nuclio.client import (
    DEFAULT_POLL_INTERVAL as DEFAULT_NUCLIO_POLL_INTERVAL,
)
from cvat_plugin.nuclio.client import (
    DEFAULT_RETRIES as DEFAULT_NUCLIO_RETRIES,
)
from cvat_plugin.nuclio.publish import (
    PublishSettings,
)
from cvat_plugin.progress import ProgressReporter
from cvat_plugin.training.schema import option
from detr.flags import add_option_flag

SECRET_OPTIONS = ("--access-token", "--token", "--password")

def connection_parser() -> argparse.ArgumentParser:
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


def nuclio_parser() -> argparse.ArgumentParser:
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
    add_home_option(parser)
    return parser


def add_home_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", type=Path, default=None,
                        help=f"storage folder (default: $DETR_HOME or {detr_home({})})")


def nuclio_client(args: argparse.Namespace) -> NuclioClient:
    if not args.nuclio_url:
        raise UsageError("no Nuclio dashboard address: pass --nuclio-url or set NUCLIO_DASHBOARD_URL")
    try:
        return NuclioClient(args.nuclio_url, namespace=args.namespace, deploy_timeout=args.deploy_timeout,
                            poll_interval=args.poll_interval, retries=args.retries)
    except NuclioError as e:
        raise UsageError(str(e)) from e


def unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def make_client(args: argparse.Namespace) -> CvatClient:
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


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """What to export: a task, or a project (all its tasks, which share its labels)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", type=int, help="CVAT task id")
    source.add_argument("--project", type=int,
                        help="CVAT project id: all its tasks with images, in one training set; tasks in the Train / "
                             "Validation subsets decide the split, a Test task is held out")


def export_source(client: CvatClient, args: argparse.Namespace, out_dir: Path, *, seed: int, overwrite: bool,
            pbar: ProgressReporter) -> dict:
    """The training set of ``--task`` or ``--project`` in ``out_dir``; returns its manifest."""
    if args.project is not None:
        from cvat_plugin.cvat.project_export import export_project

        return export_project(client, args.project, out_dir, val_fraction=args.val_fraction, seed=seed,
                              overwrite=overwrite, pbar=pbar)
    return export_task(client, args.task, out_dir, val_fraction=args.val_fraction, seed=seed, overwrite=overwrite,
                       pbar=pbar)


def add_split_options(parser: argparse.ArgumentParser) -> None:
    val_fraction = option("val_fraction")
    add_option_flag(parser, val_fraction, default=val_fraction.default)


def print_dataset_summary(manifest: dict, out_dir: Path, stdout: TextIO) -> None:
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



def add_trainer_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trainer", metavar="URL", default=os.environ.get("DETR_TRAINER_URL"),
                        help="the trainer function's HTTP trigger (default: $DETR_TRAINER_URL); its token is "
                             "read from $DETR_TRAINER_TOKEN")


def trainer_client(args: argparse.Namespace):
    from cvat_plugin.trainer.auth import TrainerTokenError, token_from_env
    from cvat_plugin.trainer.client import TrainerClient

    if not args.trainer:
        raise UsageError("pass --trainer URL (or set DETR_TRAINER_URL): the trainer function's HTTP trigger")
    try:
        token = token_from_env(who="cvat-detr --trainer")
    except TrainerTokenError as e:
        raise UsageError(str(e)) from None
    return TrainerClient(args.trainer, token=token)



