"""Decode the frame CVAT sends into the pixels, and the orientation, the annotator sees.

CVAT sends the original uploaded file. Pixel conversion (grayscale, 16-bit, palette,
RGBA, CMYK, EXIF orientation) is the engine's ``detr.images.decode_bytes``, the same one
training used, so the model sees served frames exactly as it saw training frames. On top
of it this module bounds the work one request can cause.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image
from torch import Tensor

from cvat_plugin.responses import RequestError
from detr.images import decode_bytes

#: Container formats accepted from callers (Pillow plugin names; JPEG includes multi-picture camera files).
SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF")
_SUPPORTED_NAMES = "JPEG, PNG, BMP, TIFF, WEBP or GIF"

#: Largest frame accepted, in pixels: decoding happens in memory (3 bytes per pixel, more for
#: 16-bit data) while the model sees a resized copy anyway. Below Pillow's bomb warning (89 Mpx).
MAX_IMAGE_PIXELS = 80_000_000


def decode_image(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Tensor:
    """Decode an encoded image file into an upright RGB ``uint8`` tensor [3, H, W].

    Raises :class:`RequestError` (400) when the bytes are not a supported image, are
    damaged, or hold more than ``max_pixels`` pixels.
    """
    if not data:
        raise RequestError("field 'image' is empty; send the base64 of an encoded frame (JPEG, PNG, ...)")
    width, height = _probe(data)
    if width * height > max_pixels:
        raise RequestError(
            f"the image is {width}x{height} ({width * height / 1e6:.1f} megapixels), more than the "
            f"{max_pixels / 1e6:.0f} megapixels this function accepts; downscale the frame before sending it"
        )
    try:
        pixels = decode_bytes(data)
    except Exception as e:  # any failure to decode untrusted bytes is the caller's bad input
        raise RequestError(
            f"the image could not be decoded ({e}); check that the file is complete and not corrupted"
        ) from e
    return pixels


def _probe(data: bytes) -> tuple[int, int]:
    """Width and height from the header alone (no pixel decoding)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS) as image:
                width, height = image.size
    except Image.DecompressionBombError as e:
        raise RequestError(f"the image is too large ({e}); downscale the frame before sending it") from e
    except Image.UnidentifiedImageError as e:  # its message names an in-memory object, useless to the caller
        raise RequestError(
            f"field 'image' is not an image in a known format (it starts with {data[:8]!r}); "
            f"send a {_SUPPORTED_NAMES} file encoded as base64"
        ) from e
    except Exception as e:  # Pillow raises many types for foreign or damaged headers
        raise RequestError(
            f"field 'image' is not a readable image ({str(e) or type(e).__name__}); "
            f"send a {_SUPPORTED_NAMES} file encoded as base64"
        ) from e
    if width == 0 or height == 0:
        raise RequestError(f"the image is {width}x{height} pixels; send a frame with pixels in it")
    return width, height
