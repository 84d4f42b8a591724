"""``cvat-detr annotate``: a task annotated by a trained model, through CVAT or in this process."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from cvat_plugin.cli.exits import EXIT_OK, UsageError
from cvat_plugin.cli.options import add_home_option, make_client, unit_interval
from cvat_plugin.cvat.annotate import (
    DEFAULT_TIMEOUT as DEFAULT_ANNOTATE_TIMEOUT,
)
from cvat_plugin.cvat.annotate import (
    AnnotationResult,
    annotate_locally,
    annotate_with_function,
)
from cvat_plugin.home.models import ModelNotFound, ModelStore
from cvat_plugin.progress import ProgressReporter, TqdmProgressReporter


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
        parser.add_argument("--threshold", type=unit_interval, default=None,
                            help="keep boxes scored at or above this, 0..1 (default: the model's calibrated threshold)")
        parser.add_argument("--clear-existing", action="store_true", help="remove the task's annotations first")
        parser.add_argument("--timeout", type=float, default=DEFAULT_ANNOTATE_TIMEOUT,
                            help="seconds to wait for CVAT to finish (default: %(default)s)")
        add_home_option(parser)

    def execute(self, args: argparse.Namespace, stdout: TextIO, pbar: ProgressReporter) -> int:
        store = ModelStore(args.home)
        with make_client(args) as client:
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



def _print_annotation(result: AnnotationResult, stdout: TextIO) -> None:
    print(f"Task {result.task_id}: {result.added} shapes added by {result.model} ({result.shapes_after} in total)",
          file=stdout)



