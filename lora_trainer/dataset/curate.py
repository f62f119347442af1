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
- `recomposite` makes an image again from the one before its background through its mask corrected by
  hand (strokes) over a fill colour; a redo with another model or fill is `replace_backgrounds` on it.
- `make_closeups` cuts face close-ups from the originals of half and full body shots;
  `closeup_images` lists them with their shots for review.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from ..images import list_images
from ..project import Project
from .background import remove_backgrounds, save_png
from .closeups import closeup_box
from .edits import Edits, edit_files
from .faces import FaceDetector, HaarFaceDetector
from .framing import Box, fit_size, subject_box
from .loading import NEUTRAL_GREY, ImageProblem, decode
from .masks import apply_strokes, composite, fill_colour
from .prepare import REPORT_NAME, STOPPED_REASON, PrepareOptions, prepare

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
                        fill: tuple[int, int, int] | None = None, home=None, allow_download: bool = False,
                        progress: Callable[[int, int, str], None] | None = None,
                        stop: threading.Event | None = None) -> list[dict]:
    """The guide's random-colour background (or `fill`) on the training images `names`, written in
    place; each image as it was is kept in `<project>/before-background/` (the first time: a second run
    keeps the earlier original and segments that one, so a redo with another model starts from the
    photo, not from the last result); its mask goes to `<project>/masks/<stem>.png`. A missing model
    raises ModelMissingError before anything is read (`home`: rembg's model folder). Records as
    `remove_backgrounds` gives them, with `output` the training image, `mask` the kept mask and `before`
    the kept original."""
    images = [training_image(project, n) for n in dict.fromkeys(names)]
    inputs = [before_background(project, image.name) or image for image in images]
    scratch = _scratch(project, "background")
    try:
        records = remove_backgrounds(inputs, scratch, model=model, seed=seed, fill=fill, home=home,
                                     allow_download=allow_download, progress=progress, stop=stop)
        before = before_background_folder(project)
        before.mkdir(parents=True, exist_ok=True)
        project.masks.mkdir(parents=True, exist_ok=True)
        for image, record in zip(images, records):
            kept, copied = before_background(project, image.name), False
            if kept is None:
                kept, copied = before / image.name, True
                shutil.copy2(image, kept)
            target = image.with_suffix(".png")
            os.replace(record["output"], target)
            if target != image:  # a JPEG (or other) training image became a PNG: its file is kept aside
                if copied:
                    image.unlink()  # the copy just made holds its bytes
                else:
                    os.replace(image, _unique(before, image.name))
            mask = project.masks / f"{target.stem}.png"
            os.replace(record["mask"], mask)
            record.update(source=str(image), output=str(target), mask=str(mask), before=str(kept))
        return records
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _unique(folder: Path, name: str) -> Path:
    return folder / _free_name(folder, name)


def before_background(project: Project, name: str) -> Path | None:
    """The training image `name` as it was before its background was replaced, if kept (found by its
    stem: a JPEG training image is kept as it was while the training image becomes a PNG)."""
    folder = before_background_folder(project)
    exact = folder / Path(name).name
    if exact.is_file():
        return exact
    if not folder.is_dir():
        return None
    stem = Path(name).stem
    found = [p for p in list_images(folder) if p.stem == stem]
    return found[0] if len(found) == 1 else None


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
    back = image.with_name(kept.name) if kept.suffix.lower() != image.suffix.lower() else image
    os.replace(kept, back)
    if back != image:
        image.unlink()  # the result with the replaced background (made again by Replace backgrounds)
    return back


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


def edit_images(project: Project, names: list[str], edits: Edits, *,
                progress: Callable[[int, int, str], None] | None = None,
                stop: threading.Event | None = None) -> list[Path]:
    """Apply `edits` to the training images `names` in place (each written as `<stem>.png`; a non-PNG
    one's old file is moved to `<project>/excluded/`). The imported originals stay in `sources/`.
    `stop` ends the batch between images: those edited so far are in place, the others untouched."""
    paths = [training_image(project, n) for n in dict.fromkeys(names)]
    scratch = _scratch(project, "edits")
    try:
        written = edit_files(paths, edits, scratch, progress=progress, stop=stop)
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


# --- a mask corrected by hand, another fill ------------------------------------------------------------

def recomposite(project: Project, name: str, *, strokes: Image.Image | None = None,
                colour: tuple[int, int, int] | None = None) -> Path:
    """The training image `name` made again from the image before its background was replaced, through
    its mask corrected by `strokes` (see `masks.apply_strokes`), over `colour` (None: the fill it has
    now). The mask and the image are each written atomically. When no image from before was kept (the
    background was replaced by `prepare --remove-background`) it is prepared again from the original in
    sources/ with the last import's framing, and kept in before-background/ from then on. Its path."""
    image = training_image(project, name)
    mask_path = background_mask(project, image.name)
    if mask_path is None:
        raise ValueError(f"{image.name}: no background mask in {project.masks}: replace its background first")
    with Image.open(mask_path) as m:
        mask = m.convert("L")
    with Image.open(image) as im:
        now = im.convert("RGB")
    photo = photo_before(project, image)
    corrected = apply_strokes(mask, strokes)
    colour = tuple(colour) if colour is not None else fill_colour(now, mask) or NEUTRAL_GREY
    try:
        out = composite(photo, corrected, colour)
    except ValueError as e:
        raise ValueError(f"{image.name}: {e}: replace its background again to make a mask that fits") from None
    target = image.with_suffix(".png")
    save_png(corrected, mask_path)
    save_png(out, target)
    return target


def photo_before(project: Project, image: Path) -> Image.Image:
    kept = before_background(project, image.name)
    if kept is None:
        kept = _rebuild_before(project, image)
    try:
        return decode(kept).image
    except ImageProblem as e:
        raise ValueError(f"{image.name}: the image before its background was replaced, {kept}: {e.reason}") from None


def _rebuild_before(project: Project, image: Path) -> Path:
    source = source_of(project, image.name)
    if source is None:
        raise ValueError(f"{image.name}: no image from before its background was replaced is kept (in "
                         f"{before_background_folder(project)}), and no original of it in {project.sources}")
    scratch = _scratch(project, "before")
    try:
        report = prepare([source], Project(scratch, project.name, project.repeats), options_from_report(project),
                         write_report=False)
        done = [e for e in report.entries if e.status == "ok"]
        if not done:
            why = "; ".join(f"{e.status}: {e.reason}" for e in report.entries) or "nothing prepared"
            raise ValueError(f"{image.name}: preparing it again from {source.name} failed ({why})")
        folder = before_background_folder(project)
        folder.mkdir(parents=True, exist_ok=True)
        kept = folder / image.with_suffix(".png").name
        os.replace(done[0].output, kept)
        return kept
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --- face close-ups made from half and full body shots ---------------------------------------------------

CLOSEUP_SUFFIX = "_closeup"
_CLOSEUP_NAME = re.compile(rf"^(?P<shot>.+){CLOSEUP_SUFFIX}(?:[-.][0-9A-Za-z-]+)?$")


@dataclasses.dataclass(frozen=True)
class CloseupResult:
    shot: str            # the training image it was asked for
    closeup: str = ""    # the close-up's training image, when made
    reason: str = ""     # why not, or a note (its shot's background was replaced)


def closeup_shot(name: str) -> str | None:
    """The stem of the shot a close-up named `name` was made from (`<shot>_closeup[...]`), or None."""
    match = _CLOSEUP_NAME.match(Path(name).stem)
    return match.group("shot") if match else None


def closeup_images(project: Project) -> list[tuple[Path, Path | None]]:
    """The training images that are close-ups made from a shot, each with that shot's training image
    (None when the shot is no longer in the training folder)."""
    folder = project.train_images
    if not folder.is_dir():
        return []
    images = list_images(folder)
    by_stem = {p.stem: p for p in images}
    return [(p, by_stem.get(shot)) for p in images for shot in [closeup_shot(p.name)] if shot is not None]


def make_closeups(project: Project, names: list[str], *, detector: FaceDetector | None = None,
                  progress: Callable[[int, int, str], None] | None = None,
                  stop: threading.Event | None = None) -> list[CloseupResult]:
    """A face close-up for each of the training images `names` that is a half or full body shot with a
    face: cut from its original in sources/ (not from the smaller training image), at the training size,
    framed as the last import did (close-ups too small for it are refused with the reason unless that
    import enlarged small photos), written as `<shot>_closeup.png` beside it, without a caption (tag it
    with the others). One result per name."""
    images = [training_image(project, n) for n in dict.fromkeys(names)]
    results: dict[str, CloseupResult] = {}
    sources: dict[str, Path] = {}
    for image in images:
        source = source_of(project, image.name)
        if closeup_shot(image.name) is not None:
            results[image.name] = CloseupResult(image.name, reason="a close-up already")
        elif source is None:
            results[image.name] = CloseupResult(image.name, reason=f"no original of it in {project.sources}")
        else:
            sources[source.stem] = source
    if sources:
        results.update(_closeups_from(project, images, sources, detector, progress, stop))
    return [results.get(image.name) or CloseupResult(image.name, reason=STOPPED_REASON) for image in images]


def _closeups_from(project: Project, images: list[Path], sources: dict[str, Path], detector, progress,
                   stop) -> dict[str, CloseupResult]:
    by_stem = {image.stem: image.name for image in images}
    options = dataclasses.replace(options_from_report(project), closeups="all")
    scratch = _scratch(project, "closeups")
    try:
        report = prepare(list(sources.values()), Project(scratch, project.name, project.repeats), options,
                         detector=detector or HaarFaceDetector(), progress=progress, stop=stop,
                         write_report=False)
        results = {}
        for entry in report.entries:
            shot = by_stem.get(Path(entry.source).stem)
            if shot is None or entry.reason == STOPPED_REASON:
                continue
            if entry.status == "close-up" and entry.output:
                target = _unique(project.train_images, f"{Path(shot).stem}{CLOSEUP_SUFFIX}.png")
                os.replace(entry.output, target)
                note = ("its shot's background was replaced: replace this one's too"
                        if background_mask(project, shot) is not None else "")
                results[shot] = CloseupResult(shot, target.name, note)
            elif entry.status == "close-up skipped":
                results[shot] = CloseupResult(shot, reason=entry.reason)
            elif entry.status == "ok" and shot not in results:
                results[shot] = CloseupResult(shot, reason=_why_no_closeup(entry.shot))
            elif entry.status == "skipped":
                results[shot] = CloseupResult(shot, reason=f"its original {Path(entry.source).name}: {entry.reason}")
        return results
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _why_no_closeup(shot: str) -> str:
    if shot == "no face":
        return "no face found in its original"
    return f"a {shot} shot: close-ups are made from half and full body shots"
