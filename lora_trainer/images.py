"""Which files are images, and the one way a folder's images are listed.

The trainer, the tagger, the caption editor, the audit and the UI's counts all list through
`list_images`, so they never disagree about what a folder holds (hidden files such as macOS's
`._photo.png` are left out everywhere).
"""

from __future__ import annotations

import os
from pathlib import Path

# What the trainer, the tagger and the caption tools read.
TRAINING_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# What `import` / `prepare` also take in (and convert to PNG).
IMPORT_EXTENSIONS = frozenset({*TRAINING_EXTENSIONS, ".jpe", ".jfif", ".dib", ".tif", ".tiff", ".gif",
                               ".heic", ".heif", ".avif", ".jxl", ".tga", ".ppm", ".pgm", ".pbm"})


def is_hidden(path: Path, root: Path | None = None) -> bool:
    """A name starting with '.' (the file's, or a folder's between `root` and it)."""
    parts = path.relative_to(root).parts if root else (path.name,)
    return any(part.startswith(".") for part in parts)


def is_image(path: Path, extensions=TRAINING_EXTENSIONS) -> bool:
    return path.suffix.lower() in extensions


def list_images(folder: str | os.PathLike, recursive: bool = False,
                extensions=TRAINING_EXTENSIONS) -> list[Path]:
    """The images of a folder, sorted by path; hidden files and folders are left out.
    FileNotFoundError (naming the folder) when it does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found
                  if is_image(p, extensions) and not is_hidden(p, folder) and p.is_file())
