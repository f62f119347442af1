"""Crop boxes, fit inside a size, pad to an exact size, or keep the aspect for bucket training.

Boxes are (left, top, right, bottom) in pixels of the upright image, right/bottom exclusive.
Nothing here upscales unless `upscale=True`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]


def clamp_box(box: Box, size: tuple[int, int]) -> Box:
    """`box` limited to the image; raises ValueError when nothing of it is inside."""
    left, top, right, bottom = (int(round(v)) for v in box)
    w, h = size
    left, top = max(0, left), max(0, top)
    right, bottom = min(w, right), min(h, bottom)
    if right <= left or bottom <= top:
        raise ValueError(f"crop box {box} lies outside the {w}x{h} image")
    return left, top, right, bottom


def expand_box(box: Box, margin: float, size: tuple[int, int], square: bool = False) -> Box:
    """Grow `box` by `margin` (a fraction of its larger side) on every side, optionally into a square
    centred on it, shifted (not shrunk) to stay inside the image where it fits."""
    left, top, right, bottom = box
    w, h = right - left, bottom - top
    pad = margin * max(w, h)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    half_w, half_h = w / 2 + pad, h / 2 + pad
    if square:
        half_w = half_h = min(max(half_w, half_h), min(size) / 2)
    half_w, half_h = min(half_w, size[0] / 2), min(half_h, size[1] / 2)
    cx = min(max(cx, half_w), size[0] - half_w)
    cy = min(max(cy, half_h), size[1] - half_h)
    return clamp_box((cx - half_w, cy - half_h, cx + half_w, cy + half_h), size)


def subject_box(mask: Image.Image, threshold: int = 128, margin: float = 0.05) -> Box | None:
    """The bounding box of the foreground in a background-removal mask (L, white = subject), with a
    small margin; None when the mask is empty."""
    a = np.asarray(mask.convert("L")) >= threshold
    if not a.any():
        return None
    rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    return expand_box(box, margin, mask.size)


def fit_size(size: tuple[int, int], max_size: tuple[int, int], upscale: bool = False) -> tuple[int, int]:
    """The largest size with `size`'s aspect that fits inside `max_size` (never larger than `size`
    unless `upscale`)."""
    w, h = size
    scale = min(max_size[0] / w, max_size[1] / h)
    if scale >= 1 and not upscale:
        return w, h
    return max(1, round(w * scale)), max(1, round(h * scale))


def fit(im: Image.Image, max_size: tuple[int, int], upscale: bool = False) -> Image.Image:
    """Resize to fit inside `max_size`, keeping the aspect (Lanczos, with Pillow's reducing_gap for
    speed on large images)."""
    target = fit_size(im.size, max_size, upscale)
    if target == im.size:
        return im
    return im.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)


def pad(im: Image.Image, size: tuple[int, int], fill: tuple[int, int, int] = (128, 128, 128)) -> Image.Image:
    """Extend the canvas to exactly `size`, the image centred (ImageMagick's -gravity center -extent)."""
    if im.size == tuple(size):
        return im
    if im.width > size[0] or im.height > size[1]:
        raise ValueError(f"a {im.width}x{im.height} image does not fit a {size[0]}x{size[1]} canvas")
    canvas = Image.new("RGB", tuple(size), tuple(fill))
    canvas.paste(im, ((size[0] - im.width) // 2, (size[1] - im.height) // 2))
    return canvas


def frame(im: Image.Image, *, size: int = 1024, mode: str = "pad", fill: tuple[int, int, int] = (128, 128, 128),
          box: Box | None = None, upscale: bool = False) -> Image.Image:
    """Crop to `box` (if any), then either fit + pad to exactly size x size (`mode="pad"`), or fit inside
    size x size keeping the aspect for bucket training (`mode="bucket"`)."""
    if mode not in ("pad", "bucket"):
        raise ValueError(f"framing mode must be 'pad' or 'bucket', got {mode!r}")
    if box is not None:
        im = im.crop(clamp_box(box, im.size))
    im = fit(im, (size, size), upscale)
    return pad(im, (size, size), fill) if mode == "pad" else im
