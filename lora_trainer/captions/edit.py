"""Batch caption edits over a dataset folder, with an undo of the last one.

`edit_captions(folder, edit)` runs `edit(tags) -> tags` on every image's caption (or a selection) and
writes the captions that changed. Before writing, it records every touched caption's previous text in
the folder's journal, `.lora_trainer_captions_undo.json`; `undo(folder)` puts those texts back (and
deletes captions the edit created). The journal holds one operation: each edit replaces it. It lives in
the dataset folder so the CLI, the UI and later sessions share it; the trainer ignores it (not an image).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..fsutil import write_json_atomic, write_text_atomic
from .files import (
    CAPTION_EXTENSION,
    caption_path,
    format_caption,
    list_images,
    read_caption_text,
    select_images,
)
from .tagtext import split_caption

JOURNAL = ".lora_trainer_captions_undo.json"


@dataclass
class EditResult:
    label: str
    changed: list[Path] = field(default_factory=list)  # caption files written
    unchanged: int = 0

    def summary(self) -> str:
        total = len(self.changed) + self.unchanged
        return f"{self.label}: changed {len(self.changed)} of {total} caption(s)"


@dataclass
class UndoResult:
    label: str
    restored: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # changed again since the edit; left as they are

    def summary(self) -> str:
        text = f"undid {self.label!r}: restored {len(self.restored)} caption(s)"
        if self.skipped:
            text += (f"; {len(self.skipped)} caption(s) were changed since and were left as they are "
                     f"(use force to restore them too): " + ", ".join(p.name for p in self.skipped))
        return text


def journal_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / JOURNAL


def write_captions(folder: str | os.PathLike, captions: dict[Path, str], label: str) -> list[Path]:
    """Write caption texts {caption path: text}, journaling the previous texts first (for `undo`).
    Only texts that differ from the file are written; returns the paths written."""
    folder = Path(folder)
    todo = {}
    for path, text in captions.items():
        before = read_caption_text(path)
        if before != text:
            todo[path] = (before, text)
    if not todo:  # nothing to write: the previous edit stays undoable
        return []
    entries = [{"path": os.path.relpath(p, folder), "before": b, "after": a} for p, (b, a) in todo.items()]
    write_json_atomic(journal_path(folder), {"label": label, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                                             "files": entries})
    for path, (_, text) in todo.items():
        write_text_atomic(path, text)
    return list(todo)


def edit_captions(folder: str | os.PathLike, edit: Callable[[list[str]], list[str]], label: str, *,
                  only: Sequence[str] | None = None, recursive: bool = False,
                  extension: str = CAPTION_EXTENSION) -> EditResult:
    """Apply `edit` to the captions of the images in `folder` (`only`: file names, stems or wildcards).
    An image without a caption starts from []; a caption file is created only if the edit adds tags."""
    folder = Path(folder)
    images = select_images(list_images(folder, recursive), list(only) if only else None)
    new_texts = {}
    result = EditResult(label)
    for image in images:
        path = caption_path(image, extension)
        before = read_caption_text(path)
        tags = split_caption(before or "")
        after = edit(list(tags))
        if after == tags and before is not None or before is None and not after:
            result.unchanged += 1
            continue
        new_texts[path] = format_caption(after)
    result.changed = write_captions(folder, new_texts, label)
    result.unchanged += len(new_texts) - len(result.changed)
    return result


def set_caption(folder: str | os.PathLike, image: str | os.PathLike, tags: list[str],
                extension: str = CAPTION_EXTENSION) -> EditResult:
    """Per-image editing: replace one image's caption (`image` absolute or relative to `folder`);
    undoable like a batch edit."""
    folder = Path(folder)
    image = folder / image
    if not image.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"image {image} is not inside the dataset folder {folder}; refused")
    if not image.is_file():
        raise FileNotFoundError(f"image {image} does not exist")
    result = EditResult(f"edit {image.name}")
    result.changed = write_captions(folder, {caption_path(image, extension): format_caption(tags)}, result.label)
    result.unchanged = 1 - len(result.changed)
    return result


def last_edit(folder: str | os.PathLike) -> str | None:
    """The label of the edit `undo` would revert (None when there is none)."""
    journal = _read_journal(Path(folder))
    return journal["label"] if journal else None


def undo(folder: str | os.PathLike, force: bool = False) -> UndoResult:
    """Revert the last edit. A caption changed again since that edit is left alone unless `force`.
    Every path in the journal must lie inside `folder` (symlinks followed): a journal naming any other
    file is refused as a whole, before anything is written."""
    folder = Path(folder)
    journal = _read_journal(folder)
    if journal is None:
        raise LookupError(f"nothing to undo in {folder} (no {JOURNAL})")
    result = UndoResult(journal["label"])
    entries = [(_confined(folder, entry["path"]), entry) for entry in journal["files"]]
    for path, entry in entries:
        if read_caption_text(path) != entry["after"] and not force:
            result.skipped.append(path)
            continue
        if entry["before"] is None:
            path.unlink(missing_ok=True)
        else:
            write_text_atomic(path, entry["before"])
        result.restored.append(path)
    journal_path(folder).unlink()
    return result


def _confined(folder: Path, relative: str) -> Path:
    """`folder / relative` if it resolves (symlinks followed) to a caption file inside `folder`."""
    path = folder / relative
    resolved, root = path.resolve(), folder.resolve()
    if not resolved.is_relative_to(root) or resolved == root or path.name == JOURNAL:
        raise ValueError(f"undo journal {journal_path(folder)} names {relative!r}, which is not a caption "
                         f"inside {folder}; refused, nothing was changed (delete the journal to start afresh)")
    return path


def _read_journal(folder: Path) -> dict | None:
    path = journal_path(folder)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ValueError(f"undo journal {path} is unreadable ({e}); delete it to start afresh") from e
    if not isinstance(data, dict) or not isinstance(data.get("files"), list) or "label" not in data \
            or not all(_valid_entry(e) for e in data["files"]):
        raise ValueError(f"undo journal {path} is not in the expected format; delete it to start afresh")
    return data


def _valid_entry(entry) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("path"), str) and bool(entry["path"])
            and "\x00" not in entry["path"]
            and all(isinstance(entry.get(k), str) or entry.get(k) is None for k in ("before", "after")))
