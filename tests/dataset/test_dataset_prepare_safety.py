"""prepare: captions kept byte for byte and never decoded with replacement characters, oversized
captions refused, every skipped input reported, names with control characters and bad --boxes files
refused with a message naming them."""

from __future__ import annotations

import codecs
import io
import zipfile

import pytest

from lora_trainer.cli import main
from lora_trainer.dataset.prepare import PrepareOptions, prepare
from lora_trainer.project import Project


def _photo(h, path, seed=1):
    h.photo(96, 80, seed).save(path)
    return path


def _by_source(report):
    return {e.source.rsplit("/", 1)[-1].rsplit(":", 1)[-1]: e for e in report.entries}


def test_captions_are_copied_byte_for_byte_and_decoded_or_refused(tmp_path, h):
    src = tmp_path / "in"
    src.mkdir()
    captions = {
        "utf8": "café, smile\n".encode(),
        "bom8": codecs.BOM_UTF8 + "café, smile\n".encode(),
        "utf16": "café, smile\n".encode("utf-16"),
        "utf16be": codecs.BOM_UTF16_BE + "café, smile\n".encode("utf-16-be"),
        "latin1": "café, smile\n".encode("latin-1"),
        "nobom16": "my caption\n".encode("utf-16-le"),
    }
    for i, (stem, data) in enumerate(captions.items()):
        _photo(h, src / f"{stem}.png", i + 1)
        (src / f"{stem}.txt").write_bytes(data)
    project = Project(tmp_path / "p", "myLoRA")
    report = prepare([src], project, PrepareOptions(size=64, workers=1))
    entries = _by_source(report)
    for stem in ("utf8", "bom8", "utf16", "utf16be"):
        assert entries[f"{stem}.png"].status == "ok"
        assert (project.sources / f"{stem}.txt").read_bytes() == captions[stem]  # a byte-for-byte copy
        assert (project.train_images / f"{stem}.txt").read_text(encoding="utf-8") == "café, smile\n"
    for stem, why in (("latin1", "latin1.txt: not UTF-8 text"), ("nobom16", "nobom16.txt: holds NUL bytes")):
        entry = entries[f"{stem}.png"]
        assert entry.status == "skipped" and why in entry.reason and "--caption-encoding" in entry.reason
        assert not (project.sources / f"{stem}.txt").exists() and not (project.train_images / f"{stem}.png").exists()
    assert not any("\ufffd" in p.read_text(encoding="utf-8") for p in project.train_images.glob("*.txt"))

    report = prepare([src / "latin1.png"], project, PrepareOptions(size=64, workers=1, caption_encoding="latin-1"))
    assert [e.status for e in report.entries] == ["ok"]
    assert (project.sources / "latin1.txt").read_bytes() == captions["latin1"]
    assert (project.train_images / "latin1.txt").read_text(encoding="utf-8") == "café, smile\n"
    with pytest.raises(ValueError, match="unknown text encoding"):
        PrepareOptions(caption_encoding="klingon")


def test_oversized_captions_are_refused_in_folders_and_zips(tmp_path, h):
    src = tmp_path / "in"
    src.mkdir()
    _photo(h, src / "big.png")
    (src / "big.txt").write_bytes(b"tag, " * 20000)
    buffer = io.BytesIO()
    h.photo(96, 80, 2).save(buffer, format="PNG")
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zipped.png", buffer.getvalue())
        z.writestr("zipped.txt", b"a" * (600 * 1024))  # compresses to a few hundred bytes
    project = Project(tmp_path / "p", "myLoRA")
    entries = _by_source(prepare([src, tmp_path / "bomb.zip"], project, PrepareOptions(size=64, workers=1)))
    for name, caption in (("big.png", "big.txt"), ("zipped.png", "bomb.zip:zipped.txt")):
        assert entries[name].status == "skipped" and f"{caption}: caption over 64 KB" in entries[name].reason
    assert list(project.train_images.iterdir()) == [] and list(project.sources.iterdir()) == []


def test_hidden_files_and_zips_inside_zips_get_a_report_line(tmp_path, h):
    src = tmp_path / "in"
    (src / ".thumbs").mkdir(parents=True)
    _photo(h, src / "ok.png")
    _photo(h, src / ".hidden.png", 2)
    _photo(h, src / ".thumbs" / "t.png", 3)
    (src / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # not a photo: no line
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("x.png", b"whatever")
    with zipfile.ZipFile(src / "outer.zip", "w") as z:
        z.writestr("inner.zip", inner.getvalue())
        z.writestr(".secret.png", b"whatever")
        z.writestr("__MACOSX/._ok.png", b"fork")
    report = prepare([src], Project(tmp_path / "p", "myLoRA"), PrepareOptions(size=64, workers=1))
    entries = _by_source(report)
    assert set(entries) == {"ok.png", ".hidden.png", "t.png", "inner.zip", ".secret.png"}
    assert entries["ok.png"].status == "ok"
    assert "hidden file" in entries[".hidden.png"].reason and "hidden file" in entries[".secret.png"].reason
    assert "hidden folder '.thumbs'" in entries["t.png"].reason
    assert entries["inner.zip"].status == "skipped" and "a zip inside a zip" in entries["inner.zip"].reason
    assert "SKIPPED" in report.to_text() and report.count("skipped") == 4


@pytest.mark.parametrize("name", ["abc\n", "a\tb", "x\u2028y"])
def test_names_with_control_characters_are_refused(tmp_path, h, name, capsys):
    _photo(h, tmp_path / "one.png")
    project = Project.__new__(Project)  # as any caller could build one, bypassing its own check
    object.__setattr__(project, "root", tmp_path / "p")
    object.__setattr__(project, "name", name)
    object.__setattr__(project, "repeats", 1)
    with pytest.raises(ValueError, match="control character"):
        prepare([tmp_path / "one.png"], project, PrepareOptions(size=64, workers=1))
    assert not (tmp_path / "p").exists()


def test_cli_boxes_file_errors_name_the_file(tmp_path, h, capsys):
    _photo(h, tmp_path / "one.png")
    boxes = tmp_path / "boxes.json"
    args = ["prepare", str(tmp_path / "one.png"), "--project", str(tmp_path / "p"), "--name", "x",
            "--boxes", str(boxes), "--workers", "1", "--size", "64"]
    boxes.write_text("", encoding="utf-8")
    assert main(args) == 2 and f"--boxes {boxes} is not valid JSON: Expecting value" in capsys.readouterr().err
    boxes.write_text('{"one": [0, 0, "a", 4]}', encoding="utf-8")
    assert main(args) == 2 and "'one'" in capsys.readouterr().err
    boxes.write_text('{"one": [0, 0, 40, 40]}', encoding="utf-16")
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args[:-4], "--caption-encoding", "nope"]) == 2
    assert "unknown text encoding 'nope'" in capsys.readouterr().err
