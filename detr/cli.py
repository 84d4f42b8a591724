"""The ``detr`` command: train, eval, predict, quickstart, export-onnx.

Training flags are generated from the ``ModelConfig`` and ``TrainConfig`` fields, so names,
defaults and help text live in one place. ``main(argv) -> int`` never calls ``sys.exit``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .checkpoint import CheckpointError
from .config import PRECISIONS, ConfigError, ModelConfig, TrainConfig, config_options
from .data import DatasetError
from .flags import add_option_flag
from .images import ImageError
from .official import ZOO_THRESHOLD, import_checkpoint
from .onnx_export import DEFAULT_OPSET, OnnxExportError, check_onnx, export_onnx, require_onnx
from .predict import evaluate_model_file, predict_images
from .progress import TrainProgressBar
from .recipes import MODEL_PRESETS, PRESET_HELP, RECIPES, SMALL_DATA_IMAGES
from .runs import plan_run
from .train import TrainingError

logger = logging.getLogger("detr")

#: Exit codes: 0 success, 1 a known error (message on stderr), 2 bad command line, 130 interrupted.
EXIT_ERROR, EXIT_INTERRUPTED = 1, 130
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class Command:
    name = ""
    description = ""

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        raise NotImplementedError

    def execute(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


def add_config_flags(parser: argparse.ArgumentParser, config_cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per config field (``detr.flags``); unset flags stay absent so explicit values can be
    told apart."""
    group = parser.add_argument_group(f"{config_cls._section} options")
    for option in config_options(config_cls):
        if option.name not in skip:
            add_option_flag(group, option, default=argparse.SUPPRESS)


def add_precision_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="auto",
        help="auto (default): bf16 where the hardware runs it natively (CUDA, CPUs with AVX512-BF16 or AMX), else fp32",
    )


def config_overrides(args: argparse.Namespace, config_cls: type) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(config_cls)}
    return {k: v for k, v in vars(args).items() if k in names}


class TrainCommand(Command):
    name = "train"
    description = "Train DETR on a COCO folder, a training set or a CVAT 'COCO 1.0' export zip."

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", required=True, help="COCO folder, training-set folder or CVAT export zip")
        parser.add_argument("--out", required=True, help="run folder: model.pt, checkpoint.pt, metrics.jsonl, report/")
        parser.add_argument(
            "--resume",
            action="store_true",
            help="continue the run in --out from its checkpoint (pass a larger --epochs to extend it)",
        )
        parser.add_argument(
            "--pretrained",
            help="official DETR checkpoint or a model.pt of ours (file or URL) to fine-tune; the class head is "
            "replaced for your labels",
        )
        parser.add_argument("--backbone-weights", help="torchvision ImageNet weights of the backbone (file or URL)")
        parser.add_argument(
            "--val-fraction",
            type=float,
            default=0.15,
            help="validation share when the data has no validation subset. Default: 0.15.",
        )
        parser.add_argument(
            "--recipe",
            choices=RECIPES,
            default="auto",
            help="default: the official DETR recipe; small-data: trainable norms, warm-up + cosine, one input scale; "
            f"auto: small-data below {SMALL_DATA_IMAGES} training images. Default: auto.",
        )
        parser.add_argument(
            "--model-preset",
            choices=("auto", *MODEL_PRESETS),
            default="auto",
            help="; ".join(f"{name}: {text}" for name, text in PRESET_HELP.items()) + ". Default: auto.",
        )
        add_config_flags(parser, ModelConfig, skip=("num_classes",))
        add_config_flags(parser, TrainConfig)

    def execute(self, args: argparse.Namespace) -> int:
        spec = plan_run(
            args.data,
            args.out,
            resume=args.resume,
            pretrained=args.pretrained,
            backbone_weights=args.backbone_weights,
            recipe=args.recipe,
            preset=args.model_preset,
            model_overrides=config_overrides(args, ModelConfig),
            train_overrides=config_overrides(args, TrainConfig),
            val_fraction=args.val_fraction,
        )
        if spec.reason:
            print(spec.reason)
        with TrainProgressBar() as bar:
            result = spec.fit(callbacks=[bar])
        print(f"{result.status}: {result.epochs_done} epoch(s); best {_metric_line(result.best_metrics)}")
        print(f"model: {result.model_path}\ncheckpoint: {result.checkpoint_path}\nreport: {result.out_dir / 'report'}")
        return 0


class EvalCommand(Command):
    name = "eval"
    description = "Evaluate a model file on a dataset; prints COCO metrics, JSON on the last line."

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", required=True, help="COCO folder, training-set folder or CVAT export zip")
        parser.add_argument("--model", required=True, help="model.pt written by training")
        parser.add_argument(
            "--split",
            choices=("auto", "val", "train", "all"),
            default="auto",
            help="images to evaluate: auto = the validation subset when there is one, else all",
        )
        parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N. Default: CUDA when available.")
        add_precision_flag(parser)
        parser.add_argument("--batch-size", type=int, default=4)
        parser.add_argument("--report", help="also write the PNG report (PR curves, confusion matrix, samples) here")
        parser.add_argument("--work-dir", default=None, help="where a zip is extracted. Default: next to the zip.")

    def execute(self, args: argparse.Namespace) -> int:
        result = evaluate_model_file(
            args.model,
            args.data,
            split=args.split,
            device=args.device,
            precision=args.precision,
            batch_size=args.batch_size,
            report_dir=args.report,
            work_dir=args.work_dir,
        )
        summary = result.summary()
        print(_metric_line(summary))
        for name, stats in result.per_class.items():
            ap = stats["AP"]
            print(f"  {name:<20} AP {'n/a' if ap is None else f'{ap:.3f}'}  boxes {stats['boxes']}")
        print(json.dumps(summary))
        return 0


class PredictCommand(Command):
    name = "predict"
    description = "Detect objects in images; writes annotated images and predictions.json."

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("images", nargs="+", help="image files or folders")
        parser.add_argument("--model", required=True, help="model.pt written by training")
        parser.add_argument("--out", required=True, help="folder for annotated images and predictions.json")
        parser.add_argument(
            "--threshold",
            type=_fraction,
            default=None,
            help="score threshold in [0, 1]. Default: the model's calibrated threshold.",
        )
        parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N. Default: CUDA when available.")
        add_precision_flag(parser)
        parser.add_argument("--batch-size", type=int, default=4)

    def execute(self, args: argparse.Namespace) -> int:
        files = _collect_images(args.images)
        written = predict_images(
            args.model, files, args.out, threshold=args.threshold, device=args.device, precision=args.precision,
            batch_size=args.batch_size,
        )
        print(f"{len(files)} image(s), {written['detections']} detection(s) -> {written['json']}")
        return 0


class QuickstartCommand(Command):
    name = "quickstart"
    description = (
        "Generate a small shapes dataset in CVAT's COCO export layout, train a tiny DETR on it for a few "
        "minutes on the CPU, evaluate, and write predictions."
    )

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", default="quickstart", help="output folder. Default: ./quickstart")
        parser.add_argument("--images", type=int, default=240, help="generated images. Default: 240.")
        parser.add_argument(
            "--epochs", type=int, default=None, help="training epochs. Default: the quickstart recipe's."
        )

    def execute(self, args: argparse.Namespace) -> int:
        from .quickstart import run_quickstart

        return run_quickstart(Path(args.out), images=args.images, epochs=args.epochs)


class ExportOnnxCommand(Command):
    name = "export-onnx"
    description = "Export a model file to ONNX (any image size) with its labels, threshold and input size as metadata."

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", required=True, help="model.pt written by training")
        parser.add_argument("--out", required=True, help="ONNX file to write; the metadata goes to <out>.json too")
        parser.add_argument(
            "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, >= 18. Default: {DEFAULT_OPSET}."
        )
        parser.add_argument(
            "--check", action="store_true", help="run onnxruntime on a random image and compare with PyTorch"
        )

    def execute(self, args: argparse.Namespace) -> int:
        require_onnx(runtime=args.check)  # before the export's minutes, not after
        exported = export_onnx(args.model, args.out, opset=args.opset)
        labels = exported.metadata["labels"]
        print(f"{exported.path} (opset {exported.opset}, {len(labels)} label(s)); metadata: {exported.metadata_path}")
        if not args.check:
            return 0
        check = check_onnx(exported.path, args.model)
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in check.max_diff.items())
        print(
            f"check on {list(check.input_shape)}: max |onnxruntime - pytorch| {diffs} (tolerance {check.tolerance:g})"
        )
        if not check.ok:
            print("error: ONNX and PyTorch outputs differ beyond the tolerance; try another --opset", file=sys.stderr)
            return EXIT_ERROR
        return 0


class ImportCheckpointCommand(Command):
    name = "import-checkpoint"
    description = "Turn an official DETR checkpoint (file or URL) into a model file that detectors can serve."

    def configure_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("source", help="e.g. detr-r50-e632da11.pth or its https URL")
        parser.add_argument("--out", required=True, help="model file to write")
        parser.add_argument("--labels", default="coco", help="coco (default) or a JSON list of names, one per slot")
        parser.add_argument("--dilation", action="store_true", help="the checkpoint is a DC5 model")
        parser.add_argument(
            "--threshold",
            type=_fraction,
            default=ZOO_THRESHOLD,
            help=f"default score threshold of the model file. Default: {ZOO_THRESHOLD}.",
        )

    def execute(self, args: argparse.Namespace) -> int:
        out = import_checkpoint(
            args.source, args.out, labels=args.labels, dilation=args.dilation, threshold=args.threshold
        )
        print(f"model file: {out}")
        return 0


COMMANDS: tuple[Command, ...] = (
    TrainCommand(),
    EvalCommand(),
    PredictCommand(),
    ImportCheckpointCommand(),
    QuickstartCommand(),
    ExportOnnxCommand(),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detr",
        description="Train and run DETR object detectors.",
        epilog="Exit codes: 0 ok, 1 error (message on stderr), 2 bad arguments, "
        "130 interrupted (a checkpoint is kept).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.description, description=command.description)
        command.configure_parser(p)
        p.set_defaults(handler=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s")
    started = time.monotonic()
    try:
        code = args.handler.execute(args)
    except (
        ConfigError,
        DatasetError,
        CheckpointError,
        TrainingError,
        ImageError,
        OnnxExportError,
        FileNotFoundError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    logger.debug("done in %.1f s", time.monotonic() - started)
    return code


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _collect_images(paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such image file or folder")
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {', '.join(paths)}")
    return files


def _metric_line(metrics: dict) -> str:
    def fmt(key: str) -> str:
        value = metrics.get(key)
        return f"{key} {'n/a' if value is None else f'{value:.3f}'}"

    return ", ".join(fmt(k) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"))


if __name__ == "__main__":
    sys.exit(main())
