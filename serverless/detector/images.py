"""Decode the frame CVAT sends into the RGB pixels the annotator sees.

CVAT sends the original uploaded file, which may be grayscale, 16-bit, palette, RGBA,
CMYK or carry an EXIF orientation. CVAT itself shows such frames EXIF-transposed and, for
high bit depths, scaled by the frame's maximum into 8 bits (``_compress_image`` in
``cvat/apps/engine/media_extractors.py``). Boxes must be in the coordinates of that
displayed frame, so we decode the same way.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from serverless.responses import RequestError

#: Container formats accepted from callers (Pillow names). MPO is how Pillow names many camera JPEGs.
SUPPORTED_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "TIFF", "WEBP", "GIF")
_SUPPORTED_NAMES = "JPEG, PNG, BMP, TIFF, WEBP or GIF"

#: Largest frame accepted, in pixels. Decoding is done in memory (3 bytes per pixel and more for
#: 16-bit data); the model sees a resized copy anyway. Below Pillow's own bomb warning (89 Mpx).
MAX_IMAGE_PIXELS = 80_000_000

_HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def decode_image(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an encoded image file into an RGB ``uint8`` array of shape [H, W, 3].

    Raises :class:`RequestError` (400) when the bytes are not a supported image, are
    damaged, or hold more than ``max_pixels`` pixels.
    """
    if not data:
        raise RequestError("field 'image' is empty; send the base64 of an encoded frame (JPEG, PNG, ...)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as e:
        raise _too_large(None, max_pixels) from e
    except Exception as e:  # Pillow raises many types for foreign or damaged headers
        raise RequestError(
            f"field 'image' is not a readable image ({_reason(e)}); "
            f"send a {_SUPPORTED_NAMES} file encoded as base64"
        ) from e
    width, height = image.size
    if width * height > max_pixels:
        raise _too_large((width, height), max_pixels)
    if width == 0 or height == 0:
        raise RequestError(f"the image is {width}x{height} pixels; send a frame with pixels in it")
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return _to_rgb(image)
    except Exception as e:
        raise RequestError(
            f"the {image.format} image could not be decoded ({_reason(e)}); "
            "check that the file is complete and not corrupted"
        ) from e


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        pixels = np.asarray(image, dtype=np.float32)
        peak = float(pixels.max()) if pixels.size else 0.0
        if peak > 255:
            pixels = pixels * (255.0 / peak)
        gray = np.clip(pixels, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if image.mode == "P" and "transparency" in image.info:
        # Palette images with a transparent index convert through RGBA, as Pillow asks.
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def _too_large(size: tuple[int, int] | None, max_pixels: int) -> RequestError:
    limit = f"{max_pixels / 1e6:.0f} megapixels"
    if size is None:
        return RequestError(f"the image is larger than {limit}; downscale the frame before sending it")
    width, height = size
    return RequestError(
        f"the image is {width}x{height} ({width * height / 1e6:.1f} megapixels), more than the {limit} "
        "this function accepts; downscale the frame before sending it"
    )


def _reason(error: Exception) -> str:
    return str(error) or type(error).__name__
