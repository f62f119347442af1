"""The training folder: kohya's `img/<repeats>_<name>/` layout, read and checked before any work.

Layout (kohya-ss/sd-scripts' DreamBooth-style folders, which every LoRA guide uses):

    img/
      10_myLoRA/      <- 10 repeats per epoch; class name "myLoRA"
        001.png
        001.txt       <- its caption (caption_extension), UTF-8, first line used
      5_outfit/       <- several folders are allowed, each with its own repeats

Choices that differ from silence:
- An image without a caption file trains with its folder's class name as caption (what kohya does for
  DreamBooth folders: the name after "<repeats>_"), and is listed in a warning.
- A folder that does not match `<repeats>_<name>` is skipped and reported with the reason.
- Every image is opened (Pillow verify, then a decode) before training: a corrupt, truncated or empty
  file stops the run with one `DatasetError` that lists every bad file, not just the first.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from lora_trainer.captions.encoding import CaptionFileError, read_caption_file
from lora_trainer.images import TRAINING_EXTENSIONS as IMAGE_EXTENSIONS
from lora_trainer.images import is_image, list_images

# Files that normally sit beside images and are not worth a warning.
_QUIET_EXTENSIONS = {".txt", ".caption", ".npz", ".json", ".toml", ".safetensors"}
_FOLDER_PATTERN = re.compile(r"^(\d+)_(.+)$")


class DatasetError(ValueError):
    """The training folder cannot be used; the message lists every problem found."""


@dataclass(frozen=True)
class ImageItem:
    path: Path
    caption: str
    repeats: int
    folder: str            # the folder's name, e.g. "10_myLoRA" (kohya's ss_tag_frequency key)
    size: tuple[int, int]  # (width, height) as trained: after the EXIF rotation


@dataclass
class TrainingSet:
    items: list[ImageItem]
    warnings: list[str] = field(default_factory=list)
    missing_captions: list[Path] = field(default_factory=list)
    skipped_folders: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return len(self.items)

    @property
    def num_samples(self) -> int:
        """Images seen per epoch: each image counts `repeats` times."""
        return sum(item.repeats for item in self.items)

    def sample_indices(self) -> list[int]:
        """One entry per sample of an epoch: the item index, repeated `repeats` times."""
        return [i for i, item in enumerate(self.items) for _ in range(item.repeats)]

    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """Per folder, how many captions hold each tag (kohya's `ss_tag_frequency` metadata)."""
        result: dict[str, Counter] = {}
        for item in self.items:
            tags = (t.strip() for t in item.caption.split(","))
            result.setdefault(item.folder, Counter()).update(t for t in tags if t)
        return {folder: dict(counts) for folder, counts in result.items()}


def hold_out(items: list[ImageItem], split: float, seed: int) -> tuple[list[ImageItem], list[ImageItem]]:
    """(training items, validation items): `split` below 1 is a fraction of the images (at least one),
    a whole number is a count; chosen at random from `seed`, the same ones for the same files and seed.
    At least one image stays for training."""
    if not split:
        return items, []
    count = max(1, round(split * len(items))) if split < 1 else int(split)
    if count >= len(items):
        raise DatasetError(f"validation_split = {split:g} holds out {count} of the {len(items)} images: at least "
                           "one must stay for training (use a smaller split, or validation_data_dir)")
    ordered = sorted(range(len(items)), key=lambda i: str(items[i].path))
    held = set(random.Random(seed).sample(ordered, count))
    return [it for i, it in enumerate(items) if i not in held], [it for i, it in enumerate(items) if i in held]


def scan_training_folder(img_root: str | Path, caption_extension: str = ".txt") -> TrainingSet:
    """Read `img_root`'s `<repeats>_<name>/` folders; raise `DatasetError` if it cannot train."""
    img_root = Path(img_root)
    if not img_root.is_dir():
        raise DatasetError(f"training folder not found: {img_root}")
    if not caption_extension.startswith("."):
        caption_extension = "." + caption_extension

    result = TrainingSet(items=[])
    bad: list[tuple[Path, str]] = []
    transparent: list[Path] = []
    for entry in sorted(img_root.iterdir()):
        if entry.name.startswith("."):  # .DS_Store, editor files
            continue
        if entry.is_file():
            result.warnings.append(f"{entry}: a file directly in {img_root.name}/ is ignored; images "
                                   "belong in a <repeats>_<name>/ subfolder")
            continue
        repeats, reason = _parse_folder_name(entry.name)
        if reason:
            result.skipped_folders.append((entry, reason))
            result.warnings.append(f"folder skipped: {entry}: {reason}")
            continue
        class_name = entry.name.split("_", 1)[1]
        for path in _folder_images(entry, caption_extension, result.warnings):
            problem, size, has_alpha = _check_image(path)
            if problem:
                bad.append((path, problem))
                continue
            caption, caption_problem = _read_caption(path.with_suffix(caption_extension), result.warnings)
            if caption_problem:
                bad.append((path.with_suffix(caption_extension), caption_problem))
                continue
            if caption is None:
                result.missing_captions.append(path)
                caption = class_name
            if has_alpha:
                transparent.append(path)
            result.items.append(ImageItem(path, caption, repeats, entry.name, size))

    if bad:
        lines = "\n".join(f"  {path}: {problem}" for path, problem in bad)
        raise DatasetError(f"{len(bad)} file(s) in {img_root} cannot be read; fix or remove them:\n{lines}")
    if not result.items:
        skipped = "".join(f"\n  skipped {p.name}: {why}" for p, why in result.skipped_folders)
        raise DatasetError(f"no training images in {img_root}: put them in <repeats>_<name>/ subfolders "
                           f"such as 10_myLoRA/ ({', '.join(IMAGE_EXTENSIONS)}){skipped}")
    if result.missing_captions:
        names = "\n".join(f"  {p}" for p in result.missing_captions)
        result.warnings.append(f"{len(result.missing_captions)} image(s) have no {caption_extension} "
                               f"caption and train with their folder's class name as caption:\n{names}")
    if transparent:
        names = "\n".join(f"  {p}" for p in transparent)
        result.warnings.append(f"{len(transparent)} image(s) have transparency, composited on white:\n{names}")
    return result


def _parse_folder_name(name: str) -> tuple[int, str]:
    """(repeats, "") for a `<repeats>_<name>` folder, else (0, why it is skipped)."""
    match = _FOLDER_PATTERN.match(name)
    if not match:
        return 0, ("name does not match <repeats>_<name> (e.g. 10_myLoRA); "
                   "the number in front is how often each image is seen per epoch")
    repeats = int(match.group(1))
    if repeats < 1:
        return 0, f"repeats is {repeats}; it must be 1 or more"
    return repeats, ""


def _folder_images(folder: Path, caption_extension: str, warnings: list[str]) -> list[Path]:
    """The folder's images as `list_images` lists them everywhere else; the rest is reported."""
    images, ignored = list_images(folder), []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            warnings.append(f"{path}: subfolders inside a training folder are not scanned")
        elif not is_image(path) and path.suffix.lower() not in _QUIET_EXTENSIONS \
                and path.suffix != caption_extension:
            ignored.append(path.name)
    if ignored:
        warnings.append(f"{folder}: not an image type we train on ({', '.join(IMAGE_EXTENSIONS)}), "
                        f"ignored: {', '.join(ignored)}")
    return images


def _check_image(path: Path) -> tuple[str, tuple[int, int], bool]:
    """(problem or "", (width, height) after EXIF rotation, has transparency)."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)", (0, 0), False
        with Image.open(path) as img:
            img.verify()  # structure and checksums, without decoding
        with Image.open(path) as img:
            width, height = img.size
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF Orientation: turned by 90 degrees
                width, height = height, width
            has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
            # `draft` lets JPEG decode at 1/8 scale: every byte is still read, so truncation shows.
            img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
    except Exception as e:  # Pillow raises many types for bad files; all mean "cannot train on it"
        return f"{type(e).__name__}: {e}", (0, 0), False
    if width < 1 or height < 1:
        return f"image has no pixels ({width}x{height})", (0, 0), False
    return "", (width, height), has_alpha


def _read_caption(path: Path, warnings: list[str]) -> tuple[str | None, str]:
    """(caption or None if there is no file, problem). The first non-empty line is the caption."""
    if not path.is_file():
        return None, ""
    try:
        text = read_caption_file(path, hint="save it as UTF-8 text")  # UTF-8 (BOM or not) / UTF-16 with BOM
    except CaptionFileError as e:
        problem = str(e).removeprefix(f"{path}: ")
        return None, problem if problem.startswith("caption") else f"caption {problem}"
    except OSError as e:
        return None, f"caption cannot be read: {e}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        warnings.append(f"{path}: caption has {len(lines)} lines; only the first is used")
    if not lines:
        warnings.append(f"{path}: caption file is empty; the image trains with an empty caption")
    return (lines[0] if lines else ""), ""


def process_caption(caption: str, shuffle: bool, keep_tokens: int, rng: random.Random, *, dropout: float = 0.0,
                    tag_dropout: float = 0.0, drop: bool = False) -> str:
    """The caption one sample trains with, as kohya makes it: empty when `drop` (a caption-dropout
    epoch) or with chance `dropout`; else the comma-separated tags after the first `keep_tokens` are
    each left out with chance `tag_dropout`, and shuffled (`shuffle`). `rng` is seeded by the caller, so
    a resumed run replays the same choices; nothing is drawn for an option that is off."""
    if drop or (dropout and rng.random() < dropout):
        return ""
    if not shuffle and not tag_dropout:
        return caption
    tags = [t.strip() for t in caption.split(",")]
    tags = [t for t in tags if t]
    kept, rest = tags[:keep_tokens], tags[keep_tokens:]
    if tag_dropout:
        rest = [t for t in rest if rng.random() >= tag_dropout]
    if shuffle:
        rng.shuffle(rest)
    return ", ".join(kept + rest)
