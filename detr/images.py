"""Reading and normalising images from files, bytes, PIL images, arrays and tensors.

Everything becomes an RGB ``uint8`` tensor [3, H, W]: grayscale, palette, RGBA (composited
on white, as a viewer shows it), 16-bit and float images included. Decoding goes through
Pillow (libjpeg-turbo, libpng, libtiff, libwebp).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

ImageLike = Union[Image.Image, np.ndarray, Tensor]

#: Refuse decompression bombs well above any camera frame (PIL warns from 89 MP by default).
MAX_PIXELS = 200_000_000


class ImageError(ValueError):
    """An image cannot be read or converted."""


def read_image(path: str | Path) -> Tensor:
    """Decode an image file into RGB uint8 [3, H, W]."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(
            f"{path}: cannot read the file ({e.strerror or e}); check that it exists and is readable"
        ) from e
    try:
        return decode_bytes(data)
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from e


def decode_bytes(data: bytes) -> Tensor:
    """Decode encoded image bytes (JPEG, PNG, WEBP, GIF, BMP, TIFF, ...) into RGB uint8 [3, H, W]."""
    if not data:
        raise ImageError("the image is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise ImageError(f"the image is too large ({img.width}x{img.height} pixels, limit {MAX_PIXELS})")
            img.load()
            return to_rgb_tensor(img)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageError(f"cannot decode the image ({e}); it is corrupt, truncated or not an image") from e


def to_rgb_tensor(image: ImageLike) -> Tensor:
    """PIL image, HWC/HW numpy array or CHW/HW tensor -> RGB uint8 [3, H, W]."""
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.ndarray):
        if image.ndim == 3 and image.shape[-1] in (1, 3, 4):
            image = np.ascontiguousarray(image.transpose(2, 0, 1))
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, Tensor):
        raise ImageError(f"unsupported image type {type(image).__name__}; pass a PIL image, numpy array or tensor")
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
        raise ImageError(f"unsupported image shape {tuple(image.shape)}; expected [H, W], [H, W, C] or [C, H, W]")
    image = _to_uint8(image)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    elif image.shape[0] == 4:
        image = _composite_on_white(image)
    return image.contiguous()


def _from_pil(img: Image.Image) -> Tensor:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if img.mode != "I" or arr.max() > 255 else 255.0
        return to_rgb_tensor(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode == "F":
        return to_rgb_tensor(np.asarray(img, dtype=np.float32))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return to_rgb_tensor(np.asarray(img.convert("RGBA")))
    return to_rgb_tensor(np.asarray(img.convert("RGB")))


def _to_uint8(image: Tensor) -> Tensor:
    if image.dtype == torch.uint8:
        return image
    if image.is_floating_point():
        # floats are taken as [0, 1] when they fit there, else as [0, 255]
        scale = 255.0 if image.numel() == 0 or float(image.max()) <= 1.0 else 1.0
        return (image.float() * scale).round().clamp(0, 255).to(torch.uint8)
    if image.dtype in (torch.int32, torch.int64, torch.uint16, torch.int16):
        top = 65535.0 if float(image.max()) > 255 else 255.0
        return (image.float() / top * 255.0).round().clamp(0, 255).to(torch.uint8)
    return image.to(torch.uint8)


def _composite_on_white(rgba: Tensor) -> Tensor:
    alpha = rgba[3:4].float() / 255.0
    rgb = rgba[:3].float() * alpha + 255.0 * (1.0 - alpha)
    return rgb.round().to(torch.uint8)
