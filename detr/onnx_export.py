"""Export a trained model file to ONNX, for runtimes without PyTorch (onnxruntime, TensorRT, OpenVINO).

Exporter: the ``torch.export``-based one (``torch.onnx.export(..., dynamo=True)``), PyTorch's default
since 2.9; the TorchScript exporter is deprecated. Height, width and batch are symbolic
(``torch.export.Dim``), so one graph serves every image size. Opset 18 by default: the lowest the
exporter translates to (asking for 17 gives an invalid Split node, for 16 a graph still at 18), and
run by onnxruntime >= 1.14. The exporter's onnxscript optimiser folds constants; the frozen batch
norm that the backbone folds into its convolutions at forward time (``detr/backbone.py``) is traced as
``Mul(conv weight, scale)`` on initializers, which onnxruntime folds once when the session is created.

Graph contract::

    input   images       float32 [batch, 3, height, width]
    outputs pred_logits  float32 [batch, Q, K+1] with classifier 'softmax' (last column = no object),
                                 [batch, Q, K] with 'sigmoid'
            pred_boxes   float32 [batch, Q, 4] (cx, cy, w, h), normalised to the input image

Preprocessing (what ``Detector.preprocess`` does): RGB, resize so the shorter side is ``image_size``
unless the longer side would exceed ``max_size`` (then the longer side is ``max_size``), aspect ratio
kept; divide by 255, subtract ``mean``, divide by ``std`` (ImageNet). Because the aspect ratio is
kept, multiplying the boxes by the *original* width and height gives original pixels.
Postprocessing: probabilities = softmax without its last column, or sigmoid; each query's score is
its best class; keep scores >= ``threshold``; an empty label name is an unused class slot, never reported;
a box whose IoU with a better-scored box of the same class exceeds ``duplicate_iou`` is a duplicate and
is dropped (class-wise NMS).

There is no padding-mask input: one image, or a batch of images of one size (video frames), needs
none, and without it attention skips masking altogether, as ``Detector`` does for a single image.
Images of different sizes are run one at a time; zero-padding them into one batch would change the
results.

Metadata, for a runtime user to postprocess without this package, is stored twice: as the ONNX
model's ``metadata_props`` (strings as they are, other values JSON-encoded; onnxruntime shows them
as ``session.get_modelmeta().custom_metadata_map``) and as ``<out>.json`` beside the graph.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from .checkpoint import atomic_write, atomic_write_json
from .config import IMAGENET_MEAN, IMAGENET_STD
from .inference import Detector
from .postprocess import DUPLICATE_IOU, class_probabilities

logger = logging.getLogger(__name__)

ONNX_FORMAT = "cvat-detr/onnx"
ONNX_FORMAT_VERSION = 2
DEFAULT_OPSET = 18
MIN_OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAMES = ("pred_logits", "pred_boxes")
#: Largest difference of class probabilities and normalised boxes that ``check_onnx`` accepts
#: (0.1 % of the image side is under a pixel at 800 px).
CHECK_TOLERANCE = 1e-3
#: Tracing input: batch 2 and unequal sides, because torch.export specialises a size of 1 to a
#: constant and would tie equal sizes together.
_EXAMPLE_SHAPE = (2, 3, 160, 224)
#: Smallest image side the graph is traced for: the backbone's stride (one feature-map cell).
_MIN_SIDE = 32
_INSTALL_HINT = "install them with: pip install 'cvat-detr[onnx]'"


class OnnxExportError(RuntimeError):
    """The ONNX export or its check cannot be done (missing packages, bad opset, exporter failure)."""


@dataclass(frozen=True)
class OnnxExport:
    """What ``export_onnx`` wrote: the graph, its metadata sidecar and the metadata itself."""

    path: Path
    metadata_path: Path
    opset: int
    metadata: dict


@dataclass(frozen=True)
class OnnxCheck:
    """Largest absolute differences between onnxruntime and PyTorch on one image."""

    input_shape: tuple[int, ...]
    max_diff: dict[str, float]  # "scores" (class probabilities) and "boxes" (normalised cxcywh)
    tolerance: float

    @property
    def ok(self) -> bool:
        return max(self.max_diff.values()) <= self.tolerance


def require_onnx(*, runtime: bool = False) -> None:
    """Fail early, naming the fix, when the optional ONNX packages are missing."""
    names = ["onnx", "onnxscript"] + (["onnxruntime"] if runtime else [])
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise OnnxExportError(f"ONNX export needs the package(s) {', '.join(missing)}; {_INSTALL_HINT}")


def onnx_metadata(detector: Detector) -> dict:
    """Everything a runtime needs besides the graph: labels, threshold, classifier, input size."""
    return {
        "format": ONNX_FORMAT,
        "version": ONNX_FORMAT_VERSION,
        "labels": detector.labels,
        "threshold": detector.threshold,
        "duplicate_iou": DUPLICATE_IOU,
        "classifier": detector.model.config.classifier,
        "image_size": detector.image_size,
        "max_size": detector.max_size,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "num_queries": detector.model.config.num_queries,
    }


def export_onnx(model_path: str | Path, out: str | Path, *, opset: int = DEFAULT_OPSET) -> OnnxExport:
    """Export ``model.pt`` to ``out`` (ONNX) and ``<out>.json`` (metadata); both written atomically."""
    require_onnx()
    import onnx

    if opset < MIN_OPSET or opset > onnx.defs.onnx_opset_version():
        raise OnnxExportError(
            f"opset {opset} is not supported; choose one in [{MIN_OPSET}, {onnx.defs.onnx_opset_version()}] "
            f"(default {DEFAULT_OPSET})"
        )
    out = Path(out)
    if out.is_dir():
        raise OnnxExportError(f"{out}: is a folder; pass a file name such as {out / 'model.onnx'}")
    detector = Detector.from_file(model_path, device="cpu", precision="fp32")
    metadata = onnx_metadata(detector)
    logger.info("Exporting %s to ONNX (opset %d)", model_path, opset)
    graph = _InferenceGraph(detector.model)
    dims = {
        0: torch.export.Dim("batch", min=1),
        2: torch.export.Dim("height", min=_MIN_SIDE),
        3: torch.export.Dim("width", min=_MIN_SIDE),
    }
    try:
        with _quiet_exporter_logs():
            program = torch.onnx.export(
                graph,
                (torch.zeros(_EXAMPLE_SHAPE),),
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes={"images": dims},
                opset_version=opset,
                dynamo=True,
                optimize=True,
                verbose=False,
            )
    except Exception as e:  # the exporter raises many types; all mean the graph could not be built
        raise OnnxExportError(
            f"{model_path}: ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "run with --verbose for the exporter's log"
        ) from e
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    proto.doc_string = (
        f"DETR detector for {len(detector.labels)} label(s); see metadata_props for pre- and postprocessing"
    )
    # One self-contained file: DETR's weights are far below protobuf's 2 GB limit.
    atomic_write(out, lambda f: f.write(proto.SerializeToString()))
    metadata_path = out.with_name(out.name + ".json")
    atomic_write_json(metadata, metadata_path)
    return OnnxExport(path=out, metadata_path=metadata_path, opset=opset, metadata=metadata)


def check_onnx(
    onnx_path: str | Path,
    model_path: str | Path,
    *,
    image_hw: tuple[int, int] = (480, 640),
    seed: int = 0,
    tolerance: float = CHECK_TOLERANCE,
) -> OnnxCheck:
    """Run the ONNX graph (onnxruntime, CPU) and the PyTorch model on one random image, preprocessed as
    documented, and compare class probabilities and boxes."""
    require_onnx(runtime=True)
    import onnxruntime

    detector = Detector.from_file(model_path, device="cpu", precision="fp32")
    image = np.random.default_rng(seed).integers(0, 256, (*image_hw, 3), dtype=np.uint8)
    images = detector.preprocess(image)[None]
    with torch.inference_mode():
        expected = _InferenceGraph(detector.model)(images)
    try:
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        got = [torch.from_numpy(a) for a in session.run(list(OUTPUT_NAMES), {INPUT_NAME: images.numpy()})]
    except Exception as e:  # onnxruntime raises its own types for unreadable or invalid graphs
        raise OnnxExportError(f"{onnx_path}: onnxruntime cannot run the graph ({e})") from e
    for name, e, g in zip(OUTPUT_NAMES, expected, got):
        if e.shape != g.shape:
            raise OnnxExportError(
                f"{onnx_path}: {name} has shape {tuple(g.shape)} in ONNX but {tuple(e.shape)} in {model_path}; "
                "the graph was exported from another model"
            )
    classifier = detector.model.config.classifier
    scores = class_probabilities(got[0], classifier) - class_probabilities(expected[0], classifier)
    return OnnxCheck(
        input_shape=tuple(images.shape),
        max_diff={"scores": scores.abs().max().item(), "boxes": (got[1] - expected[1]).abs().max().item()},
        tolerance=tolerance,
    )


class _InferenceGraph(nn.Module):
    """What goes into the graph: images in, the last decoder layer's logits and boxes out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(images)
        return out["pred_logits"], out["pred_boxes"]


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """The exporter's optimiser logs every pass at INFO and harmless folding skips as warnings;
    show them only when this module logs at DEBUG."""
    if logger.isEnabledFor(logging.DEBUG):
        yield
        return
    noisy = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [n.level for n in noisy]
    for n in noisy:
        n.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, level in zip(noisy, levels):
            n.setLevel(level)
