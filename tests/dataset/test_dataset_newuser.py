"""What a new user hit in the dataset commands: a missing background model found only after minutes of
work, masks imported as photos, small photos padded silently, prepare and audit counting close-ups
differently, the copy kept instead of the original among duplicates, flat photos called blurry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lora_trainer.cli import main
from lora_trainer.dataset.background import ModelMissingError, check_model
from lora_trainer.dataset.prepare import PrepareOptions, prepare
from lora_trainer.project import Project

ROOT = Path(__file__).resolve().parents[2]

_OFFLINE_PREPARE = """
import sys, time
from lora_trainer.cli import main
t = time.perf_counter()
rc = main(sys.argv[1:])
print(f"RESULT rc={rc} seconds={time.perf_counter() - t:.3f} rembg={'rembg' in sys.modules}")
"""


def test_prepare_remove_background_without_the_model_fails_at_once(tmp_path, h):
    """Offline, no u2net.onnx: the command fails within a second, before rembg is even imported (that
    alone takes up to a minute), naming the file, the folder and where to get it; nothing is written."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(12):
        h.photo(900, 1200, i).save(src / f"IMG_{i:04}.jpg")
    empty = tmp_path / "u2net-home"
    empty.mkdir()
    project = tmp_path / "proj"
    env = dict(os.environ, U2NET_HOME=str(empty), PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-c", _OFFLINE_PREPARE, "prepare", str(src), "--project", str(project),
                          "--name", "myLoRA", "--remove-background"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    result = run.stdout.strip().splitlines()[-1]
    assert result.startswith("RESULT rc=2 ") and result.endswith("rembg=False"), (result, run.stderr)
    assert float(result.split("seconds=")[1].split()[0]) < 1.0, result
    err = run.stderr
    assert f"u2net.onnx not found in {empty}" in err, err
    assert "https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net.onnx (176 MB)" in err
    assert "U2NET_HOME" in err and "--download-model" in err
    assert not project.exists()
    assert sorted(p.name for p in src.iterdir()) == [f"IMG_{i:04}.jpg" for i in range(12)]


def test_background_command_without_the_model_writes_nothing(tmp_path, h, monkeypatch, capsys):
    src = tmp_path / "in"
    src.mkdir()
    h.photo(300, 300, 1).save(src / "a.jpg")
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "models"))
    rc = main(["background", str(src), "--output", str(tmp_path / "out"), "--model", "isnet-general-use"])
    err = capsys.readouterr().err
    assert rc == 2 and f"isnet-general-use.onnx not found in {tmp_path / 'models'}" in err
    assert "releases/download/v0.0.0/isnet-general-use.onnx (179 MB)" in err
    assert not (tmp_path / "out").exists()
    # a release file saved under another name is said so; an .onnx path that is not there is named
    with pytest.raises(ModelMissingError, match="BiRefNet-portrait-epoch_150.onnx and save it as "
                                                "birefnet-portrait.onnx there"):
        check_model("birefnet-portrait")
    with pytest.raises(ModelMissingError, match=f"rembg model file {tmp_path / 'x.onnx'} does not exist"):
        check_model(str(tmp_path / "x.onnx"))
    with pytest.raises(ModelMissingError):
        prepare([src], Project(tmp_path / "p", "x"), PrepareOptions(background=True, background_model="u2netp"))
    assert not (tmp_path / "p").exists()


TINY = ROOT / "tests" / "assets" / "tiny_segmenter.onnx"


def _subject(seed: int) -> Image.Image:
    im = Image.new("RGB", (400, 300), (40, 160, 90 + seed))
    im.paste((230, 30, 30), (150, 75, 250, 225))
    return im


def test_background_output_then_prepare_skips_the_masks(tmp_path, capsys):
    """`background` writes <stem>.png + <stem>_mask.png; prepare on that folder imports the photos only,
    and names each mask as skipped, with the reason; audit and edit leave the masks alone too."""
    from lora_trainer.dataset.audit import audit_folder
    from lora_trainer.dataset.background import MASK_REASON, remove_backgrounds

    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        _subject(i).save(src / f"p{i}.jpg")
    records = remove_backgrounds(sorted(src.iterdir()), tmp_path / "bg", model=str(TINY), seed=1)
    assert sorted(p.name for p in (tmp_path / "bg").iterdir()) == [
        "p0.png", "p0_mask.png", "p1.png", "p1_mask.png", "p2.png", "p2_mask.png"]
    # a photo whose name merely ends in _mask (no <stem>.png beside it) is a photo
    _subject(9).save(tmp_path / "bg" / "carnival_mask.png")

    project = Project(tmp_path / "p", "x")
    report = prepare([tmp_path / "bg"], project, PrepareOptions(workers=1, size=256))
    skipped = {Path(e.source).name: e.reason for e in report.entries if e.status == "skipped"}
    assert skipped == {f"p{i}_mask.png": MASK_REASON for i in range(3)}
    assert MASK_REASON == "a mask written by the background step, not a photo"
    assert sorted(p.name for p in project.train_images.glob("*.png")) == [
        "carnival_mask.png", "p0.png", "p1.png", "p2.png"]
    text = report.to_text()
    assert f"SKIPPED   {records[0]['mask']}: {MASK_REASON}" in text
    assert "4 image(s) prepared, 0 close-up(s) added, 0 duplicate(s) and 3 file(s) skipped" in text

    audit = audit_folder(tmp_path / "bg", detector=lambda im: [])
    assert sorted(i.name for i in audit.images) == ["carnival_mask.png", "p0.png", "p1.png", "p2.png"]
    assert [s["name"] for s in audit.skipped] == ["p0_mask.png", "p1_mask.png", "p2_mask.png"]
    assert f"p0_mask.png: {MASK_REASON}" in audit.to_text()

    assert main(["edit", str(tmp_path / "bg"), "--output", str(tmp_path / "edited"), "--contrast", "1.1"]) == 0
    assert sorted(p.name for p in (tmp_path / "edited").iterdir()) == [
        "carnival_mask.png", "p0.png", "p1.png", "p2.png"]


def test_duplicates_keep_the_original_name(tmp_path, h):
    """`IMG_0003 (copy).jpg` sorts before `IMG_0003.jpg`; the original is kept all the same, and the
    report says which file was dropped as a duplicate of which."""
    src = tmp_path / "in"
    src.mkdir()
    pairs = {"IMG_0003": ["IMG_0003 (copy)", "IMG_0003 - Copy", "IMG_0003(1)"], "beach": ["beach-1"],
             "holiday": ["DSC copy 2", "Copy of holiday"]}
    for seed, (original, copies) in enumerate(pairs.items()):
        h.photo(320, 240, seed).save(src / f"{original}.jpg", quality=90)
        for copy in copies:
            (src / f"{copy}.jpg").write_bytes((src / f"{original}.jpg").read_bytes())
    project = Project(tmp_path / "p", "x")
    report = prepare([src], project, PrepareOptions(workers=1, size=256))
    kept = sorted(Path(e.source).name for e in report.entries if e.status == "ok")
    assert kept == ["IMG_0003.jpg", "beach.jpg", "holiday.jpg"]
    dropped = {Path(e.source).name: e.reason for e in report.entries if e.status == "duplicate"}
    for original, copies in pairs.items():
        for copy in copies:
            assert dropped[f"{copy}.jpg"] == f"a duplicate of {src / original}.jpg (same content), which is kept"
    assert sorted(p.name for p in project.sources.iterdir()) == ["IMG_0003.jpg", "beach.jpg", "holiday.jpg"]
    assert f"DUPLICATE {src / 'IMG_0003 (copy).jpg'}: a duplicate of {src / 'IMG_0003.jpg'}" in report.to_text()


FACE = (255, 0, 255)  # a magenta square stands for a face: found the same way in a source and in its output


def magenta_faces(im: Image.Image) -> list[tuple[int, int, int, int]]:
    import numpy as np

    a = np.asarray(im.convert("RGB")).astype(int)
    hit = (np.abs(a - FACE).max(axis=-1) < 60)
    if not hit.any():
        return []
    rows, cols = np.flatnonzero(hit.any(axis=1)), np.flatnonzero(hit.any(axis=0))
    return [(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)]


def figure(width: int, height: int, face: int, background=(90, 110, 140)) -> Image.Image:
    im = Image.new("RGB", (width, height), background)
    cx, cy = width // 2, height // 3
    im.paste((60, 90, 160), (cx - face, cy + face // 2, cx + face, height))  # a body
    im.paste(FACE, (cx - face // 2, cy - face // 2, cx + face // 2, cy + face // 2))
    return im


def test_prepare_and_audit_count_the_same_shots(tmp_path):
    """15 photos: 3 close-ups, 2 landscape ones whose face is a close-up's share of the photo's height
    but a half body's on the square training image, 5 half and 5 full body shots. prepare counts the
    shots of what it writes, as audit counts them there: 3 of 15, so auto adds 3 close-ups (it added 0
    when it counted 5), and the audit afterwards no longer asks for close-ups."""
    from lora_trainer.dataset.audit import audit_folder, audit_images
    from lora_trainer.dataset.closeups import closeups_needed

    src = tmp_path / "in"
    src.mkdir()
    shapes = [(1024, 1024, 300)] * 3 + [(1536, 1024, 300)] * 2 + [(2048, 2048, 360)] * 5 + [(1024, 1536, 120)] * 5
    for i, (w, hh, face) in enumerate(shapes):
        figure(w, hh, face, background=(90, 110, 100 + i)).save(src / f"s{i:02}.png", compress_level=1)
    project = Project(tmp_path / "p", "x")
    report = prepare([src], project, PrepareOptions(size=512, closeups="auto", workers=1, compress_level=1),
                     detector=magenta_faces)
    assert report.shot_mix == {"close-up": 3, "half body": 7, "full body": 5, "no face": 0}
    assert "Shots as trained (audit counts the same): close-up 3, half body 7, full body 5, no face 0" \
        in report.to_text()
    prepared = sorted(Path(e.output) for e in report.entries if e.status == "ok")
    before = audit_images(prepared, detector=magenta_faces)
    assert before.shot_mix == report.shot_mix
    needed = closeups_needed([i.shot for i in before.images])
    assert needed == 3 and report.count("close-up") == needed
    assert any(f"add {needed} face close-up(s)" in f for f in before.findings), before.findings
    after = audit_folder(project.train_images, detector=magenta_faces)
    assert after.shot_mix["close-up"] == 3 + needed
    assert not any("close-ups are" in f for f in after.findings), after.findings


def test_small_photos_are_reported_and_enlarged_only_when_asked(tmp_path, h, capsys):
    src = tmp_path / "in"
    src.mkdir()
    h.photo(200, 200, 1).save(src / "tiny.png")
    h.photo(1200, 1100, 2).save(src / "big.png")
    rc = main(["prepare", str(src), "--project", str(tmp_path / "p"), "--name", "x", "--workers", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert ("too small: 200x200, below the 1024 px training size: padded to 1024x1024, not enlarged "
            "(--upscale-small enlarges it)") in out
    assert ("1 image(s) smaller than the 1024 px training size: padded, not enlarged (--upscale-small "
            "enlarges them): tiny.png 200x200") in out
    assert "big.png" not in out.split("training size")[-1]
    padded = Image.open(tmp_path / "p/img/1_x/tiny.png")
    assert padded.size == (1024, 1024) and padded.getpixel((0, 0)) == (128, 128, 128)

    rc = main(["prepare", str(src), "--project", str(tmp_path / "q"), "--name", "x", "--workers", "1",
               "--upscale-small"])
    out = capsys.readouterr().out
    assert rc == 0 and "small: 200x200, below the 1024 px training size: enlarged to 1024x1024" in out
    enlarged = Image.open(tmp_path / "q/img/1_x/tiny.png")
    assert enlarged.size == (1024, 1024) and enlarged.getpixel((0, 0)) != (128, 128, 128)


def test_closeups_are_made_at_the_training_size_or_reported(tmp_path):
    """A full body shot whose face crop is 440 px, for a 1024 px training size: without the option the
    close-up is not made and that is said; with it the crop is enlarged to fill 1024x1024, not padded."""
    src = tmp_path / "in"
    src.mkdir()
    figure(1024, 1536, 200).save(src / "standing.png")
    options = dict(closeups="all", workers=1, compress_level=1)
    report = prepare([src], Project(tmp_path / "p", "x"), PrepareOptions(**options), detector=magenta_faces)
    [skipped] = [e for e in report.entries if e.status == "close-up skipped"]
    assert skipped.source == str(src / "standing.png") and report.count("close-up") == 0
    assert skipped.reason == ("the face crop is 440x440 px, below the 1024 px training size: not made "
                              "(--upscale-small enlarges such crops to the training size)")
    assert f"CLOSE-UP SKIPPED {src / 'standing.png'}: the face crop is 440x440 px" in report.to_text()
    assert "1 close-up(s) not made" in report.to_text()

    report = prepare([src], Project(tmp_path / "q", "x"), PrepareOptions(upscale=True, **options),
                     detector=magenta_faces)
    [closeup] = [e for e in report.entries if e.status == "close-up"]
    im = Image.open(closeup.output)
    assert im.size == (1024, 1024)
    assert im.getpixel((0, 0)) == (90, 110, 140) and im.getpixel((1023, 0)) == (90, 110, 140)  # not padding
    [face] = magenta_faces(im)
    assert face[3] - face[1] > 400  # 200 px of face, enlarged 1024/440 times
    assert "small: the crop is 440x440, below the 1024 px training size: enlarged to 1024x1024" in closeup.notes


def test_flat_pictures_are_not_called_blurry(tmp_path, h):
    """Sharpness is judged on the steepness of the crispest edges for their contrast, not on the amount
    of detail: a flat synthetic picture with a few hard edges is sharp, a detailed photo blurred is not,
    a picture without any contrasted edge is not judged; the text says what the number means."""
    from PIL import ImageDraw, ImageFilter

    from lora_trainer.dataset.audit import audit_folder, measure

    d = tmp_path / "set"
    d.mkdir()
    flat = Image.new("RGB", (1024, 1024), (200, 190, 170))
    draw = ImageDraw.Draw(flat)
    draw.rectangle((300, 200, 700, 900), fill=(60, 70, 120))
    draw.ellipse((420, 80, 580, 260), fill=(230, 180, 150))
    flat.save(d / "flat_sharp.png")
    h.photo(1024, 1024, 5).save(d / "detailed_sharp.png")
    h.photo(1024, 1024, 6).filter(ImageFilter.GaussianBlur(5)).save(d / "detailed_blurred.png")
    flat.filter(ImageFilter.GaussianBlur(5)).save(d / "flat_blurred.png")
    Image.new("RGB", (1024, 1024), (120, 130, 140)).save(d / "plain.png")

    assert measure(flat)["detail"] < 100  # the old rule (Laplacian variance below 100) called it blurry
    report = audit_folder(d, detector=lambda im: [])
    blur = {i.name: [x for x in i.findings if "sharpness" in x] for i in report.images}
    assert blur["flat_sharp.png"] == [] and blur["detailed_sharp.png"] == [] and blur["plain.png"] == []
    assert blur["detailed_blurred.png"] and blur["detailed_blurred.png"][0].startswith("blurry: sharpness ")
    assert blur["flat_blurred.png"], report.to_text()
    sharp = {i.name: i.sharpness for i in report.images}
    assert sharp["plain.png"] is None
    assert min(sharp["flat_sharp.png"], sharp["detailed_sharp.png"]) > 2 * max(
        sharp["detailed_blurred.png"], sharp["flat_blurred.png"])
    assert "px wide at 640 px (sharp: 2-3 px)" in blur["detailed_blurred.png"][0]
    text = report.to_text()
    assert "how steep the crispest edges are for their own contrast" in text
    assert "A plain picture is not blurry" in text


def test_a_failing_image_is_named_and_the_rest_is_prepared(tmp_path, h):
    """A manual crop box outside its photo used to stop the whole run with a message naming no file
    (and no report); now that photo is skipped with the reason, the others are prepared, the report is
    written, and no partial file is left behind."""
    src = tmp_path / "in"
    src.mkdir()
    h.photo(800, 600, 1).save(src / "a.png")
    h.photo(800, 600, 2).save(src / "b.png")
    project = Project(tmp_path / "p", "x")
    report = prepare([src], project, PrepareOptions(workers=1, size=256), boxes={"a": (5000, 5000, 6000, 6000)})
    [bad] = [e for e in report.entries if e.status == "skipped"]
    assert bad.source == str(src / "a.png")
    assert bad.reason == "crop box (5000, 5000, 6000, 6000) lies outside the 800x600 image"
    assert f"SKIPPED   {src / 'a.png'}: crop box" in report.to_text()
    assert sorted(p.name for p in project.train_images.iterdir()) == ["b.png"]
    assert json.loads((project.root / "prepare-report.json").read_text())["counts"]["skipped"] == 1
    leftovers = [p for p in project.root.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]
    assert leftovers == []
