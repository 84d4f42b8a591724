"""The official DETR checkpoints (facebookresearch/detr model zoo) as model files.

Their class head has 92 outputs: COCO category ids 1-90 (with gaps), slot 0 and the unused
ids never trained, and no-object last (detr#108, #164). ``COCO_CATEGORY_NAMES[i]`` names
COCO id i; empty names mark the unused slots, which ``Detector`` never reports.
"""

from __future__ import annotations

import json
from pathlib import Path

from .checkpoint import MODEL_FORMAT, CheckpointError, fetch_weights, load_detr_weights, safe_load, save_model_file
from .model import build_model

# fmt: off
COCO_CATEGORY_NAMES = [
    "", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "", "backpack", "umbrella", "", "", "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", "", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana",
    "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "", "dining table", "", "", "toilet", "", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]
# fmt: on
#: The 80 COCO labels in id order, as CVAT's own COCO functions list them.
COCO_LABELS = [name for name in COCO_CATEGORY_NAMES if name]
#: Box AP / AP50 on COCO val2017 of the zoo models (README of facebookresearch/detr).
ZOO_METRICS = {
    ("resnet50", False): {"AP": 0.420, "AP50": 0.624},
    ("resnet50", True): {"AP": 0.433, "AP50": 0.631},
    ("resnet101", False): {"AP": 0.435, "AP50": 0.638},
    ("resnet101", True): {"AP": 0.449, "AP50": 0.647},
}
#: Score threshold for the zoo models (the one DETR's own demo notebook uses).
ZOO_THRESHOLD = 0.7


def import_checkpoint(
    source: str,
    out: str | Path,
    *,
    labels: str = "coco",
    dilation: bool = False,
    threshold: float = ZOO_THRESHOLD,
    image_size: int = 800,
    max_size: int = 1333,
) -> Path:
    """Write a model file for an official checkpoint (file or URL). ``labels`` is ``coco`` or a
    JSON file with one name per class slot. The backbone depth is read from the weights;
    ``dilation`` (DC5) cannot be, so pass it for the DC5 checkpoints."""
    path = fetch_weights(source)
    data = safe_load(path, "DETR checkpoint")
    if isinstance(data, dict) and data.get("format") == MODEL_FORMAT:
        architecture = data.get("model_config", {}).get("architecture", "detr")
        raise CheckpointError(
            f"{path}: already a cvat-detr model file (architecture {architecture!r}); serve, evaluate or "
            "fine-tune it as it is, no import needed"
        )
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or "class_embed.weight" not in state:
        raise CheckpointError(f"{path}: not a DETR checkpoint (no 'model' weights with a class head)")
    slots = state["class_embed.weight"].shape[0] - 1
    names = COCO_CATEGORY_NAMES if labels == "coco" else _read_names(Path(labels))
    if len(names) != slots:
        raise CheckpointError(
            f"{path}: the class head has {slots} slots but {len(names)} label names were given; "
            "pass a labels file with one name per slot (empty for unused slots)"
        )
    backbone = "resnet101" if "backbone.0.body.layer3.22.conv1.weight" in state else "resnet50"
    model = build_model(slots, backbone=backbone, dilation=dilation, num_queries=state["query_embed.weight"].shape[0])
    load_detr_weights(model, str(path))
    metrics = {**ZOO_METRICS.get((backbone, dilation), {}), "source": "DETR model zoo, COCO val2017"}
    if labels != "coco":
        metrics = {}
    save_model_file(
        out, model.eval(), labels=names, threshold=threshold, metrics=metrics, image_size=image_size, max_size=max_size
    )
    return Path(out)


def _read_names(path: Path) -> list[str]:
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read the labels file ({e}); give a JSON list of names") from e
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{path}: expected a JSON list of label names (empty strings for unused slots)")
    return names
