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

from ..captions.encoding import MAX_CAPTION_BYTES, CaptionFileError, too_large_message
from ..images import IMPORT_EXTENSIONS  # looked at when a folder or archive is scanned
from .background import MASK_REASON, is_mask_name

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
    skip_reason: str = ""      # set for an input that is reported but not imported (hidden, zip in a zip)

    def read_bytes(self) -> bytes:
        if self.path is not None:
            return self.path.read_bytes()
        with zipfile.ZipFile(self.archive) as z:
            info = z.getinfo(self.member)
            if info.file_size > MAX_MEMBER_BYTES:
                raise OSError(f"{info.file_size} bytes uncompressed, over the {MAX_MEMBER_BYTES} limit")
            return z.read(info)

    @property
    def caption_label(self) -> str:
        return str(self.caption_path) if self.caption_path is not None else f"{self.archive}:{self.caption_member}"

    def read_caption(self) -> bytes | None:
        """The caption file's bytes, exactly as they are (None when there is none). A caption over
        MAX_CAPTION_BYTES raises CaptionFileError naming it, before more than that is read."""
        if self.caption_path is not None:
            with open(self.caption_path, "rb") as f:
                data = f.read(MAX_CAPTION_BYTES + 1)
        elif self.caption_member is not None:
            with zipfile.ZipFile(self.archive) as z:
                info = z.getinfo(self.caption_member)
                if info.file_size > MAX_CAPTION_BYTES:
                    raise CaptionFileError(too_large_message(self.caption_label))
                with z.open(info) as f:
                    data = f.read(MAX_CAPTION_BYTES + 1)
        else:
            return None
        if len(data) > MAX_CAPTION_BYTES:
            raise CaptionFileError(too_large_message(self.caption_label))
        return data


def gather(inputs: Iterable[str | Path], caption_extension: str = ".txt") -> list[SourceItem]:
    """Expand folders (recursively, zips inside included) and zip files into items, in a stable (sorted) order.

    Raises FileNotFoundError naming an input that does not exist.
    """
    items: list[SourceItem] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if not p.is_file():
                    continue
                why = _hidden_reason(p.relative_to(path))
                if why:
                    if _reported(p.name, p.relative_to(path)):
                        items.append(SourceItem(label=str(p), stem=p.stem, path=p, skip_reason=why))
                    continue
                if is_mask_name(p.name, lambda n, p=p: p.with_name(n).is_file()):
                    items.append(SourceItem(label=str(p), stem=p.stem, path=p, skip_reason=MASK_REASON))
                elif p.suffix.lower() in IMPORT_EXTENSIONS:
                    items.append(_file_item(p, caption_extension))
                elif p.suffix.lower() == ".zip":
                    items.extend(_zip_items(p, caption_extension))
        elif path.is_file() and path.suffix.lower() == ".zip":
            items.extend(_zip_items(path, caption_extension))
        elif path.is_file() and is_mask_name(path.name, lambda n, path=path: path.with_name(n).is_file()):
            items.append(SourceItem(label=str(path), stem=path.stem, path=path, skip_reason=MASK_REASON))
        elif path.is_file():
            items.append(_file_item(path, caption_extension))
        else:
            raise FileNotFoundError(f"input not found: {path}")
    return items


def _hidden_reason(rel: Path) -> str:
    """Why a file is not imported because it is hidden ("" if it is not): a hidden file or one in a
    hidden folder, or macOS's zip resource forks (a "../" in a zip is not hidden: it is harmless here,
    since only the file's stem is ever used for an output name)."""
    if "__MACOSX" in rel.parts:
        return "macOS resource fork (__MACOSX), not a photo"
    if rel.name.startswith("."):
        return "hidden file (its name starts with '.'): skipped; rename it to import it"
    hidden = [part for part in rel.parts[:-1] if part.startswith(".") and part not in (".", "..")]
    if hidden:
        return f"in the hidden folder {hidden[0]!r}: skipped; move it out to import it"
    return ""


def _reported(name: str, rel: Path) -> bool:
    """Hidden files that get a report line: what would have been imported (images, zips), except
    macOS's resource forks, which are metadata rather than inputs."""
    return "__MACOSX" not in rel.parts and Path(name).suffix.lower() in (*IMPORT_EXTENSIONS, ".zip")


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
        label = f"{archive}:{name}"
        why = _hidden_reason(Path(*member.parts)) if member.parts else "empty name"
        if why:
            if _reported(member.name, Path(*member.parts)):
                yield SourceItem(label=label, stem=member.stem, archive=archive, member=name, skip_reason=why)
            continue
        if member.suffix.lower() == ".zip":
            yield SourceItem(label=label, stem=member.stem, archive=archive, member=name,
                             skip_reason="a zip inside a zip is not opened: extract it and import it separately")
            continue
        if member.suffix.lower() not in IMPORT_EXTENSIONS:
            continue
        if is_mask_name(member.name, lambda n, member=member: str(member.with_name(n)) in names):
            yield SourceItem(label=label, stem=member.stem, archive=archive, member=name, skip_reason=MASK_REASON)
            continue
        caption = str(member.with_suffix(caption_extension))
        yield SourceItem(label=label, stem=member.stem, archive=archive, member=name,
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


# what file managers and cameras append to a copy's name: " (copy)", " copy", " - Copy", " copy 2", "(1)"
_COPY_WORD = re.compile(r"(?:[\s_-]+[(\[]?|[(\[])\s*(?:copy|kopie|copie|copia)(?:\s*\d+)?\s*[)\]]?$",
                        re.IGNORECASE)
_COPY_NUMBER = re.compile(r"\s*\(\d+\)$")
_COPY_PREFIX = re.compile(r"^(?:copy|kopie|copie|copia)[\s_-]+(?:\(\d+\)[\s_-]+)?of[\s_-]+", re.IGNORECASE)
_NUMBER_TAIL = re.compile(r"[\s_-]\d{1,2}$")  # "-1", "_2", " 3": a copy only when the bare name is there too


def _copy_of(stem: str, stems: set[str]) -> bool:
    """Whether `stem` reads as a copy's name: "Copy of ..." or a copy word or "(n)" at its end, or "-n" / "_n" after a
    name that is in `stems` too (lower case)."""
    if _COPY_WORD.search(stem) or _COPY_NUMBER.search(stem) or _COPY_PREFIX.match(stem):
        return True
    bare = _NUMBER_TAIL.sub("", stem)
    return bare != stem and bare.lower() in stems


def pick_originals(items: list[tuple[SourceItem, str]]) -> dict[str, SourceItem]:
    """For each content hash, the item to keep among same-content ones: the original name (not one
    with a copy's " (copy)", " copy", "(1)", "-1" ending), else the shortest name, else the first by name."""
    groups: dict[str, list[SourceItem]] = {}
    for item, digest in items:
        groups.setdefault(digest, []).append(item)
    kept = {}
    for digest, group in groups.items():
        stems = {i.stem.lower() for i in group}
        kept[digest] = min(group, key=lambda i: (_copy_of(i.stem, stems), len(i.stem), i.stem, i.label))
    return kept
