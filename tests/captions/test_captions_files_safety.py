"""Caption files: nothing written outside the dataset folder, nothing decoded with replacement
characters, nothing oversized read."""

from __future__ import annotations

import codecs
import json

import pytest

from lora_trainer.captions import read_caption, set_caption, undo
from lora_trainer.captions.edit import JOURNAL
from lora_trainer.captions.encoding import MAX_CAPTION_BYTES, CaptionFileError, decode_text


def _plant_journal(folder, entries):
    (folder / JOURNAL).write_text(json.dumps({"label": "planted", "files": entries}), encoding="utf-8")


def test_undo_refuses_a_journal_naming_files_outside_the_folder(dataset):
    victim = dataset.parent / "victim"
    victim.mkdir()
    (victim / "important.txt").write_text("keep me\n", encoding="utf-8")
    _plant_journal(dataset, [
        {"path": "a.txt", "before": "x\n", "after": (dataset / "a.txt").read_text(encoding="utf-8")},
        {"path": "../victim/important.txt", "before": "pwned\n", "after": "keep me\n"},
        {"path": "../victim/created.txt", "before": "new\n", "after": None},
    ])
    before = {p.name: p.read_bytes() for p in dataset.iterdir()}
    with pytest.raises(ValueError, match=r"\.\./victim/important\.txt.*refused, nothing was changed"):
        undo(dataset, force=True)
    assert (victim / "important.txt").read_text(encoding="utf-8") == "keep me\n"
    assert not (victim / "created.txt").exists()
    assert {p.name: p.read_bytes() for p in dataset.iterdir()} == before  # a.txt untouched too


@pytest.mark.parametrize("path", ["/tmp/absolute.txt", "link/escape.txt", JOURNAL, "."])
def test_undo_refuses_absolute_symlinked_and_own_paths(dataset, tmp_path, path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (dataset / "link").symlink_to(outside, target_is_directory=True)
    _plant_journal(dataset, [{"path": path, "before": "pwned\n", "after": None}])
    with pytest.raises(ValueError, match="refused"):
        undo(dataset, force=True)
    assert list(outside.iterdir()) == []
    assert (dataset / JOURNAL).exists()


def test_undo_refuses_a_journal_with_wrong_types(dataset):
    _plant_journal(dataset, [{"path": 5, "before": None, "after": None}])
    with pytest.raises(ValueError, match="expected format"):
        undo(dataset)


def test_set_caption_refuses_an_image_outside_the_folder(dataset):
    with pytest.raises(ValueError, match="not inside the dataset folder"):
        set_caption(dataset, "../elsewhere.png", ["x"])


@pytest.mark.parametrize("data", [
    "\ufeffcafé, smile".encode(), "café, smile".encode("utf-16"), "café, smile".encode(),
    codecs.BOM_UTF16_LE + "café, smile".encode("utf-16-le"), codecs.BOM_UTF16_BE + "café, smile".encode("utf-16-be"),
])
def test_caption_encodings_recognised(data):
    assert decode_text(data, "x.txt") == "café, smile"


def test_undecodable_captions_are_refused_by_name(dataset):
    (dataset / "a.txt").write_bytes("café, smile".encode("latin-1"))
    with pytest.raises(CaptionFileError, match=r"a\.txt: not UTF-8 text"):
        read_caption(dataset / "a.png")
    (dataset / "a.txt").write_bytes("my caption".encode("utf-16-le"))  # no BOM
    with pytest.raises(CaptionFileError, match=r"a\.txt: holds NUL bytes"):
        read_caption(dataset / "a.png")
    assert decode_text("café".encode("latin-1"), "a.txt", "latin-1") == "café"
    with pytest.raises(ValueError, match="unknown text encoding"):
        decode_text(b"x", "a.txt", "no-such-codec")


def test_an_oversized_caption_is_refused_by_name(dataset):
    (dataset / "a.txt").write_bytes(b"tag, " * (MAX_CAPTION_BYTES // 5 + 1))
    with pytest.raises(CaptionFileError, match=r"a\.txt: caption over 64 KB"):
        read_caption(dataset / "a.png")
