"""The batch edits the guide does with ImageMagick: sharpen, brightness, contrast, saturation, auto-level.

`apply_edits` returns a new image and writes nothing, so the UI can show it as a preview;
`edit_files` applies the same edits to a selection and writes the results (never over the inputs).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from ..fsutil import atomic_path, png_beside
from .loading import ImageProblem, decode


@dataclass(frozen=True)
class Edits:
    """Factors are Pillow's ImageEnhance factors: 1.0 leaves the image as it is, 0.5 halves, 1.5 adds half.

    sharpen: unsharp-mask strength in percent (0 = off; 50-150 is typical), radius 2 px, threshold 3.
    autolevel: stretch each channel so its darkest/brightest `autolevel_cutoff` percent become 0/255.
    """

    sharpen: float = 0.0
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    autolevel: bool = False
    autolevel_cutoff: float = 0.5

    def __post_init__(self):
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            if not 0.0 <= value <= 4.0:
                raise ValueError(f"{name} factor must be between 0 and 4 (1 = unchanged), got {value}")
        if not 0.0 <= self.sharpen <= 500.0:
            raise ValueError(f"sharpen must be between 0 and 500 (percent), got {self.sharpen}")
        if not 0.0 <= self.autolevel_cutoff < 50.0:
            raise ValueError(f"autolevel_cutoff must be between 0 and 50 (percent), got {self.autolevel_cutoff}")

    @property
    def is_identity(self) -> bool:
        return self == Edits(autolevel_cutoff=self.autolevel_cutoff)

    def to_dict(self) -> dict:
        return asdict(self)


def apply_edits(im: Image.Image, edits: Edits) -> Image.Image:
    """The edited image (RGB), in the order auto-level, brightness, contrast, saturation, sharpen."""
    out = im.convert("RGB")
    if edits.autolevel:
        out = ImageOps.autocontrast(out, cutoff=edits.autolevel_cutoff, preserve_tone=False)
    if edits.brightness != 1.0:
        out = ImageEnhance.Brightness(out).enhance(edits.brightness)
    if edits.contrast != 1.0:
        out = ImageEnhance.Contrast(out).enhance(edits.contrast)
    if edits.saturation != 1.0:
        out = ImageEnhance.Color(out).enhance(edits.saturation)
    if edits.sharpen > 0:
        out = out.filter(ImageFilter.UnsharpMask(radius=2, percent=int(edits.sharpen), threshold=3))
    return out


def edit_files(paths: list[Path], edits: Edits, out_dir: Path, *,
               progress: Callable[[int, int, str], None] | None = None,
               stop: threading.Event | None = None) -> list[Path]:
    """Apply `edits` to each image and write `<out_dir>/<stem>.png` (atomic); inputs stay untouched.
    `progress(done, total, path)` after each image; `stop` (set from another thread) ends the batch
    between images, with the files written so far."""
    out_dir = Path(out_dir)
    written = []
    for path in paths:
        if stop is not None and stop.is_set():
            break
        path = Path(path)
        target = png_beside(path, out_dir)
        try:
            result = apply_edits(decode(path).image, edits)
        except ImageProblem as e:
            raise ImageProblem(f"{path}: {e.reason}") from None
        with atomic_path(target) as tmp:
            result.save(tmp, format="PNG")
        written.append(target)
        if progress:
            progress(len(written), len(paths), str(path))
    return written
