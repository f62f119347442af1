"""What a resume must match: the training images and captions a stopped run trained on (recorded in
its state folder as `dataset.json`) against the folder as it is now. The trainer refuses a resume
whose dataset changed unless told to go on; the UI's runner asks the same question before it
launches anything, so it can offer that choice. No torch here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lora_trainer.images import list_images

DATASET_FILE = "dataset.json"  # in the state folder: the training images and captions it was trained on


def dataset_record(train_data_dir: str | Path, caption_extension: str) -> dict:
    """Each training image (path relative to `train_data_dir`, '/'-separated) with its size, its
    modification time and its caption's SHA-256 (None without a caption)."""
    root = Path(train_data_dir)
    if not caption_extension.startswith("."):
        caption_extension = "." + caption_extension
    record = {}
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return {}
    for folder in folders:
        try:
            images = list_images(folder)
        except OSError:
            continue
        for image in images:
            try:
                st = image.stat()
            except OSError:
                continue
            try:
                caption = hashlib.sha256(image.with_suffix(caption_extension).read_bytes()).hexdigest()
            except OSError:
                caption = None
            record[image.relative_to(root).as_posix()] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                                          "caption": caption}
    return record


def dataset_changes(saved: dict, current: dict) -> list[str]:
    """What differs between two `dataset_record`s, one line per file ('added', 'removed', 'changed')."""
    changes = [f"removed: {name}" for name in sorted(set(saved) - set(current))]
    changes += [f"added: {name}" for name in sorted(set(current) - set(saved))]
    for name in sorted(set(saved) & set(current)):
        before, now = saved[name], current[name]
        if not isinstance(before, dict):
            changes.append(f"changed image: {name}")
            continue
        if (before.get("size"), before.get("mtime_ns")) != (now["size"], now["mtime_ns"]):
            changes.append(f"changed image: {name}")
        if before.get("caption") != now["caption"]:
            changes.append(f"changed caption: {name}")
    return changes


def list_changes(changes: list[str], most: int = 20) -> str:
    shown = "; ".join(changes[:most])
    return shown + (f"; and {len(changes) - most} more" if len(changes) > most else "")


def changed_dataset_message(changes: list[str], how_to_go_on: str) -> str:
    """Why a resume with these dataset changes is refused, and the three ways on (the last depends on
    who asks: the command line's flag or the UI's button)."""
    return (f"the training images or captions changed since the run stopped ({len(changes)} change(s): "
            f"{list_changes(changes)}). A resumed run would no longer match one that never stopped (other "
            f"steps per epoch, another order): put the files back, start a new run, or {how_to_go_on}")


def changes_since_stop(state_dir: str | Path, train_data_dir: str | Path, caption_extension: str) -> list[str]:
    """What changed in the training folder since the state in `state_dir` was saved ([] when nothing
    did, or the state has no record: a state from before records existed resumes as it always did)."""
    try:
        saved = json.loads((Path(state_dir) / DATASET_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(saved, dict):
        return []
    return dataset_changes(saved, dataset_record(train_data_dir, caption_extension))
