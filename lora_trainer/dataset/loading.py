"""Decode one image file into 8-bit RGB, whatever it was: EXIF orientation applied, CMYK / palette /
16-bit / grey converted, alpha composited on a chosen colour, ICC profile converted to sRGB.

A file that cannot be used raises `ImageProblem` with a one-line reason for the report.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

try:  # HEIC/AVIF where the optional plug-in is installed (it must keep Forge's Pillow pin)
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - depends on the environment
    pillow_heif = None

NEUTRAL_GREY = (128, 128, 128)
# Pillow's own decompression-bomb limit (about 89 MP); a stated, adjustable limit of ours.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
_SRGB = ImageCms.createProfile("sRGB")

# ISO-BMFF brands that Pillow 9.5 cannot read without a plug-in.
_HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"heim": "HEIC", b"heis": "HEIC",
                b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}


class ImageProblem(Exception):
    """A file that cannot become a training image; `reason` is the line for the report."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Decoded:
    image: Image.Image            # 8-bit RGB, upright
    format: str                   # e.g. "JPEG", "PNG"
    original_size: tuple[int, int]  # upright (after EXIF orientation), before any draft reduction
    notes: list[str] = field(default_factory=list)  # what was converted, for the report


def sniff_unsupported(head: bytes) -> str | None:
    """Name the format of a file Pillow cannot open here, when it is a known one."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return _HEIF_BRANDS.get(head[8:12])
    if head[:4] == b"\x00\x00\x00\x0cJXL" or head[:2] == b"\xff\x0a":
        return "JPEG XL"
    return None


def decode(data: bytes | str | os.PathLike, *, alpha_fill: tuple[int, int, int] = NEUTRAL_GREY,
           max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: tuple[int, int] | None = None) -> Decoded:
    """Decode `data` (bytes or a path) into an upright 8-bit RGB image.

    `draft_size` lets JPEG decode at a reduced scale (1/2, 1/4, 1/8) that still covers that size
    (after EXIF rotation): much faster for large photos that will be shrunk anyway.
    """
    if isinstance(data, (str, os.PathLike)):
        data = Path(data).read_bytes()
    if len(data) == 0:
        raise ImageProblem("zero bytes: the file is empty")
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageProblem(f"decompression bomb: {e}") from None
    except UnidentifiedImageError:
        fmt = sniff_unsupported(data[:32])
        if fmt:
            raise ImageProblem(f"unsupported format {fmt}: Pillow here cannot read it "
                               "(install pillow-heif, or convert the file to JPEG/PNG)") from None
        raise ImageProblem("not an image: no image format recognised the content") from None
    except OSError as e:
        raise ImageProblem(f"unreadable: {e}") from None

    width, height = im.size
    if width * height > max_pixels:
        raise ImageProblem(f"decompression bomb: {width} x {height} = {width * height / 1e6:.0f} MP "
                           f"is over the limit of {max_pixels / 1e6:.0f} MP")
    notes = []
    fmt = im.format or "unknown"
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        notes.append(f"{frames} frames: the first is used")
    orientation = im.getexif().get(0x0112, 1)
    rotated = orientation in (5, 6, 7, 8)
    upright_size = (height, width) if rotated else (width, height)
    if draft_size and fmt == "JPEG":
        want = (draft_size[1], draft_size[0]) if rotated else draft_size
        im.draft(im.mode if im.mode in ("RGB", "L", "CMYK") else None, want)
    try:
        im.load()
    except Image.DecompressionBombError as e:
        raise ImageProblem(f"decompression bomb: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        text = str(e)
        if "truncated" in text or "broken data stream" in text or "premature end" in text.lower():
            raise ImageProblem(f"truncated: {text}") from None
        raise ImageProblem(f"unreadable: {text or type(e).__name__}") from None
    if orientation != 1:
        im = ImageOps.exif_transpose(im)
        notes.append(f"EXIF orientation {orientation} applied")
    image = to_rgb(im, alpha_fill, notes)
    return Decoded(image=image, format=fmt, original_size=upright_size, notes=notes)


def to_rgb(im: Image.Image, alpha_fill: tuple[int, int, int] = NEUTRAL_GREY,
           notes: list[str] | None = None) -> Image.Image:
    """Any Pillow image -> 8-bit RGB (sRGB where an ICC profile says otherwise)."""
    notes = notes if notes is not None else []
    icc = im.info.get("icc_profile")
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        im, bits = _high_bit_depth_to_l(im)
        notes.append(f"{bits} grey ({mode}) reduced to 8-bit")
    elif mode == "P":
        has_alpha = "transparency" in im.info or (im.palette and im.palette.mode == "RGBA")
        im = im.convert("RGBA" if has_alpha else "RGB")
    elif mode in ("PA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    if mode != "RGB" and not mode.startswith("I") and mode != "F":
        notes.append(f"{mode} converted to RGB")

    alpha = None
    if im.mode == "RGBA":
        alpha = im.getchannel("A")
        im = im.convert("RGB")
    if icc and im.mode in ("RGB", "L", "CMYK"):
        im = _icc_to_srgb(im, icc, notes)
    if im.mode != "RGB":
        im = im.convert("RGB")
    if alpha is not None and alpha.getextrema()[0] < 255:
        background = Image.new("RGB", im.size, tuple(alpha_fill))
        background.paste(im, mask=alpha)
        im = background
        notes.append(f"transparency composited on {tuple(alpha_fill)}")
    return im


def _high_bit_depth_to_l(im: Image.Image) -> tuple[Image.Image, str]:
    """16-bit (PNG/TIFF grey opens as I;16 or I) or float grey -> 8-bit L, and what it was."""
    a = np.asarray(im).astype(np.float64)
    top = float(a.max()) if a.size else 0.0
    if im.mode == "F":
        bits = "float"
        a = a * 255.0 if top <= 1.0 else a
    elif im.mode == "I" and top > 65535:
        bits = "32-bit"
        a = a / 16843009.0  # 0..2**32-1 -> 0..255
    else:
        bits = "16-bit"
        a = a / 257.0  # 0..65535 -> 0..255
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L"), bits


def _icc_to_srgb(im: Image.Image, icc: bytes, notes: list[str]) -> Image.Image:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        desc = (ImageCms.getProfileDescription(source) or "").strip()
        if "srgb" in desc.lower() and im.mode == "RGB":
            return im
        out = ImageCms.profileToProfile(im, source, _SRGB, outputMode="RGB")
        notes.append(f"ICC profile {desc or '(unnamed)'} converted to sRGB")
        return out
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as e:
        notes.append(f"ICC profile ignored (cannot be applied: {e})")
        return im
