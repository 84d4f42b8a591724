"""Latency of the CVAT detector function per 1280x720 JPEG frame, split into its stages.

    python bench/detector_latency.py [--model model.pt] [--runs 20] [--device cpu]

Stages, as the handler runs them for one request:
  decode       base64 + header probe + JPEG decode + EXIF orientation (``parse_request``)
  preprocess   ``Detector.preprocess``: to the device, resize to the serving size, normalise
  model        the DETR forward pass
  postprocess  scores and boxes in frame pixels, threshold, CVAT shapes, JSON body
and "handler", the whole ``serverless.detector.main.handler`` call, as a cross-check of the sum.
Without ``--model`` a randomly initialised DETR-R50 (91 classes, the official architecture)
at the default serving size (short side 800, long side at most 1333) is timed: the
compute is that of the official checkpoint; only the detections differ.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import nuclio_sdk
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import sync  # noqa: E402
from detr import Detector, build_model  # noqa: E402
from detr.precision import autocast, prepare_images  # noqa: E402
from serverless.detector import main  # noqa: E402
from serverless.detector.request import parse_request, to_cvat_shapes  # noqa: E402

STAGES = ("decode", "preprocess", "model", "postprocess")


def frame_jpeg(width: int, height: int, seed: int = 0) -> bytes:
    """A photo-like frame: smooth background, textured objects, sensor noise; JPEG quality 90."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    background = np.stack([x / width * 180 + 40, y / height * 150 + 60, (x + y) / (width + height) * 200 + 30], -1)
    image = Image.fromarray(background.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(25):
        x0, y0 = rng.integers(0, width - 80), rng.integers(0, height - 80)
        x1, y1 = x0 + rng.integers(30, 300), y0 + rng.integers(30, 200)
        draw.rectangle([x0, y0, x1, y1], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    image = image.filter(ImageFilter.GaussianBlur(1.5))
    noisy = np.asarray(image, dtype=np.int16) + rng.normal(0, 6, (height, width, 3)).astype(np.int16)
    buffer = io.BytesIO()
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def random_r50(device: str, precision: str) -> Detector:
    torch.manual_seed(0)
    labels = [f"class-{i}" for i in range(91)]
    return Detector(build_model(91, train_backbone=False), labels, threshold=0.5, device=device, precision=precision)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - started, result


@torch.inference_mode()
def run_once(detector: Detector, body: dict) -> dict[str, float]:
    """One request, stage by stage, the way ``Detector.predict`` runs a single frame."""
    times: dict[str, float] = {}
    device = detector.device
    times["decode"], request = timed(lambda: parse_request(body), device)
    times["preprocess"], tensor = timed(lambda: detector.preprocess(request.image), device)
    batch = prepare_images(tensor[None], detector.precision)
    with autocast(device, detector.precision):
        times["model"], outputs = timed(lambda: detector.model(batch, None), device)

    def finish() -> str:
        [det] = detector.postprocess(outputs, [tuple(request.image.shape[-2:])], detector.threshold)
        return json.dumps(to_cvat_shapes(det.boxes, det.scores, det.label_names))

    times["postprocess"], _ = timed(finish, device)
    return times


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main_(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model.pt to serve. Default: a random DETR-R50 (official architecture).")
    parser.add_argument("--device", default="cpu", help="cpu or cuda. Default: cpu.")
    parser.add_argument("--runs", type=int, default=20, help="timed requests. Default: 20.")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests first. Default: 3.")
    parser.add_argument("--size", default="1280x720", help="frame WIDTHxHEIGHT. Default: 1280x720.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads. Default: torch's choice.")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="auto: bf16 where the hardware runs it natively. Default: auto.")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    detector = (
        Detector.from_file(args.model, device=args.device, precision=args.precision)
        if args.model
        else random_r50(args.device, args.precision)
    )
    jpeg = frame_jpeg(width, height)
    body = {"image": base64.b64encode(jpeg).decode("ascii")}

    context = nuclio_sdk.Context(nuclio_sdk.Logger(logging.WARNING))
    context.user_data.detector = detector
    event = nuclio_sdk.Event(body=body, content_type="application/json", method="POST", path="/")
    for _ in range(args.warmup):
        run_once(detector, body)
        main.handler(context, event)
    samples = {stage: [] for stage in (*STAGES, "total", "handler")}
    for _ in range(args.runs):
        times = run_once(detector, body)
        for stage in STAGES:
            samples[stage].append(times[stage])
        samples["total"].append(sum(times.values()))
        samples["handler"].append(timed(lambda: main.handler(context, event), detector.device)[0])

    total_p50 = percentile(samples["total"], 50)
    print(f"DETR detector latency: {width}x{height} JPEG ({len(jpeg) / 1024:.0f} KiB), device {detector.device}, "
          f"{torch.get_num_threads()} threads, {detector.precision}, "
          f"serving size {detector.image_size}/{detector.max_size}, {args.runs} runs")
    print(f"{'stage':<12}{'p50 ms':>10}{'p95 ms':>10}{'share of p50':>14}")
    report = {}
    for stage, values in samples.items():
        p50, p95 = percentile(values, 50) * 1000, percentile(values, 95) * 1000
        share = f"{p50 / 1000 / total_p50:.1%}" if stage in STAGES else ""
        print(f"{stage:<12}{p50:>10.1f}{p95:>10.1f}{share:>14}")
        report[stage] = {"p50_ms": round(p50, 2), "p95_ms": round(p95, 2), "mean_ms": round(
            statistics.fmean(values) * 1000, 2)}
    non_model = 1 - percentile(samples["model"], 50) / total_p50
    print(f"non-model share of p50: {non_model:.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps({"size": [width, height], "device": str(detector.device),
                                               "threads": torch.get_num_threads(), "stages": report,
                                               "non_model_share": round(non_model, 4)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main_())
