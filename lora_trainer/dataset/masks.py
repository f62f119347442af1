"""Correcting a background mask by hand (the guide: "Rembg isn't perfect, and requires some post-editing
with GIMP and the original image").

The mask is white where the subject is. Strokes are painted on a transparent layer over the photo:
white strokes add to the subject, black strokes remove from it, and a stroke's own transparency (a
soft brush edge) blends it in. The corrected mask then puts the photo over a plain fill colour again.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

OVERLAY_TINT = (255, 0, 64)  # what the editor paints over the background, so the mask's edge shows


def apply_strokes(mask: Image.Image, layer: Image.Image | None) -> Image.Image:
    """`mask` (L) with the strokes of `layer` (RGBA, resized to the mask when its size differs): where a
    stroke is, the mask moves toward 255 (a light stroke) or 0 (a dark one) by the stroke's alpha."""
    mask = mask.convert("L")
    if layer is None:
        return mask
    layer = layer.convert("RGBA")
    if layer.size != mask.size:
        layer = layer.resize(mask.size, Image.Resampling.BILINEAR)
    rgba = np.asarray(layer, dtype=np.float32)
    alpha = rgba[..., 3] / 255.0
    light = rgba[..., :3].mean(axis=-1) >= 128
    target = np.where(light, 255.0, 0.0)
    old = np.asarray(mask, dtype=np.float32)
    return Image.fromarray(np.round(old * (1 - alpha) + target * alpha).astype(np.uint8), "L")


def has_strokes(layer: Image.Image | None) -> bool:
    return layer is not None and layer.convert("RGBA").getextrema()[3][1] > 0


def fill_colour(image: Image.Image, mask: Image.Image) -> tuple[int, int, int] | None:
    """The colour the background was filled with: the median of the image where the mask is 0 (the
    composite put the fill there exactly); None when the mask has no background."""
    pixels = np.asarray(image.convert("RGB"))[np.asarray(mask.convert("L")) == 0]
    if not len(pixels):
        return None
    return tuple(int(v) for v in np.median(pixels, axis=0))


def composite(photo: Image.Image, mask: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    """The photo where the mask is white, `colour` where it is black, blended between."""
    if photo.size != mask.size:
        raise ValueError(f"the mask is {mask.width}x{mask.height} and the image {photo.width}x{photo.height}")
    return Image.composite(photo.convert("RGB"), Image.new("RGB", photo.size, tuple(colour)), mask.convert("L"))


def overlay(photo: Image.Image, mask: Image.Image, strength: float = 0.55) -> Image.Image:
    """The photo with the background (mask black) tinted, for painting corrections on."""
    tint = Image.new("RGB", photo.size, OVERLAY_TINT)
    tinted = Image.blend(photo.convert("RGB"), tint, strength)
    return Image.composite(photo.convert("RGB"), tinted, mask.convert("L").resize(photo.size))
