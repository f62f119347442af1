"""Background removal with rembg: the background becomes a random colour (H random, S 0.5, V 0.5, as the
guide says, seeded so a run is reproducible) and the mask is kept for review and correction.

One rembg session per batch: creating one loads the ONNX model (hundreds of MB for real models).
Models are looked up by rembg's names (u2net, isnet-general-use, birefnet-portrait, ...) in
`U2NET_HOME` (rembg's folder; inside Forge it points at models/u2net), or given as a path to a .onnx
file of the U2-Net family (rembg's "u2net_custom").
"""

from __future__ import annotations

import colorsys
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..fsutil import atomic_path, png_beside
from .loading import ImageProblem, decode

RELEASES = "https://github.com/danielgatis/rembg/releases/tag/v0.0.0"
MASK_SIDE = 1024  # masks are predicted on a copy this size at most (the models work at 320-1024 px)


class ModelMissingError(RuntimeError):
    """The segmentation model is not on disk (or cannot be loaded); the message says where to put it."""


def u2net_home() -> Path:
    """rembg's model folder: $U2NET_HOME, else $XDG_DATA_HOME/.u2net, else ~/.u2net."""
    default = os.path.join(os.getenv("XDG_DATA_HOME", "~"), ".u2net")
    return Path(os.path.expanduser(os.getenv("U2NET_HOME", default)))


def model_names() -> list[str]:
    from rembg.sessions import sessions_names

    return [n for n in sessions_names if not n.endswith("_custom")]


def random_fill_color(rng: random.Random) -> tuple[int, int, int]:
    """A colour with a random hue, saturation 0.5 and value 0.5 (the guide's recipe)."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), 0.5, 0.5)
    return round(r * 255), round(g * 255), round(b * 255)


_DOWNLOAD = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/"
# rembg's model names -> (the file it downloads, its approximate size); looked up without importing
# rembg (importing it takes from several seconds to a minute: onnxruntime, scipy, scikit-image, ...).
MODEL_FILES = {
    "u2net": ("u2net.onnx", "176 MB"),
    "u2netp": ("u2netp.onnx", "4.7 MB"),
    "u2net_human_seg": ("u2net_human_seg.onnx", "176 MB"),
    "u2net_cloth_seg": ("u2net_cloth_seg.onnx", "176 MB"),
    "silueta": ("silueta.onnx", "43 MB"),
    "isnet-general-use": ("isnet-general-use.onnx", "179 MB"),
    "isnet-anime": ("isnet-anime.onnx", "176 MB"),
    "birefnet-general": ("BiRefNet-general-epoch_244.onnx", ""),
    "birefnet-general-lite": ("BiRefNet-general-bb_swin_v1_tiny-epoch_232.onnx", ""),
    "birefnet-portrait": ("BiRefNet-portrait-epoch_150.onnx", ""),
    "birefnet-dis": ("BiRefNet-DIS-epoch_590.onnx", ""),
    "birefnet-hrsod": ("BiRefNet-HRSOD_DHU-epoch_115.onnx", ""),
    "birefnet-cod": ("BiRefNet-COD-epoch_125.onnx", ""),
    "birefnet-massive": ("BiRefNet-massive-TR_DIS5K_TR_TEs-epoch_420.onnx", ""),
    "bria-rmbg": ("bria-rmbg-2.0.onnx", ""),
}


def _is_path(model: str) -> bool:
    return model.endswith(".onnx") or os.sep in model or "/" in model


def check_model(model: str = "u2net", *, home: str | os.PathLike | None = None,
                allow_download: bool = False) -> Path | None:
    """Fail at once (ModelMissingError, naming the file, the folder and where to get it) when the model
    is not on disk and may not be downloaded; the model file's path otherwise (None for "sam" and for
    a name this table does not know, which `new_session` checks with rembg itself).

    Cheap: it never imports rembg, so `prepare` / `background` call it before any other work.
    """
    if _is_path(model):
        path = Path(model).expanduser()
        if not path.is_file():
            raise ModelMissingError(
                f"rembg model file {path} does not exist: give the path of a U2-Net-style .onnx file, or a "
                f"rembg model name (u2net, isnet-general-use, ...) whose file is in {u2net_home()} (U2NET_HOME)")
        return path
    if model not in MODEL_FILES:
        return None
    folder = Path(home).expanduser() if home is not None else u2net_home()
    # rembg saves a download under "<model name>.onnx"; that is the file it looks for
    expected = folder / f"{model}.onnx"
    if expected.is_file() or allow_download:
        return expected
    release_file, size = MODEL_FILES[model]
    where = f"{_DOWNLOAD}{release_file}" + (f" ({size})" if size else "")
    rename = "" if release_file == expected.name else f" and save it as {expected.name}"
    raise ModelMissingError(
        f"{expected.name} not found in {folder}: download {where}{rename} there, "
        f"or set U2NET_HOME to the folder that holds it (inside Forge, e.g. Forge's models/u2net), "
        "or allow the download (--download-model) to let rembg fetch it there")


def new_session(model: str = "u2net", *, home: str | os.PathLike | None = None, allow_download: bool = False):
    """A rembg session for `model` (a rembg model name, or a path to a U2-Net-style .onnx file).

    `home` sets U2NET_HOME for rembg (process-wide: rembg reads it from the environment). Without
    `allow_download` a missing model raises ModelMissingError saying where to put the file, before
    rembg is imported.
    """
    path = check_model(model, home=home, allow_download=allow_download)
    from rembg import new_session as rembg_session

    if _is_path(model):
        return _load(lambda: rembg_session("u2net_custom", model_path=str(path.resolve())), model, path)

    names = model_names()
    if model not in names:
        raise ValueError(f"unknown rembg model {model!r}; known: {', '.join(names)}")
    if home is not None:
        os.environ["U2NET_HOME"] = str(Path(home).expanduser())
    folder = u2net_home()
    expected = folder / f"{model}.onnx"
    if model != "sam" and not expected.is_file() and not allow_download:
        raise ModelMissingError(
            f"{expected.name} not found in {folder}: put it there (U2NET_HOME), from rembg's releases "
            f"{RELEASES}, or allow the download (--download-model) to fetch it there automatically")
    return _load(lambda: rembg_session(model), model, expected)


def _load(make, model: str, expected: Path):
    try:
        return make()
    except Exception as e:  # rembg/pooch/onnxruntime raise many kinds; the user needs one clear line
        raise ModelMissingError(
            f"rembg model {model!r} could not be loaded ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            f"if it is missing or damaged, put a good copy at {expected} (from {RELEASES})") from e


@dataclass
class BackgroundRemover:
    """Holds one session for a batch. `mask(im)` -> L mask (white = subject);
    `replace(im, colour)` -> (image with the background filled, mask)."""

    session: object
    post_process: bool = False  # rembg's morphological clean-up: a hard, smoothed 0/255 edge

    @classmethod
    def create(cls, model: str = "u2net", *, home=None, allow_download: bool = False,
               post_process: bool = False) -> BackgroundRemover:
        return cls(new_session(model, home=home, allow_download=allow_download), post_process)

    def mask(self, im: Image.Image) -> Image.Image:
        from rembg import remove

        work = im.convert("RGB")
        if max(work.size) > MASK_SIDE:
            work = work.copy()
            work.thumbnail((MASK_SIDE, MASK_SIDE), Image.Resampling.BILINEAR)
        mask = remove(work, session=self.session, only_mask=True, post_process_mask=self.post_process)
        mask = mask.convert("L")
        return mask if mask.size == im.size else mask.resize(im.size, Image.Resampling.BILINEAR)

    def replace(self, im: Image.Image, color: tuple[int, int, int]) -> tuple[Image.Image, Image.Image]:
        mask = self.mask(im)
        out = Image.composite(im.convert("RGB"), Image.new("RGB", im.size, tuple(color)), mask)
        return out, mask


MASK_SUFFIX = "_mask.png"
MASK_REASON = "a mask written by the background step, not a photo"


def mask_path_for(image_path: Path) -> Path:
    """Where the standalone command keeps an image's mask: `<stem>_mask.png` beside it."""
    return image_path.with_name(f"{image_path.stem}{MASK_SUFFIX}")


def is_mask_name(name: str, siblings) -> bool:
    """Whether a file called `name` is a mask the background step wrote: `<stem>_mask.png` with
    `<stem>.png` beside it (`siblings`: the names in the same folder, or a callable name -> bool)."""
    if not name.lower().endswith(MASK_SUFFIX):
        return False
    image = name[:-len(MASK_SUFFIX)] + ".png"
    return siblings(image) if callable(siblings) else image in siblings


def remove_backgrounds(paths: list[Path], out_dir: Path, *, model: str = "u2net", seed: int = 0,
                       home=None, allow_download: bool = False, post_process: bool = False,
                       fill: tuple[int, int, int] | None = None,
                       progress: Callable[[int, int, str], None] | None = None,
                       stop: threading.Event | None = None) -> list[dict]:
    """Replace the background of each image; write `<out_dir>/<stem>.png` and `<stem>_mask.png` beside it.
    The background becomes `fill`, or (None) the guide's random colour, one per image from `seed`.

    One session for the whole batch. Returns one record per image: source, output, mask, colour.
    `progress(done, total, path)` after each image; `stop` (set from another thread) ends the batch
    between images, with the records of those done.
    """
    out_dir = Path(out_dir)
    check_model(model, home=home, allow_download=allow_download)  # before anything is read or written
    remover = BackgroundRemover.create(model, home=home, allow_download=allow_download, post_process=post_process)
    rng = random.Random(seed)
    records = []
    for path in paths:
        if stop is not None and stop.is_set():
            break
        path = Path(path)
        target = png_beside(path, out_dir)
        color = tuple(fill) if fill is not None else random_fill_color(rng)
        try:
            image = decode(path).image
        except ImageProblem as e:
            raise ImageProblem(f"{path}: {e.reason}") from None
        try:
            out, mask = remover.replace(image, color)
        except (RuntimeError, ValueError) as e:  # onnxruntime's errors; nothing of this image is written
            raise ImageProblem(f"{path}: background removal failed: {type(e).__name__}: {e}") from None
        save_png(out, target)
        save_png(mask, mask_path_for(target))
        records.append({"source": str(path), "output": str(target), "mask": str(mask_path_for(target)),
                        "color": list(color)})
        if progress:
            progress(len(records), len(paths), str(path))
    return records


def save_png(im: Image.Image, target: Path, compress_level: int = 6) -> None:
    with atomic_path(target) as tmp:
        im.save(tmp, format="PNG", compress_level=compress_level)
