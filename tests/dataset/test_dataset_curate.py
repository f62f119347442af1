"""The Dataset panel's library pieces: prepare's stop between files; exclude / restore training images
(moved, never deleted); backgrounds and edits written into the training folder, with the image before
the background kept to restore."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PIL import Image

from lora_trainer.dataset.prepare import STOPPED_REASON, PrepareOptions, prepare
from lora_trainer.project import Project


def _photos(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (80, 60), (40 * i % 256, 90, 200 - 30 * i)).save(folder / f"p{i}.png")
    return folder


@pytest.mark.parametrize("workers", [1, 2])
def test_prepare_stops_between_files_and_reports_the_rest(tmp_path, workers):
    src = _photos(tmp_path / "in", 5)
    project = Project(tmp_path / "p", "x")
    stop = threading.Event()

    def progress(done, total, source):
        if done == 2:
            stop.set()

    report = prepare([src], project, PrepareOptions(size=64, workers=workers, closeups="all"),
                     progress=progress, stop=stop)
    ok = [e for e in report.entries if e.status == "ok"]
    stopped = [e for e in report.entries if e.reason == STOPPED_REASON]
    assert len(ok) + len(stopped) == 5
    if workers == 1:
        assert len(ok) == 2  # a pool may have started (and so finishes and reports) a few more
    assert not any(e.status == "close-up" for e in report.entries) or not stopped
    assert all(Path(e.output).is_file() for e in ok)
    assert {p.stem for p in project.train_images.glob("*.png")} == {e.name for e in ok}
    assert (project.root / "prepare-report.json").is_file()


from lora_trainer.dataset import curate  # noqa: E402
from lora_trainer.dataset.background import ModelMissingError  # noqa: E402
from lora_trainer.dataset.edits import Edits  # noqa: E402

TINY = Path(__file__).resolve().parents[1] / "assets" / "tiny_segmenter.onnx"


@pytest.fixture
def project(tmp_path):
    project = Project(tmp_path / "hero", "hero").create()
    for i in range(3):
        im = Image.new("RGB", (96, 64), (40, 160, 90))
        im.paste((230, 30, 30), (30, 10, 66, 60))
        im.save(project.train_images / f"{i:03d}.png")
        (project.train_images / f"{i:03d}.txt").write_text(f"hero, pose {i}\n", encoding="utf-8")
    return project


def test_exclude_moves_images_and_captions_and_restore_brings_them_back(project):
    before = (project.train_images / "001.png").read_bytes()
    moved = curate.exclude_images(project, ["001.png", "002.png"])
    assert [p.name for p in moved] == ["001.png", "002.png"]
    assert sorted(p.name for p in project.train_images.iterdir()) == ["000.png", "000.txt"]
    assert (project.root / "excluded" / "001.png").read_bytes() == before
    assert (project.root / "excluded" / "001.txt").read_text(encoding="utf-8") == "hero, pose 1\n"
    assert [p.name for p in curate.excluded_images(project)] == ["001.png", "002.png"]
    back = curate.restore_images(project, ["001.png"])
    assert back == [project.train_images / "001.png"] and back[0].read_bytes() == before
    assert (project.train_images / "001.txt").is_file() and not (project.root / "excluded" / "001.png").exists()


def test_exclude_refuses_names_outside_the_folder_and_moves_nothing(project, tmp_path):
    (tmp_path / "outside.png").write_bytes((project.train_images / "000.png").read_bytes())
    for bad in ["../../outside.png", "/etc/passwd", "..", "", "missing.png", ".hidden.png"]:
        with pytest.raises(ValueError):
            curate.exclude_images(project, ["000.png", bad])
    assert (project.train_images / "000.png").is_file() and (tmp_path / "outside.png").is_file()


def test_excluding_the_same_name_twice_keeps_both(project):
    first = curate.exclude_images(project, ["000.png"])[0].read_bytes()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(project.train_images / "000.png")
    second = curate.exclude_images(project, ["000.png"])
    assert second[0].name == "000.2.png"
    assert (project.root / "excluded" / "000.png").read_bytes() == first


def test_backgrounds_in_place_keep_the_original_and_the_mask(project):
    original = (project.train_images / "000.png").read_bytes()
    records = curate.replace_backgrounds(project, ["000.png", "001.png"], model=str(TINY), seed=3)
    assert [Path(r["output"]).name for r in records] == ["000.png", "001.png"]
    out = Image.open(project.train_images / "000.png")
    assert out.getpixel((2, 2)) == tuple(records[0]["color"]) and out.getpixel((48, 40))[0] > 200
    assert (project.root / "before-background" / "000.png").read_bytes() == original
    assert Image.open(project.masks / "000.png").mode == "L"
    assert not [p for p in project.root.iterdir() if p.name.startswith(".background")]  # no scratch left
    assert (project.train_images / "002.png").read_bytes() != (project.train_images / "000.png").read_bytes()
    curate.keep_original(project, "000.png")
    assert (project.train_images / "000.png").read_bytes() == original
    assert curate.background_mask(project, "000.png") is None
    with pytest.raises(ValueError, match="no image from before"):
        curate.keep_original(project, "002.png")


def test_a_missing_background_model_fails_before_anything_is_written(project, tmp_path):
    with pytest.raises(ModelMissingError, match="nothere.onnx"):
        curate.replace_backgrounds(project, ["000.png"], model=str(tmp_path / "nothere.onnx"))
    assert not curate.before_background_folder(project).exists()


def test_edits_in_place(project):
    before = (project.train_images / "000.png").read_bytes()
    written = curate.edit_images(project, ["000.png"], Edits(brightness=1.5))
    assert written == [project.train_images / "000.png"]
    assert (project.train_images / "000.png").read_bytes() != before
    assert Image.open(project.train_images / "000.png").getpixel((2, 2))[1] > 160
    assert (project.train_images / "001.png").is_file() and (project.train_images / "000.txt").is_file()


def test_audit_cache_measures_only_changed_images(project, monkeypatch):
    from lora_trainer.dataset import audit

    cache: dict = {}
    first = audit.audit_folder(project.train_images, cache=cache)
    measured = []
    real = audit.measure
    monkeypatch.setattr(audit, "measure", lambda im: measured.append(1) or real(im))
    Image.new("RGB", (96, 64), (10, 10, 10)).save(project.train_images / "002.png")
    again = audit.audit_folder(project.train_images, cache=cache)
    assert len(measured) == 1  # only the changed image
    assert [i.name for i in again.images] == [i.name for i in first.images]
    assert any(f.startswith("underexposed") for f in again.images[2].findings)
    dup = [f for f in again.images[0].findings if f.startswith("near-duplicate")]
    assert dup and again.images[0].findings.count(dup[0]) == 1  # duplicates are not piled up from the cache
    assert audit.audit_folder(project.train_images, cache=cache).to_dict() == again.to_dict()


def test_keep_original_prepares_again_from_sources_when_prepare_replaced_the_background(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    photo = Image.new("RGB", (160, 120), (40, 160, 90))
    photo.paste((230, 30, 30), (60, 20, 100, 110))
    photo.save(src / "a.jpg", quality=95)
    options = dict(size=128, mode="pad", fill=(10, 20, 30), workers=1)
    plain = Project(tmp_path / "plain", "x")
    prepare([src], plain, PrepareOptions(**options))
    project = Project(tmp_path / "p", "x")
    prepare([src], project, PrepareOptions(**options, background=True, background_model=str(TINY)))
    report = (project.root / "prepare-report.json").read_bytes()
    assert curate.background_mask(project, "a.png") is not None
    assert (project.train_images / "a.png").read_bytes() != (plain.train_images / "a.png").read_bytes()
    assert curate.source_of(project, "a.png") == project.sources / "a.jpg"
    curate.keep_original(project, "a.png")
    assert (project.train_images / "a.png").read_bytes() == (plain.train_images / "a.png").read_bytes()
    assert curate.background_mask(project, "a.png") is None
    assert (project.root / "prepare-report.json").read_bytes() == report  # the import's report is kept


# --- the crop editor's library: recrop, check_box, face_box, mask_box ----------------------------------

def _red_corner_project(tmp_path: Path) -> tuple[Project, Path]:
    """A 200x100 grey photo with a red 50 px square in its top-left corner, imported at 64 px (pad), with a
    caption that was edited after the import."""
    src = tmp_path / "in"
    src.mkdir()
    im = Image.new("RGB", (200, 100), (128, 128, 128))
    im.paste((255, 0, 0), (0, 0, 50, 50))
    im.save(src / "p.png")
    (src / "p.txt").write_text("a photo", encoding="utf-8")
    project = Project(tmp_path / "proj", "proj")
    prepare([src], project, PrepareOptions(size=64, workers=1))
    caption = project.train_images / "p.txt"
    caption.write_text("edited by hand", encoding="utf-8")
    return project, caption


def _red_share(path: Path) -> float:
    pixels = list(Image.open(path).convert("RGB").getdata())
    return sum(1 for r, g, b in pixels if r > 200 and g < 60 and b < 60) / len(pixels)


def test_recrop_frames_the_box_region_and_keeps_the_caption(tmp_path):
    from lora_trainer.dataset import curate

    project, caption = _red_corner_project(tmp_path)
    image = project.train_images / "p.png"
    assert _red_share(image) < 0.2
    written = curate.recrop(project, "p.png", (0, 0, 50, 50))
    assert written == image and Image.open(image).size == (64, 64)
    # the 50x50 crop is not enlarged (no upscale): all of it red, padded to 64x64 with grey
    assert abs(_red_share(image) - 50 * 50 / 64 ** 2) < 0.03
    assert Image.open(image).convert("RGB").getpixel((32, 32)) == (255, 0, 0)
    assert caption.read_text(encoding="utf-8") == "edited by hand"
    assert not [p for p in project.root.iterdir() if p.name.startswith(".")]  # no scratch left


@pytest.mark.parametrize("box, words", [((50, 0, 40, 50), "left must be less than right"),
                                        ((0, 30, 50, 30), "top less than bottom"),
                                        ((0, 0, 300, 50), "outside the 200x100 original"),
                                        ((-5, 0, 50, 50), "outside"),
                                        (("a", 0, 1, 1), "four numbers")])
def test_recrop_refuses_a_bad_box_naming_the_image(tmp_path, box, words):
    from lora_trainer.dataset import curate

    project, caption = _red_corner_project(tmp_path)
    before = (project.train_images / "p.png").read_bytes()
    with pytest.raises(ValueError, match=words) as e:
        curate.recrop(project, "p.png", box)
    assert "p.png" in str(e.value)
    assert (project.train_images / "p.png").read_bytes() == before
    assert caption.read_text(encoding="utf-8") == "edited by hand"


def test_recrop_needs_an_original(tmp_path):
    from lora_trainer.dataset import curate

    project, _ = _red_corner_project(tmp_path)
    Image.new("RGB", (64, 64)).save(project.train_images / "byhand.png")
    with pytest.raises(ValueError, match="byhand.png: no original"):
        curate.recrop(project, "byhand.png", (0, 0, 10, 10))


def test_the_original_is_upright(tmp_path):
    from lora_trainer.dataset import curate

    src = tmp_path / "in"
    src.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    Image.new("RGB", (120, 80), (10, 200, 10)).save(src / "r.jpg", exif=exif)
    project = Project(tmp_path / "proj", "proj")
    prepare([src], project, PrepareOptions(size=64, workers=1))
    assert curate.original(project, "r.png").size == (80, 120)


def test_face_box_is_a_square_around_the_largest_face(tmp_path):
    from lora_trainer.dataset import curate
    from lora_trainer.dataset.closeups import closeup_box

    project, _ = _red_corner_project(tmp_path)
    faces = [(10, 10, 20, 20), (100, 20, 140, 60)]
    box = curate.face_box(project, "p.png", lambda im: faces)
    assert box == closeup_box(faces[1], (200, 100)) and box[2] - box[0] == box[3] - box[1]
    assert curate.face_box(project, "p.png", lambda im: []) is None


def test_mask_box_maps_the_mask_back_to_the_original(tmp_path):
    from lora_trainer.dataset import curate

    project, _ = _red_corner_project(tmp_path)
    assert curate.mask_box(project, "p.png") is None
    # 200x100 at 64 px, padded: the photo is 64x32 at y 16..48; the subject is its right half
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 16, 64, 48))
    project.masks.mkdir(parents=True, exist_ok=True)
    mask.save(project.masks / "p.png")
    left, top, right, bottom = curate.mask_box(project, "p.png")
    assert 85 <= left <= 100 and top == 0 and right == 200 and bottom == 100


# --- redo a background, correct its mask, another fill ----------------------------------------------------

def test_a_redo_segments_the_kept_original_not_the_last_result_and_takes_a_fill(project):
    original = (project.train_images / "000.png").read_bytes()
    curate.replace_backgrounds(project, ["000.png"], model=str(TINY), seed=3)
    first_mask = (project.masks / "000.png").read_bytes()
    records = curate.replace_backgrounds(project, ["000.png"], model=str(TINY), fill=(0, 0, 255))
    assert records[0]["source"] == str(project.train_images / "000.png")
    out = Image.open(project.train_images / "000.png").convert("RGB")
    assert out.getpixel((2, 2)) == (0, 0, 255) and out.getpixel((48, 40))[0] > 200
    # the same photo segmented again: the same mask (segmenting the blue-filled result would differ)
    assert (project.masks / "000.png").read_bytes() == first_mask
    assert (project.root / "before-background" / "000.png").read_bytes() == original


def test_a_jpeg_training_image_is_kept_as_it_was_and_comes_back(project):
    Image.new("RGB", (96, 64), (40, 160, 90)).save(project.train_images / "j.jpg", quality=95)
    jpeg = (project.train_images / "j.jpg").read_bytes()
    curate.replace_backgrounds(project, ["j.jpg"], model=str(TINY))
    assert (project.train_images / "j.png").is_file() and not (project.train_images / "j.jpg").exists()
    assert curate.before_background(project, "j.png").read_bytes() == jpeg
    assert curate.keep_original(project, "j.png") == project.train_images / "j.jpg"
    assert (project.train_images / "j.jpg").read_bytes() == jpeg and not (project.train_images / "j.png").exists()


def test_strokes_correct_the_mask_and_the_image_is_made_again_over_its_fill(project):
    from lora_trainer.dataset.masks import apply_strokes, fill_colour

    curate.replace_backgrounds(project, ["000.png"], model=str(TINY), fill=(200, 0, 200))
    mask = Image.open(project.masks / "000.png").convert("L")
    assert mask.getpixel((10, 50)) < 30 and mask.getpixel((48, 40)) > 200
    strokes = Image.new("RGBA", (96, 64), (0, 0, 0, 0))
    strokes.paste((255, 255, 255, 255), (0, 40, 20, 64))     # white: the green corner is subject now
    strokes.paste((0, 0, 0, 255), (40, 30, 56, 50))          # black: part of the red block is background
    written = curate.recomposite(project, "000.png", strokes=strokes)
    assert written == project.train_images / "000.png"
    out = Image.open(written).convert("RGB")
    assert out.getpixel((10, 50)) == (40, 160, 90)       # the photo shows through where white was painted
    assert out.getpixel((48, 40)) == (200, 0, 200)       # the fill where black was painted
    assert out.getpixel((60, 20))[0] > 200               # the red block elsewhere untouched
    corrected = Image.open(project.masks / "000.png")
    assert corrected.getpixel((10, 50)) == 255 and corrected.getpixel((48, 40)) == 0
    assert fill_colour(out, corrected) == (200, 0, 200)
    # another fill only: the same mask, a new colour
    curate.recomposite(project, "000.png", colour=(0, 90, 0))
    assert Image.open(written).convert("RGB").getpixel((48, 40)) == (0, 90, 0)
    assert (project.masks / "000.png").read_bytes() == corrected.tobytes() or \
        Image.open(project.masks / "000.png").tobytes() == corrected.tobytes()
    # a soft stroke blends: alpha 128 of white over a 0 mask gives 128
    half = apply_strokes(Image.new("L", (4, 4), 0), Image.new("RGBA", (4, 4), (255, 255, 255, 128)))
    assert half.getpixel((1, 1)) == 128
    # strokes painted on the editor's smaller copy land where they were painted on the whole mask
    left_half = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
    left_half.paste((255, 255, 255, 255), (0, 0, 256, 512))
    scaled = apply_strokes(Image.new("L", (1024, 1024), 0), left_half)
    assert scaled.size == (1024, 1024) and scaled.getpixel((500, 900)) == 255 and scaled.getpixel((530, 100)) == 0


def test_recomposite_needs_a_mask_and_rebuilds_the_photo_from_sources(project, tmp_path):
    with pytest.raises(ValueError, match="000.png: no background mask"):
        curate.recomposite(project, "000.png")
    src = tmp_path / "in"
    src.mkdir()
    photo = Image.new("RGB", (160, 120), (40, 160, 90))
    photo.paste((230, 30, 30), (60, 20, 100, 110))
    photo.save(src / "a.png")
    imported = Project(tmp_path / "p", "x")
    prepare([src], imported, PrepareOptions(size=128, fill=(10, 20, 30), workers=1, background=True,
                                           background_model=str(TINY)))
    assert curate.before_background(imported, "a.png") is None
    strokes = Image.new("RGBA", (128, 128), (0, 0, 0, 0))
    strokes.paste((255, 255, 255, 255), (0, 60, 30, 80))
    curate.recomposite(imported, "a.png", strokes=strokes)
    assert Image.open(imported.train_images / "a.png").convert("RGB").getpixel((10, 70)) == (40, 160, 90)
    assert curate.before_background(imported, "a.png") is not None  # kept from now on
    assert not [p for p in imported.root.iterdir() if p.name.startswith(".")]


# --- face close-ups from half / full body shots -------------------------------------------------------------

def _shots_project(tmp_path: Path) -> Project:
    """Three 1600x1600 originals imported at 256 px: a full body shot, one with no face, a close-up."""
    src = tmp_path / "shots"
    src.mkdir()
    for name, colour in (("full", (200, 40, 40)), ("noface", (40, 200, 40)), ("close", (40, 40, 200))):
        Image.new("RGB", (1600, 1600), colour).save(src / f"{name}.png")
    (src / "full.txt").write_text("hero, standing", encoding="utf-8")
    project = Project(tmp_path / "shots-project", "hero")
    prepare([src], project, PrepareOptions(size=256, workers=1), detector=lambda im: [])
    return project


FACES = {(200, 40, 40): [(700, 200, 900, 400)], (40, 40, 200): [(300, 200, 1300, 1200)]}


def _detector(im):
    return FACES.get(im.convert("RGB").getpixel((5, 5)), [])


def test_close_ups_are_cut_from_the_originals_of_half_and_full_shots(tmp_path):
    project = _shots_project(tmp_path)
    results = curate.make_closeups(project, ["full.png", "noface.png", "close.png"], detector=_detector)
    by_shot = {r.shot: r for r in results}
    assert by_shot["full.png"].closeup == "full_closeup.png"
    closeup = Image.open(project.train_images / "full_closeup.png")
    assert closeup.size == (256, 256) and closeup.convert("RGB").getpixel((128, 128)) == (200, 40, 40)
    assert not (project.train_images / "full_closeup.txt").exists()  # tagged with the others
    assert by_shot["noface.png"].reason == "no face found in its original"
    assert "close-up shot" in by_shot["close.png"].reason
    assert curate.closeup_images(project) == [(project.train_images / "full_closeup.png",
                                               project.train_images / "full.png")]
    again = curate.make_closeups(project, ["full.png", "full_closeup.png"], detector=_detector)
    assert [r.closeup for r in again] == ["full_closeup.2.png", ""] and again[1].reason == "a close-up already"
    assert [p.name for p, _ in curate.closeup_images(project)] == ["full_closeup.2.png", "full_closeup.png"]
    assert not [p for p in project.root.iterdir() if p.name.startswith(".")]


def test_a_close_up_too_small_for_the_training_size_is_refused_with_the_reason(tmp_path):
    project = _shots_project(tmp_path)
    FACES[(200, 40, 40)] = [(780, 280, 820, 320)]  # a 40 px face: an 88 px crop
    try:
        results = curate.make_closeups(project, ["full.png"], detector=_detector)
    finally:
        FACES[(200, 40, 40)] = [(700, 200, 900, 400)]
    assert results[0].closeup == "" and "too small" in results[0].reason
    assert curate.closeup_images(project) == []


def test_close_ups_stop_between_files(tmp_path):
    project = _shots_project(tmp_path)
    stop = threading.Event()
    stop.set()
    results = curate.make_closeups(project, ["full.png"], detector=_detector, stop=stop)
    assert results[0].closeup == "" and results[0].reason == STOPPED_REASON
