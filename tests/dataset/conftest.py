"""An odd-case corpus of input files, built fresh for the dataset tests, and small synthetic photos."""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A sharp, colourful synthetic photo: a gradient, random shapes and fine noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 160 / width + 48, y * 160 / height + 48, (x + y) * 80 / (width + height) + 88], -1)
    im = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(10, max(11, width // 6)))
        colour = tuple(int(128 + (c - 128) * 0.6) for c in rng.integers(0, 256, 3))
        draw.rectangle((x0 - r, y0 - r, x0 + r, y0 + r // 2), fill=colour) if rng.random() < 0.5 else \
            draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=colour)
    noise = rng.integers(-20, 21, (height, width, 1))
    return Image.fromarray(np.clip(np.asarray(im).astype(int) + noise, 0, 255).astype(np.uint8))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png_header(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG signature and header announcing an enormous image (with a token of data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hash_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha(p) for p in sorted(folder.rglob("*")) if p.is_file()}


# file name -> the words its report line must contain (None: it must come out as a training image)
EXPECTED = {
    "exif_rotated.jpg": None,
    "cmyk.jpg": None,
    "gray16.png": None,
    "rgb16.png": None,
    "palette_alpha.png": None,
    "animated.gif": None,
    "grey.tif": None,
    "photo.webp": None,
    "photo.bmp": None,
    "bad_icc.jpg": None,
    "zipped.zip:inner/zip_photo.jpg": None,
    "zipped.zip:../evil name.jpg": None,
    "truncated.jpg": "truncated",
    "empty.png": "zero bytes",
    "notes.png": "not an image",
    "huge.png": "decompression bomb",
    "phone.heic": "unsupported format HEIC",
    "copy_of_cmyk.jpg": "a duplicate of",
}


@pytest.fixture
def corpus(tmp_path) -> Path:
    """Every odd input the issue lists, in one folder (plus a zip and a caption)."""
    d = tmp_path / "corpus"
    d.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    photo(1600, 1200, 1).save(d / "exif_rotated.jpg", quality=90, exif=exif.tobytes())
    (d / "exif_rotated.txt").write_text("myLoRA, standing, outdoors", encoding="utf-8")
    photo(1200, 1200, 2).convert("CMYK").save(d / "cmyk.jpg", quality=90)
    (d / "copy_of_cmyk.jpg").write_bytes((d / "cmyk.jpg").read_bytes())
    ramp = (np.linspace(0, 65535, 1100, dtype=np.float64)[None, :] * np.ones((900, 1))).astype(np.uint16)
    Image.fromarray(ramp).save(d / "gray16.png")
    assert Image.open(d / "gray16.png").mode.startswith("I")
    rgb16 = (np.asarray(photo(1000, 1300, 3)).astype(np.uint16) * 257)[..., ::-1]
    cv2.imwrite(str(d / "rgb16.png"), rgb16)
    pal = photo(1100, 1100, 4).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    pal.info["transparency"] = 0
    pal.save(d / "palette_alpha.png", transparency=0)
    frames = [photo(1024, 1024, s).convert("P", palette=Image.Palette.ADAPTIVE) for s in (5, 6, 7)]
    frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    photo(1300, 1000, 8).convert("L").save(d / "grey.tif")
    photo(1200, 1000, 9).save(d / "photo.webp", quality=90)
    photo(1000, 1200, 10).save(d / "photo.bmp")
    photo(1200, 1200, 11).save(d / "bad_icc.jpg", icc_profile=b"not really a profile" * 10)
    good = io.BytesIO()
    photo(1500, 1500, 12).save(good, "JPEG", quality=90)
    (d / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "notes.png").write_text("these are my notes, not a picture\n", encoding="utf-8")
    (d / "huge.png").write_bytes(huge_png_header())
    (d / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    with zipfile.ZipFile(d / "zipped.zip", "w") as z:
        buf = io.BytesIO()
        photo(1200, 900, 13).save(buf, "JPEG", quality=90)
        z.writestr("inner/zip_photo.jpg", buf.getvalue())
        z.writestr("inner/zip_photo.txt", "myLoRA, from a zip")
        buf = io.BytesIO()
        photo(900, 1200, 14).save(buf, "JPEG", quality=90)
        z.writestr("../evil name.jpg", buf.getvalue())
    return d


@pytest.fixture
def audit_set(tmp_path) -> dict[str, Path]:
    """Synthetic photos for the audit: good ones, one blurry, one desaturated, one near-duplicate,
    one small, one dark, one with a yellow cast."""
    d = tmp_path / "audit"
    d.mkdir()
    for i in range(4):
        photo(1024, 1024, 100 + i).save(d / f"good_{i}.png")
    photo(1024, 1024, 200).filter(ImageFilter.GaussianBlur(8)).save(d / "blurry.png")
    photo(1024, 1024, 201).convert("L").convert("RGB").save(d / "grey.png")
    photo(1024, 1024, 100).resize((1100, 1100)).save(d / "good_0_resized.jpg", quality=85)
    photo(600, 600, 202).save(d / "small.png")
    Image.fromarray((np.asarray(photo(1024, 1024, 203)) * 0.12).astype(np.uint8)).save(d / "dark.png")
    tinted = np.asarray(photo(1024, 1024, 204)).astype(np.float64) * [1.0, 0.8, 0.5]
    Image.fromarray(tinted.astype(np.uint8)).save(d / "tinted.png")
    return {"folder": d}


class Helpers:
    """The builders above, for test modules (pytest's importlib mode cannot import conftest)."""

    photo = staticmethod(photo)
    hash_tree = staticmethod(hash_tree)
    huge_png_header = staticmethod(huge_png_header)
    expected = EXPECTED


@pytest.fixture
def h() -> type[Helpers]:
    return Helpers


def face_image(width: int, height: int, cx: int, cy: int, s: int, background=(90, 110, 140)) -> Image.Image:
    """A drawn face (hair, skin, brows, eyes, nose, mouth) of about `s` px, centred at (cx, cy), that
    OpenCV's frontal Haar cascade does detect."""
    im = Image.new("RGB", (width, height), background)
    d = ImageDraw.Draw(im)
    d.rectangle((cx - s * 0.6, cy + s * 0.6, cx + s * 0.6, height), fill=(60, 90, 160))  # a body
    d.ellipse((cx - s * 0.55, cy - s * 0.75, cx + s * 0.55, cy + s * 0.5), fill=(50, 35, 25))
    d.ellipse((cx - s * 0.45, cy - s * 0.55, cx + s * 0.45, cy + s * 0.65), fill=(225, 185, 155))
    for side in (-1, 1):
        x = cx + side * s * 0.18
        d.ellipse((x - s * 0.12, cy - s * 0.27, x + s * 0.12, cy - s * 0.23), fill=(90, 60, 45))
        d.ellipse((x - s * 0.09, cy - s * 0.16, x + s * 0.09, cy - s * 0.06), fill=(255, 255, 255))
        d.ellipse((x - s * 0.045, cy - s * 0.155, x + s * 0.045, cy - s * 0.065), fill=(40, 30, 20))
    d.polygon([(cx, cy - s * 0.05), (cx - s * 0.06, cy + s * 0.15), (cx + s * 0.06, cy + s * 0.15)],
              fill=(200, 150, 125))
    d.ellipse((cx - s * 0.15, cy + s * 0.27, cx + s * 0.15, cy + s * 0.35), fill=(160, 70, 70))
    return im.filter(ImageFilter.GaussianBlur(max(1, s / 80)))


Helpers.face_image = staticmethod(face_image)
