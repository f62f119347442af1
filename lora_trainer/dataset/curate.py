"""Curating a project's training folder in place, for the Dataset panel: nothing is ever deleted.

- `exclude_images` moves training images (and their captions) out of `img/` into `<project>/excluded/`;
  `restore_images` moves them back.
- `replace_backgrounds` runs `background.remove_backgrounds` on training images into a temporary
  folder, keeps each image as it was in `<project>/before-background/`, then moves the result onto the
  training image (atomic `os.replace`, same file system) and its mask to `<project>/masks/<stem>.png`,
  where `prepare` keeps masks. `keep_original` puts the image from before the background back.
- `recrop` prepares one training image again from its original in sources/ with a manual crop box
  (pixels of the upright original) and the last import's framing; `face_box` and `mask_box` are boxes
  to start from.
- `edit_images` runs `edits.edit_files` into a temporary folder and moves each result onto its training
  image (the imported originals stay in `sources/`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from ..images import list_images
from ..project import Project
from .background import remove_backgrounds
from .closeups import closeup_box
from .edits import Edits, edit_files
from .faces import FaceDetector, HaarFaceDetector
from .framing import Box, fit_size, subject_box
from .loading import ImageProblem, decode
from .prepare import REPORT_NAME, PrepareOptions, prepare

EXCLUDED = "excluded"
BEFORE_BACKGROUND = "before-background"
CAPTION_EXTENSIONS = (".txt", ".caption")


def excluded_folder(project: Project) -> Path:
    return project.root / EXCLUDED


def before_background_folder(project: Project) -> Path:
    return project.root / BEFORE_BACKGROUND


def training_image(project: Project, name: str) -> Path:
    """`project.train_images / name` for a plain file name of an image there; ValueError otherwise
    (a path, '..', a hidden or missing file)."""
    return _member(project.train_images, name, "training image")


def _member(folder: Path, name: str, what: str) -> Path:
    name = str(name or "")
    if not name or name != Path(name).name or name in (".", "..") or name.startswith(".") or "\\" in name:
        raise ValueError(f"{name!r} is not the name of a {what} in {folder}")
    path = folder / name
    if not path.is_file() or path.resolve().parent != folder.resolve():
        raise ValueError(f"no {what} {name!r} in {folder}")
    return path


def _captions(image: Path) -> list[Path]:
    return [image.with_suffix(ext) for ext in CAPTION_EXTENSIONS if image.with_suffix(ext).is_file()]


def _free_name(folder: Path, name: str) -> str:
    """`name`, or `<stem>.<n><suffix>` when `name` (or its caption) is already in `folder`."""
    stem, suffix = Path(name).stem, Path(name).suffix
    candidate, n = name, 1
    while (folder / candidate).exists() or any((folder / candidate).with_suffix(e).exists() for e in CAPTION_EXTENSIONS):
        n += 1
        candidate = f"{stem}.{n}{suffix}"
    return candidate


def exclude_images(project: Project, names: list[str]) -> list[Path]:
    """Move the training images `names` and their captions into `<project>/excluded/` (never deleted);
    their new paths. All names are checked before anything moves."""
    images = [training_image(project, n) for n in dict.fromkeys(names)]
    target = excluded_folder(project)
    target.mkdir(parents=True, exist_ok=True)
    moved = []
    for image in images:
        name = _free_name(target, image.name)
        for caption in _captions(image):
            os.replace(caption, target / f"{Path(name).stem}{caption.suffix}")
        os.replace(image, target / name)
        moved.append(target / name)
    return moved


def excluded_images(project: Project) -> list[Path]:
    folder = excluded_folder(project)
    return list_images(folder) if folder.is_dir() else []


def restore_images(project: Project, names: list[str]) -> list[Path]:
    """Move excluded images (and their captions) back into the training folder; refuses one whose name
    is taken there. Their paths in the training folder."""
    folder = excluded_folder(project)
    images = [_member(folder, n, "excluded image") for n in dict.fromkeys(names)]
    for image in images:
        if (project.train_images / image.name).exists():
            raise ValueError(f"{image.name} is in {project.train_images} already: rename or exclude that one first")
    project.train_images.mkdir(parents=True, exist_ok=True)
    back = []
    for image in images:
        for caption in _captions(image):
            os.replace(caption, project.train_images / caption.name)
        os.replace(image, project.train_images / image.name)
        back.append(project.train_images / image.name)
    return back


def _scratch(project: Project, prefix: str) -> Path:
    """A temporary folder inside the project (same file system: the results move with os.replace)."""
    project.root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{prefix}-", dir=project.root))


def replace_backgrounds(project: Project, names: list[str], *, model: str = "u2net", seed: int = 0,
                        allow_download: bool = False, progress: Callable[[int, int, str], None] | None = None,
                        stop: threading.Event | None = None) -> list[dict]:
    """The guide's random-colour background on the training images `names`, written in place; each
    image as it was is kept in `<project>/before-background/` (the first time: a second run keeps the
    earlier original), its mask goes to `<project>/masks/<stem>.png`. A missing model raises
    ModelMissingError before anything is read. Records as `remove_backgrounds` gives them, with
    `output` the training image, `mask` the kept mask and `before` the kept original."""
    paths = [training_image(project, n) for n in dict.fromkeys(names)]
    scratch = _scratch(project, "background")
    try:
        records = remove_backgrounds(paths, scratch, model=model, seed=seed, allow_download=allow_download,
                                     progress=progress, stop=stop)
        before = before_background_folder(project)
        before.mkdir(parents=True, exist_ok=True)
        project.masks.mkdir(parents=True, exist_ok=True)
        for record in records:
            image = Path(record["source"])
            kept = before / image.name
            if not kept.exists():
                shutil.copy2(image, kept)
            target = image.with_suffix(".png")
            os.replace(record["output"], target)
            if target != image:  # a JPEG (or other) training image becomes a PNG: the old file is kept
                os.replace(image, _unique(before, image.name))
            mask = project.masks / f"{target.stem}.png"
            os.replace(record["mask"], mask)
            record.update(output=str(target), mask=str(mask), before=str(kept))
        return records
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _unique(folder: Path, name: str) -> Path:
    return folder / _free_name(folder, name)


def before_background(project: Project, name: str) -> Path | None:
    """The training image `name` as it was before its background was replaced, if kept."""
    path = before_background_folder(project) / Path(name).name
    return path if path.is_file() else None


def background_mask(project: Project, name: str) -> Path | None:
    path = project.masks / f"{Path(name).stem}.png"
    return path if path.is_file() else None


def source_of(project: Project, name: str) -> Path | None:
    """The imported original of the training image `name` in sources/ (prepare keeps it as
    `<name>.<its extension>`), or None (a close-up, an image put in img/ by hand)."""
    stem = Path(name).stem
    if not project.sources.is_dir():
        return None
    found = [p for p in project.sources.iterdir() if p.is_file() and p.stem == stem and not p.name.startswith(".")
             and p.suffix.lower() not in CAPTION_EXTENSIONS]
    return found[0] if len(found) == 1 else None


def options_from_report(project: Project) -> PrepareOptions:
    """The framing options of the project's last import (prepare-report.json), without the background,
    the subject crop (it needs the mask) and close-ups; prepare's defaults when there is no report."""
    try:
        saved = json.loads((project.root / REPORT_NAME).read_text(encoding="utf-8")).get("options") or {}
    except (OSError, ValueError):
        saved = {}
    names = {f.name for f in dataclasses.fields(PrepareOptions)} - {"background", "closeups", "workers", "edits",
                                                                     "allow_download"}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in names}
    if kwargs.get("crop") == "subject":
        kwargs["crop"] = "none"
    try:
        edits = Edits(**saved.get("edits") or {})
        return PrepareOptions(**kwargs, edits=edits, workers=1)
    except (TypeError, ValueError):
        return PrepareOptions(workers=1)


def keep_original(project: Project, name: str) -> Path:
    """Put back the training image `name` as it was before its background was replaced (the result is
    dropped, its mask moved beside the kept original as `<stem>_mask.png`). When no such copy was kept
    (the background was replaced by `prepare --remove-background`), the image is prepared again from its
    original in sources/ with the last import's framing (a manual crop box is not known here).
    ValueError when neither is there."""
    image = training_image(project, name)
    kept = before_background(project, image.name)
    if kept is None:
        return _from_source(project, image)
    mask = background_mask(project, image.name)
    if mask is not None:
        os.replace(mask, _unique(before_background_folder(project), f"{image.stem}_mask.png"))
    os.replace(kept, image)
    return image


def _from_source(project: Project, image: Path, box: Box | None = None) -> Path:
    source = source_of(project, image.name)
    if source is None:
        raise ValueError(f"no image from before the background was replaced is kept for {image.name} (in "
                         f"{before_background_folder(project)}), and no original of it in {project.sources}")
    report = prepare([source], project, options_from_report(project), boxes={image.stem: box} if box else None,
                     write_report=False)
    done = [e for e in report.entries if e.status == "ok" and Path(e.output) == image.with_suffix(".png")]
    if not done:
        why = "; ".join(f"{e.status}: {e.reason}" for e in report.entries) or "nothing prepared"
        raise ValueError(f"{image.name}: preparing it again from {source.name} failed ({why})")
    mask = background_mask(project, image.name)
    if mask is not None:
        folder = before_background_folder(project)
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(mask, _unique(folder, f"{image.stem}_mask.png"))
    if image.suffix.lower() != ".png" and image.exists():
        os.replace(image, _unique(before_background_folder(project), image.name))
    return image.with_suffix(".png")


def original(project: Project, name: str):
    """The imported original of the training image `name`, upright (EXIF applied) and RGB as prepare
    reads it; ValueError when there is none or it cannot be read."""
    image = training_image(project, name)
    source = source_of(project, image.name)
    if source is None:
        raise ValueError(f"{image.name}: no original of it in {project.sources} (a close-up or an image put "
                         "in img/ by hand): nothing to crop from")
    o = options_from_report(project)
    try:
        return decode(source, alpha_fill=o.alpha_fill, max_pixels=o.max_pixels).image
    except ImageProblem as e:
        raise ValueError(f"{image.name}: its original {source.name}: {e.reason}") from None


def check_box(box, size: tuple[int, int], name: str) -> Box:
    """`box` as four whole pixels inside an image of `size`; ValueError naming the image otherwise."""
    try:
        left, top, right, bottom = (int(round(float(v))) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: the crop box needs four numbers (left, top, right, bottom), got {box!r}") from None
    w, h = size
    if left >= right or top >= bottom:
        raise ValueError(f"{name}: crop box {(left, top, right, bottom)}: left must be less than right and top "
                         "less than bottom")
    if left < 0 or top < 0 or right > w or bottom > h:
        raise ValueError(f"{name}: crop box {(left, top, right, bottom)} is outside the {w}x{h} original "
                         f"(0, 0, {w}, {h})")
    return left, top, right, bottom


def recrop(project: Project, name: str, box) -> Path:
    """Prepare the training image `name` again from its original in sources/, cropped to `box` (pixels of
    the upright original) and framed as the last import did; the image is replaced atomically, its
    caption is untouched (a mask from a replaced background no longer fits: it goes beside the kept
    originals, as with `keep_original`). Its path (a .png)."""
    image = training_image(project, name)
    box = check_box(box, original(project, image.name).size, image.name)
    return _from_source(project, image, box)


def face_box(project: Project, name: str, detector: FaceDetector | None = None) -> Box | None:
    """A square around the largest face in the original (the close-up margin), or None."""
    im = original(project, name)
    faces = (detector or HaarFaceDetector())(im)
    if not faces:
        return None
    face = max(faces, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    return closeup_box(face, im.size, options_from_report(project).face_margin)


def mask_box(project: Project, name: str) -> Box | None:
    """The subject's box from the image's mask in masks/, in pixels of the original (the mask is in the
    training image's pixels: mapped back through the import's fit and padding, for an image framed
    whole); None when there is no mask or it is empty."""
    mask_path = background_mask(project, name)
    if mask_path is None:
        return None
    with Image.open(mask_path) as mask:
        box = subject_box(mask)
        mw, mh = mask.size
    if box is None:
        return None
    w, h = original(project, name).size
    o = options_from_report(project)
    fw, fh = fit_size((w, h), (o.size, o.size), o.upscale) if o.mode == "pad" else (mw, mh)
    ox, oy = (mw - fw) // 2, (mh - fh) // 2
    left, top = (box[0] - ox) * w / fw, (box[1] - oy) * h / fh
    right, bottom = (box[2] - ox) * w / fw, (box[3] - oy) * h / fh
    return max(0, int(left)), max(0, int(top)), min(w, round(right)), min(h, round(bottom))


def edit_images(project: Project, names: list[str], edits: Edits) -> list[Path]:
    """Apply `edits` to the training images `names` in place (each written as `<stem>.png`; a non-PNG
    one's old file is moved to `<project>/excluded/`). The imported originals stay in `sources/`."""
    paths = [training_image(project, n) for n in dict.fromkeys(names)]
    scratch = _scratch(project, "edits")
    try:
        written = edit_files(paths, edits, scratch)
        out = []
        for path, result in zip(paths, written):
            target = path.with_suffix(".png")
            if target != path and target.exists():
                raise ValueError(f"{target.name} exists beside {path.name}: exclude one of them first")
            os.replace(result, target)
            if target != path:
                excluded_folder(project).mkdir(parents=True, exist_ok=True)
                os.replace(path, _unique(excluded_folder(project), path.name))
            out.append(target)
        return out
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
