"""Auto-tag a dataset folder: the tagger's tags become each image's caption file.

An image that already has a caption is skipped, overwritten, or gets the new tags appended (those it
does not have yet), as the user chooses. All captions are written together at the end as one undoable
edit (`edit.undo`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .edit import write_captions
from .files import (
    CAPTION_EXTENSION,
    caption_path,
    format_caption,
    list_images,
    read_caption_text,
    select_images,
)
from .preprocess import load_image
from .tagger import Prediction, Tagger, TagSettings
from .tagops import add_tags, put_first
from .tagtext import split_caption

EXISTING = ("skip", "overwrite", "append")


@dataclass
class TagFolderResult:
    provider: str
    predictions: dict[Path, Prediction] = field(default_factory=dict)  # per tagged image
    written: list[Path] = field(default_factory=list)  # caption files written
    skipped: list[Path] = field(default_factory=list)  # images that kept their caption
    errors: list[str] = field(default_factory=list)  # images that could not be read
    not_tagged: list[Path] = field(default_factory=list)  # left when the tagging was stopped

    def summary(self) -> str:
        text = (f"tagged {len(self.predictions)} image(s) on {self.provider}: wrote {len(self.written)} "
                f"caption(s), skipped {len(self.skipped)} with a caption")
        if self.not_tagged:
            text = f"stopped: {text}; {len(self.not_tagged)} image(s) not tagged"
        if self.errors:
            text += f"; {len(self.errors)} image(s) could not be read"
        return text


def tag_folder(folder: str | os.PathLike, tagger: Tagger, settings: TagSettings | None = None, *,
               existing: str = "skip", trigger: str | None = None, only: Sequence[str] | None = None,
               recursive: bool = False, extension: str = CAPTION_EXTENSION,
               progress: Callable[[int, int], None] | None = None,
               stop: threading.Event | None = None) -> TagFolderResult:
    """Tag the images of `folder` (or those matching `only`) and write their captions.
    `existing`: 'skip' (default), 'overwrite' or 'append'. `trigger`: put this word first in each
    caption written. `progress(done, total)` is called after each batch. `stop` (set from another
    thread) ends the tagging between batches: the captions of the images tagged so far are written,
    the rest are listed in `not_tagged`."""
    if existing not in EXISTING:
        raise ValueError(f"existing must be one of {', '.join(EXISTING)}, got {existing!r}")
    settings = settings or TagSettings()
    folder = Path(folder)
    result = TagFolderResult(tagger.provider)
    todo = []
    for image in select_images(list_images(folder, recursive), list(only) if only else None):
        if existing == "skip" and (read_caption_text(caption_path(image, extension)) or "").strip():
            result.skipped.append(image)
        else:
            todo.append(image)

    texts = {}
    for start in range(0, len(todo), tagger.batch_size):
        if stop is not None and stop.is_set():
            result.not_tagged = todo[start:]
            break
        loaded = []
        for image in todo[start:start + tagger.batch_size]:
            try:
                loaded.append((image, load_image(image)))
            except ValueError as e:
                result.errors.append(str(e))
        for (image, _), prediction in zip(loaded, tagger.tag([im for _, im in loaded], settings)):
            result.predictions[image] = prediction
            path = caption_path(image, extension)
            tags = prediction.tags()
            if existing == "append":
                tags = add_tags(split_caption(read_caption_text(path) or ""), tags)
            if trigger:
                tags = put_first(tags, trigger)
            texts[path] = format_caption(tags)
        if progress:
            progress(min(start + tagger.batch_size, len(todo)), len(todo))
    result.written = write_captions(folder, texts, f"auto-tag ({existing})")
    return result
