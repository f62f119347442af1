"""A rating and a note per epoch, kept with the run (`<run folder>/review.json`) so they are there
tomorrow ("Give it a day, and test again"). One epoch per run can be the chosen one.

A damaged review.json is never silently emptied: `load_notes` raises `DamagedNotes` naming the file;
`load_notes(run_dir, recover=True)` keeps it aside as `review.json.bad-<YYYYmmdd-HHMMSS>` and starts
afresh. No torch.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lora_trainer.fsutil import write_json_atomic

NOTES_FILE = "review.json"
NOTES_VERSION = 1
MAX_NOTE = 2000
RATINGS = range(1, 6)

_UNCHANGED = object()
_LOCK = threading.Lock()  # one read-modify-write at a time within a process


class NotesError(ValueError):
    """A rating or note out of range, or a damaged review.json (the message names the file)."""


class DamagedNotes(NotesError):
    def __init__(self, path: Path, why: str):
        self.path = Path(path)
        super().__init__(f"{path} is damaged ({why}); nothing was changed. Load it with recover=True "
                         f"(Start afresh) to keep it aside as {path.name}.bad-<time> and begin a new one")


@dataclass(frozen=True)
class EpochNotes:
    epoch: int
    rating: int | None = None  # 1..5
    note: str = ""
    chosen: bool = False


def notes_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / NOTES_FILE


def _check(epoch, rating, note) -> None:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise NotesError(f"epoch must be a whole number, 0 or more, not {epoch!r}")
    if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int) or rating not in RATINGS):
        raise NotesError(f"a rating is 1 to 5 (or none), not {rating!r}")
    if not isinstance(note, str):
        raise NotesError(f"a note is text, not {type(note).__name__}")
    if len(note) > MAX_NOTE:
        raise NotesError(f"a note holds at most {MAX_NOTE} characters, this one has {len(note)}")


def _parse(path: Path, text: str) -> dict[int, EpochNotes]:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise DamagedNotes(path, f"not JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("epochs"), dict):
        raise DamagedNotes(path, "no \"epochs\" object")
    if data.get("version") != NOTES_VERSION:
        raise DamagedNotes(path, f"unknown version {data.get('version')!r}")
    notes: dict[int, EpochNotes] = {}
    for key, entry in data["epochs"].items():
        try:
            epoch = int(key)
            if not isinstance(entry, dict) or str(epoch) != key:
                raise ValueError
            item = EpochNotes(epoch, entry.get("rating"), entry.get("note", ""), entry.get("chosen", False))
            _check(item.epoch, item.rating, item.note)
            if not isinstance(item.chosen, bool):
                raise ValueError
        except (ValueError, TypeError):
            raise DamagedNotes(path, f"epoch entry {key!r} is not valid") from None
        notes[epoch] = item
    if sum(n.chosen for n in notes.values()) > 1:
        raise DamagedNotes(path, "more than one epoch is chosen")
    return notes


def _set_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.bad-{stamp}")
    n = 2
    while aside.exists():
        aside = path.with_name(f"{path.name}.bad-{stamp}-{n}")
        n += 1
    path.rename(aside)
    return aside


def load_notes(run_dir: str | Path, recover: bool = False) -> dict[int, EpochNotes]:
    """The notes kept for the run in `run_dir`, by epoch ({} when there are none yet). A damaged
    review.json raises DamagedNotes; with `recover`, it is moved aside (review.json.bad-<time>) and
    the notes start empty."""
    path = notes_file(run_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError:
        text = None
    except OSError as e:
        raise NotesError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        if text is None:
            raise DamagedNotes(path, "not UTF-8 text")
        return _parse(path, text)
    except DamagedNotes:
        if not recover:
            raise
        _set_aside(path)
        return {}


def _write(run_dir: Path, notes: dict[int, EpochNotes]) -> None:
    data = {"version": NOTES_VERSION,
            "epochs": {str(e): {k: v for k, v in asdict(n).items() if k != "epoch"}
                       for e, n in sorted(notes.items())}}
    write_json_atomic(notes_file(run_dir), data)


def save_note(run_dir: str | Path, epoch: int, rating=_UNCHANGED, note=_UNCHANGED,
              chosen: bool | None = None) -> dict[int, EpochNotes]:
    """Set an epoch's rating (1..5, None clears it), note and/or chosen mark (choosing one unchooses
    every other epoch; chosen=False unchooses this one); what is not given stays. Returns all notes."""
    with _LOCK:
        notes = load_notes(run_dir)
        old = notes.get(epoch, EpochNotes(epoch)) if isinstance(epoch, int) else EpochNotes(0)
        new = EpochNotes(epoch,
                         old.rating if rating is _UNCHANGED else rating,
                         old.note if note is _UNCHANGED else note,
                         old.chosen if chosen is None else bool(chosen))
        _check(new.epoch, new.rating, new.note)
        if new.chosen:
            notes = {e: EpochNotes(n.epoch, n.rating, n.note, False) for e, n in notes.items()}
        notes[epoch] = new
        _write(Path(run_dir), notes)
        return notes


def chosen_epoch(notes: dict[int, EpochNotes]) -> int | None:
    return next((e for e, n in notes.items() if n.chosen), None)
