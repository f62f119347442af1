"""Make a saved LoRA visible in the WebUI's LoRA folder without a second copy on disk.

Why not train straight into `models/Lora`: a run's `<name>-state/` folder holds `.pt` files, which
the WebUI would list as LoRAs. So the trainer writes into the project, and each file the user wants
to use is published: hard-linked into `<lora_root>/<subfolder>/` (no extra disk space, and the
link keeps its content when the trainer later replaces the project's file), or copied atomically
where a hard link is impossible (another drive, a filesystem without links).

Forge knows a LoRA by its file stem, wherever it lies under the LoRA folder, and keeps what it has
loaded by that name and path until it restarts. So publishing never replaces a different file:
a different file with the same stem anywhere under `lora_root` is refused with an error naming
both. Publishing a file that is already there (the same link, or an identical copy anywhere under
`lora_root`) is a no-op that returns where it already is.
"""

from __future__ import annotations

import errno
import filecmp
import json
import os
import shutil
from pathlib import Path

from lora_trainer.fsutil import atomic_path, write_json_atomic
from lora_trainer.runs.lora_files import lora_metadata

# What Forge lists as a LoRA (extensions-builtin/sd_forge_lora/networks.py walks these).
LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")
# errno values that mean "this filesystem pair cannot hard-link", so a copy is the answer.
PREVIEW_SUFFIX = ".preview.png"
_NO_LINK_ERRNOS = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES}


class PublishError(FileExistsError):
    """Publishing would make a LoRA name ambiguous or replace a different file; names both files."""


def publish_lora(lora_file: str | os.PathLike, lora_root: str | os.PathLike, subfolder: str = "",
                 card: dict | None = None) -> Path:
    """Link (or copy) `lora_file` to `<lora_root>/<subfolder>/<file name>` and return that path; with
    `card`, also its WebUI card (`write_card`).

    The name a prompt uses is the returned path's stem: `<lora:STEM:1>`.
    """
    published = _publish_file(lora_file, lora_root, subfolder)
    if card is not None:
        write_card(published, card)
    return published


def lora_card(lora_file: str | os.PathLike) -> dict:
    """What the WebUI's LoRA card should say about a file the trainer saved (the "user metadata"
    Forge and A1111 keep in `<stem>.json`): SDXL, so it is listed beside an SDXL model whatever
    heuristics say; the trigger word as activation text (the training folder's concept name, which
    every caption starts with); preferred weight 1; which run, epoch and step it is."""
    metadata = lora_metadata(Path(lora_file))
    trigger = _concept(metadata) or metadata.get("ss_output_name") or Path(lora_file).stem
    where = ", ".join(part for part in (
        f"run {metadata['ss_output_name']}" if metadata.get("ss_output_name") else "",
        f"epoch {metadata['ss_epoch']}" if metadata.get("ss_epoch") else "",
        f"step {metadata['ss_steps']}" if metadata.get("ss_steps") else "") if part)
    return {"description": f"Trained with LoRA Trainer for Forge ({where})" if where else "Trained with LoRA Trainer for Forge",
            "sd version": "SDXL", "activation text": trigger, "preferred weight": 1.0, "negative text": "",
            "notes": ""}


def write_card(published: Path, card: dict) -> Path | None:
    """`<stem>.json` beside the published file, unless one is there (the user may have edited it in
    the WebUI: their words win); returns the path written, or None."""
    path = Path(published).with_suffix(".json")
    if path.exists():
        return None
    write_json_atomic(path, card)
    return path


def preview_path(lora: Path) -> Path:
    """Where the WebUI looks for a LoRA's card picture (Forge's find_preview: `<stem>.preview.png`)."""
    return Path(lora).with_name(Path(lora).stem + PREVIEW_SUFFIX)


def write_preview(lora: Path, image: Path) -> Path:
    """Copy `image` (a PNG, e.g. a review grid cell) to the preview of `lora`, replacing the one there:
    choosing a preview is the user's own act. Atomic, so a card never shows half a picture."""
    from PIL import Image

    lora, image = Path(lora), Path(image)
    if not lora.is_file():
        raise FileNotFoundError(f"LoRA file not found: {lora}")
    try:
        with Image.open(image) as picture:
            if picture.format != "PNG":
                raise ValueError(f"{image} is a {picture.format} image, not a PNG")
    except OSError as e:
        raise ValueError(f"{image}: not an image ({e})") from None
    target = preview_path(lora)
    with atomic_path(target) as tmp:
        shutil.copyfile(image, tmp)
    return target


def _concept(metadata: dict[str, str]) -> str:
    """The concept with the most images in kohya's `ss_tag_frequency` (folder `10_myLoRA` -> `myLoRA`)."""
    try:
        frequency = json.loads(metadata.get("ss_tag_frequency") or "{}")
    except ValueError:
        return ""
    folders = [f for f in frequency if isinstance(frequency[f], dict)] if isinstance(frequency, dict) else []
    if not folders:
        return ""
    biggest = max(folders, key=lambda f: sum(v for v in frequency[f].values() if isinstance(v, int)))
    return biggest.split("_", 1)[1] if "_" in biggest and biggest.split("_", 1)[0].isdigit() else biggest


def _publish_file(lora_file: str | os.PathLike, lora_root: str | os.PathLike, subfolder: str) -> Path:
    source = Path(lora_file)
    if not source.is_file():
        raise FileNotFoundError(errno.ENOENT, "no LoRA file to publish", str(source))
    if source.suffix.lower() not in LORA_SUFFIXES:
        raise ValueError(f"{source}: not a LoRA file ({', '.join(LORA_SUFFIXES)})")
    if Path(subfolder).is_absolute() or ".." in Path(subfolder).parts:
        raise ValueError(f"subfolder {subfolder!r} must be a relative path inside the LoRA folder")
    root = Path(lora_root)
    folder = root / subfolder
    target = folder / source.name

    for other in same_name_files(root, source.stem):
        if _same_file(source, other):
            return other  # already published (here or elsewhere): the name gives this very LoRA
        raise PublishError(
            errno.EEXIST,
            f"the LoRA name {source.stem!r} is taken in the WebUI's LoRA folder by {other}, a different "
            f"file from {source}. The WebUI knows LoRAs by name and keeps one it has loaded until it "
            "restarts, so it is not replaced: give the training another output name, or delete or "
            "rename the other file (then refresh the LoRA list)",
            str(other),
        )

    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except FileExistsError:
        # created between the check and the link: judge it as above
        if _same_file(source, target):
            return target
        raise PublishError(errno.EEXIST, f"{target} appeared while publishing {source} and differs from it",
                           str(target)) from None
    except OSError as e:
        if e.errno not in _NO_LINK_ERRNOS:
            raise
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
            shutil.copymode(source, tmp)  # the temporary file was private (0600)
    return target


def project_subfolder(project: str, root: str = "lora_trainer") -> str:
    """Where a project's LoRAs go under the LoRA folder: `lora_trainer/<project>`."""
    if not project or Path(project).name != project or project in (".", ".."):
        raise ValueError(f"project name {project!r} cannot be a folder name inside the LoRA folder")
    return f"{root}/{project}"


def same_name_files(lora_root: str | os.PathLike, stem: str) -> list[Path]:
    """Files under `lora_root` (recursively, following links as Forge does) that the WebUI would
    list under the name `stem`."""
    root = Path(lora_root)
    found = []
    for folder, _dirs, files in os.walk(root, followlinks=True):
        for name in files:
            path = Path(folder, name)
            if path.stem == stem and path.suffix.lower() in LORA_SUFFIXES:
                found.append(path)
    return sorted(found)


def _samefile(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def same_file(a: Path, b: Path) -> bool:
    """The same inode (a hard link), or byte-identical content (a copy)."""
    return _same_file(Path(a), Path(b))


def _same_file(a: Path, b: Path) -> bool:
    """The same inode (a hard link), or byte-identical content (a copy)."""
    return _samefile(a, b) or (b.is_file() and filecmp.cmp(a, b, shallow=False))
