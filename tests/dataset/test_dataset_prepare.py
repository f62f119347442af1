"""The odd-case corpus through `prepare`: a report line for every file, 1024x1024 (or bucket-sized) RGB
PNGs for the good ones, and every source byte-identical afterwards."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from lora_trainer.dataset.prepare import REPORT_NAME, PrepareOptions, prepare
from lora_trainer.project import Project


def _by_source(report, corpus):
    out = {}
    for e in report.entries:
        key = e.source.replace(str(corpus) + "/", "")
        out[key] = e
    return out


def test_corpus_pad_mode(corpus, tmp_path, h):
    before = h.hash_tree(corpus)
    project = Project(tmp_path / "proj", "myLoRA", repeats=2)
    report = prepare([corpus], project, PrepareOptions(workers=2))
    assert h.hash_tree(corpus) == before, "an input file was modified"

    entries = _by_source(report, corpus)
    assert set(entries) == set(h.expected), report.to_text()
    for source, problem in h.expected.items():
        e = entries[source]
        if problem is None:
            assert e.status == "ok", e.line()
            out = Image.open(e.output)
            assert (out.mode, out.size, out.format) == ("RGB", (1024, 1024), "PNG"), source
            assert out.getbands() == ("R", "G", "B")
        else:
            assert e.status in ("skipped", "duplicate"), e.line()
            assert problem in e.reason, e.line()
            assert e.source in e.line() and problem in e.line()

    assert project.train_images == tmp_path / "proj/img/2_myLoRA"
    assert "900 x" not in entries["huge.png"].reason  # the header size and the limit are stated
    assert "100000 x 100000" in entries["huge.png"].reason or "limit" in entries["huge.png"].reason
    assert entries["exif_rotated.jpg"].size == [1200, 1600]
    assert any("EXIF orientation 6" in n for n in entries["exif_rotated.jpg"].notes)
    assert any("CMYK" in n for n in entries["cmyk.jpg"].notes)
    assert any("16-bit" in n for n in entries["gray16.png"].notes)
    assert any("transparency composited on (128, 128, 128)" in n for n in entries["palette_alpha.png"].notes)
    assert any("3 frames" in n for n in entries["animated.gif"].notes)
    assert any("ICC profile ignored" in n for n in entries["bad_icc.jpg"].notes)
    assert "cmyk.jpg" in entries["copy_of_cmyk.jpg"].reason

    # names are safe and stable; the zip's "../" trick stays inside the project
    names = sorted(p.name for p in project.train_images.iterdir())
    assert "evil_name.png" in names and "zip_photo.png" in names
    assert all(not n.startswith(".") and "/" not in n and " " not in n for n in names)
    assert not (tmp_path / "proj" / "evil name.jpg").exists()
    # captions kept beside the images (from a folder and from the zip)
    assert (project.train_images / "exif_rotated.txt").read_text() == "myLoRA, standing, outdoors"
    assert (project.train_images / "zip_photo.txt").read_text() == "myLoRA, from a zip"
    # sources are kept byte for byte
    assert (project.sources / "cmyk.jpg").read_bytes() == (corpus / "cmyk.jpg").read_bytes()
    assert not (project.sources / "truncated.jpg").exists()
    saved = json.loads((project.root / REPORT_NAME).read_text())
    assert saved["counts"] == {"ok": 12, "close-up": 0, "duplicate": 1, "skipped": 5,
                                  "close-up skipped": 0, "too small": 0}

    # a second run gives the same names and does not duplicate the sources
    first = h.hash_tree(project.train_images)
    again = prepare([corpus], project, PrepareOptions(workers=1))
    assert sorted(e.name for e in again.entries if e.status == "ok") == \
        sorted(e.name for e in report.entries if e.status == "ok")
    assert h.hash_tree(project.train_images) == first
    assert len([p for p in project.sources.iterdir() if p.suffix != ".txt"]) == 12


def test_exif_rotation_content_is_upright(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    im = Image.new("RGB", (1200, 600), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 600, 600))  # red on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # viewer rotates 90 degrees clockwise: the left side goes to the top
    im.save(src / "r.jpg", quality=95, exif=exif.tobytes())
    report = prepare([src], Project(tmp_path / "p", "x"), PrepareOptions(mode="bucket", workers=1))
    out = Image.open(report.entries[0].output)
    assert out.size == (512, 1024)
    top, bottom = out.getpixel((256, 100)), out.getpixel((256, 900))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200


def test_bucket_mode_keeps_aspect_and_never_upscales(tmp_path, h):
    src = tmp_path / "in"
    src.mkdir()
    h.photo(2000, 1000, 1).save(src / "wide.jpg")
    h.photo(600, 800, 2).save(src / "small.png")
    project = Project(tmp_path / "p", "x")
    report = prepare([src], project, PrepareOptions(mode="bucket", workers=1))
    sizes = {e.name: Image.open(e.output).size for e in report.entries}
    assert sizes == {"wide": (1024, 512), "small": (600, 800)}
    report = prepare([], project, PrepareOptions(mode="bucket", upscale=True, workers=1))
    sizes = {e.name: Image.open(e.output).size for e in report.entries}
    assert sizes == {"wide": (1024, 512), "small": (768, 1024)}


def test_pad_fill_colour_and_manual_box(tmp_path, h):
    src = tmp_path / "in"
    src.mkdir()
    h.photo(2000, 1000, 1).save(src / "wide.png")
    project = Project(tmp_path / "p", "x")
    report = prepare([src], project, PrepareOptions(fill=(255, 0, 0), workers=1))
    out = Image.open(report.entries[0].output)
    assert out.getpixel((512, 5)) == (255, 0, 0) and out.getpixel((512, 1018)) == (255, 0, 0)
    report = prepare([], project, PrepareOptions(workers=1, mode="bucket"), boxes={"wide": (100, 100, 700, 500)})
    assert Image.open(report.entries[0].output).size == (600, 400)


def test_decompression_bomb_limit_is_stated(tmp_path, h):
    src = tmp_path / "in"
    src.mkdir()
    h.photo(1200, 1000, 1).save(src / "a.png")
    report = prepare([src], Project(tmp_path / "p", "x"), PrepareOptions(max_pixels=1_000_000, workers=1))
    e = report.entries[0]
    assert e.status == "skipped"
    assert e.reason == "decompression bomb: 1200 x 1000 = 1 MP is over the limit of 1 MP"


def test_list_of_files_and_missing_input(tmp_path, h):
    h.photo(1100, 1100, 1).save(tmp_path / "one.jpg")
    project = Project(tmp_path / "p", "x")
    report = prepare([tmp_path / "one.jpg"], project, PrepareOptions(workers=1))
    assert [e.status for e in report.entries] == ["ok"]
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        prepare([tmp_path / "missing.jpg"], project, PrepareOptions(workers=1))


def test_options_are_validated():
    with pytest.raises(ValueError, match="mode"):
        PrepareOptions(mode="stretch")
    with pytest.raises(ValueError, match="needs the background mask"):
        PrepareOptions(crop="subject")
    with pytest.raises(ValueError, match="fill"):
        PrepareOptions(fill=(300, 0, 0))
