"""``cvat-detr models``, ``publish`` and ``unpublish``: the trained models and their detector functions."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any, Optional, TextIO

from cvat_plugin.cli.exits import EXIT_OK, UsageError
from cvat_plugin.cli.options import nuclio_client
from cvat_plugin.home.models import ModelEntry, ModelStore
from cvat_plugin.nuclio.client import (
    NuclioError,
)
from cvat_plugin.nuclio.publish import (
    DEFAULT_BASE_FUNCTION,
    DEVICES,
    PublishSettings,
    publish,
    published_functions,
    unpublish,
)
from cvat_plugin.progress import ProgressReporter

logger = logging.getLogger(__name__)


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
        with nuclio_client(args) as nuclio:
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
        with nuclio_client(args) as nuclio:
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
            with nuclio_client(args) as nuclio:
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



