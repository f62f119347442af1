"""Caption files: plain UTF-8 text beside each image (`image.png` -> `image.txt`), one line of tags
separated by ", ", written atomically (a crash never leaves half a caption)."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from ..fsutil import write_text_atomic
from ..images import list_images
from .encoding import read_caption_file
from .tagtext import join_caption, split_caption

__all__ = ["CAPTION_EXTENSION", "caption_path", "list_images", "read_caption", "select_images"]

CAPTION_EXTENSION = ".txt"


def select_images(images: list[Path], patterns: list[str] | None) -> list[Path]:
    """The images whose file name or stem matches one of `patterns` (shell wildcards allowed);
    all images when `patterns` is empty or None. A pattern that matches nothing is an error."""
    if not patterns:
        return list(images)
    chosen = []
    for pattern in patterns:
        hits = [p for p in images if fnmatch.fnmatch(p.name, pattern) or fnmatch.fnmatch(p.stem, pattern)
                or fnmatch.fnmatch(p.as_posix(), pattern)]
        if not hits:
            raise FileNotFoundError(f"no image in the dataset matches {pattern!r}")
        chosen += [p for p in hits if p not in chosen]
    return sorted(chosen)


def caption_path(image: str | os.PathLike, extension: str = CAPTION_EXTENSION) -> Path:
    return Path(image).with_suffix(extension)


def read_caption_text(path: Path) -> str | None:
    """The caption file's text (None when there is none): UTF-8 (a byte-order mark is dropped) or UTF-16
    with a byte-order mark. Any other encoding, or a caption over 64 KB, is a ValueError naming the file
    (`encoding.CaptionFileError`); nothing is ever decoded with replacement characters."""
    return read_caption_file(path, hint="save it as UTF-8 text")


def read_caption(image: str | os.PathLike, extension: str = CAPTION_EXTENSION) -> list[str]:
    """The tags of an image's caption ([] when it has none)."""
    return split_caption(read_caption_text(caption_path(image, extension)) or "")


def format_caption(tags: list[str]) -> str:
    return join_caption(tags) + "\n"


def write_caption(image: str | os.PathLike, tags: list[str], extension: str = CAPTION_EXTENSION) -> Path:
    """Write an image's caption (atomically). Prefer `edit.edit_captions`, which can be undone."""
    path = caption_path(image, extension)
    write_text_atomic(path, format_caption(tags))
    return path
