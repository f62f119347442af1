"""Framing (crop, fit, pad, buckets), edits with preview, face close-ups, and the CLI."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from lora_trainer.cli import main
from lora_trainer.dataset.closeups import closeup_box, closeups_needed, pick_closeups
from lora_trainer.dataset.edits import Edits, apply_edits, edit_files
from lora_trainer.dataset.framing import clamp_box, expand_box, fit_size, frame, subject_box
from lora_trainer.dataset.prepare import PrepareOptions, prepare
from lora_trainer.dataset.sources import NameAllocator, safe_stem
from lora_trainer.project import Project


def test_fit_pad_and_bucket():
    im = Image.new("RGB", (3000, 1500), (255, 255, 255))
    padded = frame(im, size=1024, fill=(1, 2, 3))
    assert padded.size == (1024, 1024) and padded.getpixel((0, 0)) == (1, 2, 3)
    assert padded.getpixel((512, 512)) == (255, 255, 255)
    assert frame(im, size=1024, mode="bucket").size == (1024, 512)
    assert fit_size((500, 400), (1024, 1024)) == (500, 400)
    assert fit_size((500, 400), (1024, 1024), upscale=True) == (1024, 819)
    assert frame(im, size=1024, mode="bucket", box=(0, 0, 500, 1000)).size == (500, 1000)
    with pytest.raises(ValueError, match="outside"):
        clamp_box((4000, 0, 5000, 10), im.size)


def test_boxes():
    assert expand_box((100, 100, 200, 200), 0.5, (1000, 1000), square=True) == (50, 50, 250, 250)
    assert expand_box((0, 0, 100, 100), 0.5, (1000, 1000), square=True) == (0, 0, 200, 200)  # shifted in
    mask = Image.new("L", (400, 400), 0)
    mask.paste(255, (100, 150, 200, 350))
    assert subject_box(mask, margin=0) == (100, 150, 200, 350)
    assert subject_box(Image.new("L", (10, 10), 0)) is None


def test_edits_preview_changes_nothing_on_disk(tmp_path, h):
    src = tmp_path / "a.png"
    h.photo(300, 200, 1).save(src)
    before = src.read_bytes()
    im = Image.open(src)
    preview = apply_edits(im, Edits(brightness=1.3, contrast=1.2, saturation=0.5, sharpen=80, autolevel=True))
    assert preview.size == im.size and preview.tobytes() != im.convert("RGB").tobytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"] and src.read_bytes() == before
    grey = apply_edits(im, Edits(saturation=0.0))
    r, g, b = grey.getpixel((10, 10))
    assert abs(r - g) <= 1 and abs(g - b) <= 1
    assert apply_edits(im, Edits()).tobytes() == im.convert("RGB").tobytes() and Edits().is_identity
    written = edit_files([src], Edits(brightness=0.5), tmp_path / "out")
    assert written == [tmp_path / "out" / "a.png"] and src.read_bytes() == before
    with pytest.raises(ValueError, match="brightness"):
        Edits(brightness=-1)


def test_closeup_choice():
    assert closeups_needed(["half body"] * 6) == 3  # (0 + 3) / (6 + 3) = 1/3
    assert closeups_needed(["close-up"] * 2 + ["full body"] * 4) == 0
    assert closeups_needed(["close-up"] + ["full body"] * 5) == 2  # 3 of 8
    assert closeups_needed(["close-up"] * 3 + ["full body"] * 3) == 0
    size = (2000, 3000)
    candidates = [(f"i{k}", "full body", (900, 400, 900 + s, 400 + s), size) for k, s in enumerate((300, 400, 200))]
    candidates.append(("c", "close-up", (0, 0, 1500, 1500), size))
    assert list(pick_closeups(candidates, "auto")) == ["i1"]  # 1 of 4 close-ups -> 1 more, largest face
    assert set(pick_closeups(candidates, "all")) == {"i0", "i1", "i2"}
    assert pick_closeups(candidates, "all", min_side=500) == {"i0": closeup_box((900, 400, 1200, 700), size),
                                                              "i1": closeup_box((900, 400, 1300, 800), size)}
    assert pick_closeups(candidates, "off") == {}


def test_prepare_adds_face_closeups_with_the_real_cascade(tmp_path, h):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        h.face_image(1600, 2400, 800, 500, 330, background=(90, 110 + 10 * i, 140)).save(src / f"body{i}.jpg")
    project = Project(tmp_path / "p", "x")
    # the face crops are 726 px: made at the 1024 px training size only when enlarging is allowed
    report = prepare([src], project, PrepareOptions(closeups="auto", workers=1))
    assert report.count("close-up") == 0 and report.count("close-up skipped") == 2, report.to_text()
    report = prepare([src], project, PrepareOptions(closeups="auto", workers=1, upscale=True))
    shots = [e.shot for e in report.entries if e.status == "ok"]
    assert shots == ["half body"] * 3, report.to_text()
    extra = [e for e in report.entries if e.status == "close-up"]
    assert len(extra) == 2 and {e.name for e in extra} < {"body0_closeup", "body1_closeup", "body2_closeup"}
    out = Image.open(extra[0].output)
    assert out.size == (1024, 1024) and out.mode == "RGB"
    assert not (project.train_images / "body0_closeup.txt").exists()


def test_safe_stable_names():
    assert safe_stem("../../etc/passwd") == "etc_passwd"
    assert safe_stem("Ünïcödé photo (1)") == "Unicode_photo_1"
    assert safe_stem(".hidden") == "hidden" and safe_stem("???") == "image"
    names = NameAllocator()
    assert names.allocate("a", "0" * 64) == "a"
    assert names.allocate("A", "1234abcd" + "0" * 56) == "A-1234abcd"


def test_cli_prepare_and_audit(tmp_path, h, capsys):
    src = tmp_path / "in"
    src.mkdir()
    h.photo(1200, 1000, 1).save(src / "one.jpg")
    (src / "broken.png").write_bytes(b"")
    rc = main(["prepare", str(src), "--project", str(tmp_path / "p"), "--name", "myLoRA", "--repeats", "3",
               "--fill", "#ff0000", "--workers", "1", "--sharpen", "50"])
    out = capsys.readouterr().out
    assert rc == 0 and "SKIPPED" in out and "broken.png: zero bytes" in out
    assert Image.open(tmp_path / "p/img/3_myLoRA/one.png").size == (1024, 1024)
    rc = main(["audit", str(tmp_path / "p/img/3_myLoRA"), "--output", str(tmp_path / "audit.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "Audit of" in out and "the guide asks for at least 64" in out
    assert json.loads((tmp_path / "audit.json").read_text())["count"] == 1
    rc = main(["prepare", str(tmp_path / "missing"), "--project", str(tmp_path / "p"), "--name", "myLoRA"])
    assert rc == 2 and "input not found" in capsys.readouterr().err
    rc = main(["background", str(src / "one.jpg"), "--output", str(tmp_path / "bg"), "--model", "u2net"])
    assert rc == 2 and "u2net.onnx not found in" in capsys.readouterr().err
