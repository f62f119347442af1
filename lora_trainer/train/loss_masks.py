"""Masked loss: the subject is learned, the background is not (kohya's `masked_loss` / `alpha_mask`,
OneTrainer's masked training).

A mask is white where the subject is: the Dataset step's `<project>/masks/<stem>.png` (written when a
background is replaced), or the image's own alpha channel. It goes through the image's geometry (resize,
crop, flip) and is averaged down to the latent grid (8x8 pixels a cell), so it weights exactly the
latent cells the image's pixels became. Each image's latent-grid mask is made once and kept in memory.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from lora_trainer.train.buckets import Geometry

LATENT_FACTOR = 8  # the VAE's downscale


def mask_pixels(path: Path, geometry: Geometry, flip: bool) -> torch.Tensor:
    """A mask image (L, or an image's alpha with `alpha`) through the training geometry: [H, W] in 0..1."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        mask = img.getchannel("A") if img.mode in ("RGBA", "LA", "PA") else img.convert("L")
        mask = mask.copy()
    if mask.size != geometry.original_size:
        mask = mask.resize(geometry.original_size, Image.Resampling.BILINEAR)
    left, top = geometry.crop_left_top
    mask = mask.resize(geometry.resized_size, Image.Resampling.BILINEAR)
    mask = mask.crop((left, top, left + geometry.bucket[0], top + geometry.bucket[1]))
    if flip:
        mask = ImageOps.mirror(mask)
    return torch.frombuffer(bytearray(mask.tobytes()), dtype=torch.uint8).float().view(
        mask.height, mask.width) / 255.0


def latent_mask(pixels: torch.Tensor) -> torch.Tensor:
    """[H, W] -> [1, H/8, W/8]: each latent cell's share of subject."""
    return F.avg_pool2d(pixels[None, None], LATENT_FACTOR)[0]


class LossMasks:
    """Per image (and flip), the latent-grid weights: `background` where the mask is 0, 1 where it is
    1, in between for soft edges. Images without a mask weigh 1 everywhere (listed in `missing`)."""

    def __init__(self, masks_dir: Path | None, alpha: bool, background: float = 0.0):
        self.masks_dir, self.alpha, self.background = masks_dir, alpha, background
        self._cache: dict[tuple[Path, bool], torch.Tensor] = {}
        self.missing: list[Path] = []

    def source(self, image: Path) -> Path | None:
        if self.alpha:
            with Image.open(image) as img:
                has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
            return image if has_alpha else None
        candidate = self.masks_dir / f"{image.stem}.png" if self.masks_dir else None
        return candidate if candidate is not None and candidate.is_file() else None

    def weights(self, image: Path, geometry: Geometry, flip: bool) -> torch.Tensor:
        key = (Path(image), flip)
        if key not in self._cache:
            source = self.source(Path(image))
            h, w = geometry.bucket[1] // LATENT_FACTOR, geometry.bucket[0] // LATENT_FACTOR
            if source is None:
                self.missing.append(Path(image))
                self._cache[key] = torch.ones(1, h, w)
            else:
                subject = latent_mask(mask_pixels(source, geometry, flip))
                self._cache[key] = self.background + (1 - self.background) * subject
        return self._cache[key]


def masked_mean(loss: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Per sample, the loss [B, C, h, w] averaged with `weights` [B, 1, h, w] (the subject's cells
    count, the background's by its weight), normalised by the weights' sum so a small subject trains
    as strongly as a large one; plain mean without weights."""
    if weights is None:
        return loss.mean(dim=(1, 2, 3))
    weights = weights.to(loss.device, loss.dtype).expand_as(loss)
    return (loss * weights).sum(dim=(1, 2, 3)) / weights.sum(dim=(1, 2, 3)).clamp(min=1e-6)
