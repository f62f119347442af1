"""An image as WD14 taggers expect it (SmilingWolf's reference preprocessing).

RGB with any transparency composited on white, padded to a square with white (image centred), resized
to the model's input side with bicubic resampling, as float32 0-255 in BGR channel order, laid out
height x width x channel; a batch stacks these into NHWC.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps

WHITE = (255, 255, 255)


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file, upright (EXIF orientation applied), fully read so the file is closed."""
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def to_rgb_on_white(image: Image.Image) -> Image.Image:
    """RGB; transparent and half-transparent pixels are composited onto white."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def pad_square(image: Image.Image) -> Image.Image:
    """Pad an RGB image with white to a square, the image centred (extra pixel right/bottom)."""
    width, height = image.size
    side = max(width, height)
    if width == height:
        return image
    canvas = Image.new("RGB", (side, side), WHITE)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def prepare_image(image: Image.Image, size: int) -> np.ndarray:
    """One image as a (size, size, 3) float32 BGR 0-255 array."""
    square = pad_square(to_rgb_on_white(image))
    if square.size != (size, size):
        square = square.resize((size, size), Image.Resampling.BICUBIC)
    rgb = np.asarray(square, dtype=np.float32)
    return np.ascontiguousarray(rgb[:, :, ::-1])
