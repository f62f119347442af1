"""Gather input files (a folder, a list of files, zip archives), give each a safe, stable output name,
and spot same-content duplicates. Nothing here modifies an input.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..images import IMPORT_EXTENSIONS  # looked at when a folder or archive is scanned

MAX_MEMBER_BYTES = 512 * 1024 * 1024  # a zip member larger than this is refused (zip bomb guard)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SourceItem:
    """One input: a file on disk, or a member of a zip archive."""

    label: str                 # what the report calls it: a path, or "archive.zip:dir/a.jpg"
    stem: str                  # the name part the output name is built from
    path: Path | None = None   # a file on disk
    archive: Path | None = None
    member: str | None = None
    caption_path: Path | None = None  # `<stem>.txt` beside a file on disk
    caption_member: str | None = None

    def read_bytes(self) -> bytes:
        if self.path is not None:
            return self.path.read_bytes()
        with zipfile.ZipFile(self.archive) as z:
            info = z.getinfo(self.member)
            if info.file_size > MAX_MEMBER_BYTES:
                raise OSError(f"{info.file_size} bytes uncompressed, over the {MAX_MEMBER_BYTES} limit")
            return z.read(info)

    def read_caption(self) -> str | None:
        if self.caption_path is not None:
            return self.caption_path.read_text(encoding="utf-8", errors="replace")
        if self.caption_member is not None:
            with zipfile.ZipFile(self.archive) as z:
                return z.read(self.caption_member).decode("utf-8", errors="replace")
        return None


def gather(inputs: Iterable[str | Path], caption_extension: str = ".txt") -> list[SourceItem]:
    """Expand folders (recursively, zips inside included) and zip files into items, in a stable (sorted) order.

    Raises FileNotFoundError naming an input that does not exist.
    """
    items: list[SourceItem] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if not p.is_file() or _hidden(p.relative_to(path)):
                    continue
                if p.suffix.lower() in IMPORT_EXTENSIONS:
                    items.append(_file_item(p, caption_extension))
                elif p.suffix.lower() == ".zip":
                    items.extend(_zip_items(p, caption_extension))
        elif path.is_file() and path.suffix.lower() == ".zip":
            items.extend(_zip_items(path, caption_extension))
        elif path.is_file():
            items.append(_file_item(path, caption_extension))
        else:
            raise FileNotFoundError(f"input not found: {path}")
    return items


def _hidden(rel: Path) -> bool:
    """Hidden files and folders, and macOS's zip resource forks (a "../" in a zip is not hidden: it is
    harmless here, since only the file's stem is ever used for an output name)."""
    return any((part.startswith(".") and part not in (".", "..")) or part == "__MACOSX" for part in rel.parts)


def _file_item(path: Path, caption_extension: str) -> SourceItem:
    caption = path.with_suffix(caption_extension)
    return SourceItem(label=str(path), stem=path.stem, path=path,
                      caption_path=caption if caption.is_file() else None)


def _zip_items(archive: Path, caption_extension: str) -> Iterator[SourceItem]:
    try:
        with zipfile.ZipFile(archive) as z:
            names = {i.filename for i in z.infolist() if not i.is_dir()}
    except zipfile.BadZipFile as e:
        raise ValueError(f"{archive}: not a readable zip archive ({e})") from None
    for name in sorted(names):
        member = PurePosixPath(name.replace("\\", "/"))
        if member.suffix.lower() not in IMPORT_EXTENSIONS or _hidden(Path(*member.parts)):
            continue
        caption = str(member.with_suffix(caption_extension))
        yield SourceItem(label=f"{archive}:{name}", stem=member.stem, archive=archive, member=name,
                         caption_member=caption if caption in names else None)


def safe_stem(stem: str, max_length: int = 80) -> str:
    """A file-name stem with only ASCII letters, digits, '.', '_', '-'; never hidden, never empty."""
    text = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    text = _UNSAFE.sub("_", text).strip("._-")
    return text[:max_length].rstrip("._-") or "image"


class NameAllocator:
    """Stable output names: the safe stem, or `<stem>-<first 8 hex of the content hash>` when two
    different inputs would share it (compared case-insensitively, for Windows and macOS)."""

    def __init__(self, taken: Iterable[str] = ()):
        self._taken = {t.lower() for t in taken}

    def allocate(self, stem: str, digest: str) -> str:
        name = safe_stem(stem)
        if name.lower() in self._taken:
            name = f"{name}-{digest[:8]}"
            n = 2
            while name.lower() in self._taken:
                name = f"{safe_stem(stem)}-{digest[:8]}-{n}"
                n += 1
        self._taken.add(name.lower())
        return name


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
