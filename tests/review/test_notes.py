"""review/notes.py: ratings and notes per epoch in <run folder>/review.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lora_trainer.review import notes as N
from lora_trainer.review.notes import EpochNotes


def test_round_trip(tmp_path):
    assert N.load_notes(tmp_path) == {}
    N.save_note(tmp_path, 3, rating=4, note="good likeness, hands off")
    N.save_note(tmp_path, 6, note="sharper\nbut stiff")
    assert N.load_notes(tmp_path) == {3: EpochNotes(3, 4, "good likeness, hands off", False),
                                      6: EpochNotes(6, None, "sharper\nbut stiff", False)}
    N.save_note(tmp_path, 3, rating=5)  # the note stays
    N.save_note(tmp_path, 6, rating=2)
    N.save_note(tmp_path, 6, rating=None)  # cleared
    assert N.load_notes(tmp_path) == {3: EpochNotes(3, 5, "good likeness, hands off", False),
                                      6: EpochNotes(6, None, "sharper\nbut stiff", False)}
    assert json.loads((tmp_path / "review.json").read_text())["version"] == N.NOTES_VERSION


def test_survives_a_restart(tmp_path):
    N.save_note(tmp_path, 12, rating=5, note="the one: ünïcode ok", chosen=True)
    code = ("import sys; from lora_trainer.review.notes import load_notes; "
            "n = load_notes(sys.argv[1])[12]; print(n.rating, n.chosen, n.note)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert out.stdout.strip() == "5 True the one: ünïcode ok"


def test_chosen_is_exclusive(tmp_path):
    N.save_note(tmp_path, 3, chosen=True)
    N.save_note(tmp_path, 5, rating=3)
    notes = N.save_note(tmp_path, 8, chosen=True)
    assert N.chosen_epoch(notes) == 8
    loaded = N.load_notes(tmp_path)
    assert [e for e, n in loaded.items() if n.chosen] == [8]
    assert loaded[5].rating == 3 and loaded[3] == EpochNotes(3)
    N.save_note(tmp_path, 8, chosen=False)
    assert N.chosen_epoch(N.load_notes(tmp_path)) is None


@pytest.mark.parametrize("content", ["{not json", '{"version": 1, "epochs": []}',
                                     '{"version": 1, "epochs": {"3": {"rating": 9}}}',
                                     '{"version": 1, "epochs": {"3": {"chosen": true}, "4": {"chosen": true}}}'])
def test_damaged_file_is_reported_then_recovered(tmp_path, content):
    path = tmp_path / "review.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(N.DamagedNotes, match="review.json") as raised:
        N.load_notes(tmp_path)
    assert raised.value.path == path
    with pytest.raises(N.DamagedNotes):
        N.save_note(tmp_path, 1, rating=3)  # never written over
    assert path.read_text(encoding="utf-8") == content
    assert N.load_notes(tmp_path, recover=True) == {}
    aside = list(tmp_path.glob("review.json.bad-*"))
    assert len(aside) == 1 and aside[0].read_text(encoding="utf-8") == content
    assert not path.exists()
    N.save_note(tmp_path, 1, rating=3)
    assert N.load_notes(tmp_path) == {1: EpochNotes(1, 3)}


def test_binary_garbage_is_damaged(tmp_path):
    (tmp_path / "review.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(N.DamagedNotes, match="UTF-8"):
        N.load_notes(tmp_path)


@pytest.mark.parametrize("rating", [0, 6, -1, 2.5, "4", True])
def test_bad_rating_refused(tmp_path, rating):
    with pytest.raises(N.NotesError, match="rating"):
        N.save_note(tmp_path, 2, rating=rating)
    assert not (tmp_path / "review.json").exists()


def test_note_length_and_epoch_checked(tmp_path):
    N.save_note(tmp_path, 2, note="x" * N.MAX_NOTE)
    with pytest.raises(N.NotesError, match="2000"):
        N.save_note(tmp_path, 2, note="x" * (N.MAX_NOTE + 1))
    with pytest.raises(N.NotesError, match="epoch"):
        N.save_note(tmp_path, -1, rating=3)
    assert N.load_notes(tmp_path)[2].note == "x" * N.MAX_NOTE


def test_written_atomically_and_readable(tmp_path):
    old = os.umask(0o022)
    try:
        N.save_note(tmp_path, 1, rating=1)
    finally:
        os.umask(old)
    assert (tmp_path / "review.json").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["review.json"]
