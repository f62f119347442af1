"""The Dataset panel in-process: import with its per-file report (a broken file, a duplicate), the
gallery's audit badges and the set's summary, exclude / restore (moved, never deleted), batch edits
(the preview writes nothing, Apply writes), backgrounds with the tiny segmenter and with a missing model."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from PIL import Image, ImageFilter

from lora_trainer.demo.synthetic import make_character_dataset
from lora_trainer.host import StandaloneHost
from lora_trainer.project import Project
from lora_trainer.ui import dataset_panel as dp

TINY = Path(__file__).resolve().parents[1] / "assets" / "tiny_segmenter.onnx"


def panel_for(workspace) -> dp.DatasetPanel:
    with gr.Blocks():
        return dp.DatasetPanel(StandaloneHost(workspace)).build()


def values(panel: dp.DatasetPanel, view) -> dict:
    assert len(view) == len(panel.view_outputs())
    return dict(zip((c.elem_id.removeprefix("lora_trainer_dataset_") for c in panel.view_outputs()), view))


def wait(panel: dp.DatasetPanel, timeout: float = 60) -> tuple:
    deadline = time.monotonic() + timeout
    while not panel._job.finished:
        assert time.monotonic() < deadline, panel._job.status()
        time.sleep(0.05)
    return panel.poll()


@pytest.fixture
def project(tmp_path):
    """A small character set (64 px images: all low resolution) in workspace/hero."""
    make_character_dataset(tmp_path / "hero" / "img", name="hero", count=4, size=64)
    return Project(tmp_path / "hero", "hero")


def test_the_layout_builds_and_the_views_match(tmp_path, project):
    with gr.Blocks() as blocks:
        panel = dp.build_dataset_panel(StandaloneHost(tmp_path))
        panel.wire_page_load(blocks)
    assert isinstance(panel.project, gr.Dropdown)
    assert len(panel.open_project("hero")) == len(panel.view_outputs())
    assert len(panel.refresh(None)) == len(panel.view_outputs())
    assert len(panel.open_project("no such/name")) == len(panel.view_outputs())
    assert all(c.elem_id.startswith("lora_trainer_dataset_") for c in panel.view_outputs())


def test_import_reports_a_broken_file_and_a_duplicate(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for i, colour in enumerate([(200, 40, 40), (40, 200, 40)]):
        Image.new("RGB", (120, 90), colour).save(src / f"p{i}.jpg", quality=95)
    (src / "copy.jpg").write_bytes((src / "p0.jpg").read_bytes())
    (src / "broken.jpg").write_bytes(b"not a jpeg at all")
    panel = panel_for(tmp_path / "ws")
    message, table = panel.start_import("hero", str(src), None, 128, "pad", "#808080", "off", False, workers=1)
    assert "importing 1 input(s) into hero" in message and table == []
    status, rows, *view = wait(panel)
    by_file = {row[0]: row for row in rows}
    assert by_file["broken.jpg"][1] == "skipped" and by_file["broken.jpg"][2]
    assert by_file["copy.jpg"][1:] == ["duplicate", "a duplicate of p0.jpg (same content), which is kept"]
    assert by_file["p0.jpg"][1] == "ok" and by_file["p0.jpg"][2].startswith("-> p0.png")
    assert "2 image(s) prepared" in status and "1 duplicate(s) and 1 file(s) skipped" in status
    view = values(panel, view)
    assert view["selection"]["choices"] == ["p0.png", "p1.png"]
    assert sorted(p.name for p in (tmp_path / "ws" / "hero" / "sources").iterdir()) == ["p0.jpg", "p1.jpg"]
    assert (src / "broken.jpg").is_file() and (src / "copy.jpg").is_file()  # the originals are untouched
    assert panel.poll()[1] == {"__type__": "update"}  # the report is sent once


def test_a_typed_path_must_exist_and_the_options_must_be_sane(tmp_path):
    panel = panel_for(tmp_path)
    message, _ = panel.start_import("hero", "/no/such/folder", None, 1024, "pad", "#808080", "off", False)
    assert "/no/such/folder: no such folder or file" in message and panel._job is None
    message, _ = panel.start_import("hero", "", None, 1024, "pad", "#808080", "off", False)
    assert "type a folder" in message
    message, _ = panel.start_import("hero", str(tmp_path), None, 1024, "pad", "nope", "off", False)
    assert "fill colour" in message
    assert dp.hex_colour("#FF0080") == (255, 0, 128) and dp.hex_colour("rgba(1, 2, 3, 1)") == (1, 2, 3)


def test_the_gallery_shows_audit_badges_and_the_summary_the_guide(tmp_path, project):
    folder = project.train_images
    Image.open(folder / "000.png").filter(ImageFilter.GaussianBlur(4)).save(folder / "000.png")
    Image.open(folder / "001.png").save(folder / "001copy.png")
    view = values(panel_for(tmp_path), panel_for(tmp_path).open_project("hero"))
    captions = dict((Path(path).name, caption) for path, caption in view["gallery"])
    assert set(captions) == {"000.png", "001.png", "001copy.png", "002.png", "003.png"}
    assert captions["001copy.png"].startswith("001copy.png: low res") and "dup of 001.png" in captions["001copy.png"]
    assert all("low res" in c for c in captions.values())
    assert any(word in captions["002.png"] for word in ("close-up", "half", "full", "no face"))
    summary = view["summary"]
    assert "5 image(s)" in summary and "64-256" in summary and "the guide asks for at least 64" in summary
    badges = dp.image_badges(SimpleNamespace(images=[SimpleNamespace(
        name="a.png", shot="half body", findings=["blurry: sharpness 10 of 100 ...", "colour cast toward green: 20",
                                                  "underexposed: mean 20", "near-duplicate of b.png (hash distance 2)"])],
        unreadable=[{"name": "c.png", "reason": "x"}]))
    assert badges == {"a.png": ["blurry", "cast", "dark", "dup of b.png", "half"], "c.png": ["unreadable"]}


def test_select_exclude_and_restore_move_files_and_never_delete(tmp_path, project):
    panel = panel_for(tmp_path)
    selection = panel.select_image("hero", [], SimpleNamespace(index=1))[0]["value"]
    selection = panel.select_image("hero", selection, SimpleNamespace(index=2))[0]["value"]
    assert selection == ["001.png", "002.png"]
    assert panel.select_image("hero", selection, SimpleNamespace(index=2))[0]["value"] == ["001.png"]
    before = {p.name: p.read_bytes() for p in project.train_images.iterdir()}
    message, *view = panel.exclude("hero", selection)
    view = values(panel, view)
    assert "excluded 2 image(s)" in message
    assert view["selection"]["choices"] == ["000.png", "003.png"] and view["excluded"]["choices"] == ["001.png", "002.png"]
    excluded = project.root / "excluded"
    after = {p.name: p.read_bytes() for p in [*project.train_images.iterdir(), *excluded.iterdir()]}
    assert after == before  # every image and caption is somewhere, unchanged
    assert "select the images" in panel.exclude("hero", [])[0]
    assert "is not the name" in panel.exclude("hero", ["../../x.png"])[0]
    message, *view = panel.restore("hero", ["002.png"])
    assert "restored 1" in message and (project.train_images / "002.png").read_bytes() == before["002.png"]


def test_edit_preview_writes_nothing_and_apply_writes(tmp_path, project):
    panel = panel_for(tmp_path)
    files = lambda: {p: p.read_bytes() for p in sorted(project.root.rglob("*")) if p.is_file()}  # noqa: E731
    before = files()
    shown, after, message = panel.preview("hero", "000.png", 0, 1.6, 1.0, 1.0, False)
    assert Path(shown).name == "000.png" and "nothing written" in message
    assert list(after.getdata()) != list(Image.open(project.train_images / "000.png").convert("RGB").getdata())
    assert files() == before
    assert "editing 1 image(s)" in panel.apply("hero", ["001.png"], 0, 1.6, 1.0, 1.0, False)
    status, rows, *view = wait(panel)
    assert "edited 1 of 1 image(s)" in status and rows == [["001.png", "edited", ""]]
    assert values(panel, view)["selection"]["value"] == ["001.png"]  # the selection stays
    now = files()
    changed = [p.name for p in now if now[p] != before.get(p)]
    assert changed == ["001.png"]
    assert list(Image.open(project.train_images / "001.png").getdata()) == list(
        panel.preview("hero", "001.png", 0, 1.0, 1.0, 1.0, False)[1].getdata())
    assert "no edit chosen" in panel.apply("hero", [], 0, 1.0, 1.0, 1.0, False)


def test_background_with_a_missing_model_names_the_file_at_once(tmp_path, project, monkeypatch):
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "models"))
    panel = panel_for(tmp_path)
    message = panel.start_background("hero", [], "u2net", 0)
    assert "u2net.onnx not found in" in message and str(tmp_path / "models") in message
    assert panel._job is None and not (project.root / "before-background").exists()
    message = panel.start_background("hero", [], str(tmp_path / "mine.onnx"), 0)
    assert "mine.onnx does not exist" in message


def test_background_on_the_selection_then_keep_the_original(tmp_path, project):
    panel = panel_for(tmp_path)
    original = (project.train_images / "001.png").read_bytes()
    message = panel.start_background("hero", ["001.png"], str(TINY), 4)
    assert "1 image(s)" in message
    status, rows, *view = wait(panel)
    assert "background replaced on 1 of 1" in status and rows[0][0] == "001.png"
    view = values(panel, view)
    assert view["compare_name"]["value"] == "001.png"
    assert Path(view["compare_before"]).read_bytes() == original
    assert Path(view["compare_after"]) == project.train_images / "001.png"
    assert Path(view["compare_mask"]) == project.masks / "001.png"
    assert (project.train_images / "001.png").read_bytes() != original
    message, *view = panel.keep_original("hero", "001.png")
    assert "is back in the training folder" in message and (project.train_images / "001.png").read_bytes() == original
    assert "no original of it" in panel.keep_original("hero", "002.png")[0]  # made in img/, no source


def test_stop_ends_an_import_between_files(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(6):
        Image.new("RGB", (100, 80), (30 * i, 100, 50)).save(src / f"p{i}.png")
    panel = panel_for(tmp_path / "ws")
    panel.start_import("hero", str(src), None, 64, "pad", "#808080", "off", False, workers=1)
    panel.stop()
    status, rows, *_ = wait(panel)
    assert "stopped:" in status and len(rows) == 6
    assert all(row[1] == "ok" or row[2] == "stopped before it was prepared" for row in rows)
    prepared = sorted(row[0] for row in rows if row[1] == "ok")
    assert sorted(p.name for p in (tmp_path / "ws" / "hero" / "sources").iterdir()) == \
        prepared
    assert "nothing to stop" in panel.stop()


def test_the_poll_sends_no_inputs(tmp_path):
    with gr.Blocks() as blocks:
        panel = dp.build_dataset_panel(StandaloneHost(tmp_path))
    polls = [d for d in blocks.fns.values() if getattr(d.fn, "__name__", "") == "poll"] \
        if isinstance(blocks.fns, dict) else [d for d in blocks.fns if getattr(d.fn, "__name__", "") == "poll"]
    assert len(polls) == 1 and polls[0].inputs == []
    assert len(polls[0].outputs) == 2 + len(panel.view_outputs())


# --- the crop editor -------------------------------------------------------------------------------------

@pytest.fixture
def imported(tmp_path):
    """workspace/crop: one 1536x768 grey photo with a red 384 px square in its top-left corner, imported
    at 64 px (the editor shows it at half size: 768 px wide)."""
    from lora_trainer.dataset.prepare import PrepareOptions, prepare

    src = tmp_path / "in"
    src.mkdir()
    im = Image.new("RGB", (1536, 768), (128, 128, 128))
    im.paste((255, 0, 0), (0, 0, 384, 384))
    im.save(src / "p.png")
    (src / "p.txt").write_text("a photo", encoding="utf-8")
    project = Project(tmp_path / "ws" / "crop", "crop")
    prepare([src], project, PrepareOptions(size=64, workers=1))
    return project


def test_crop_preview_is_downscaled_with_the_box_drawn():
    shown, scale = dp.crop_preview(Image.new("RGB", (1536, 768), (0, 0, 0)), (0, 0, 768, 768))
    assert shown.size == (768, 384) and scale == 2
    assert shown.getpixel((384, 100)) == (255, 0, 0) and shown.getpixel((100, 100)) == (0, 0, 0)
    assert dp.crop_preview(Image.new("RGB", (100, 50)), None)[1] == 1


def test_two_clicks_set_the_box_fields(imported, tmp_path):
    panel = panel_for(tmp_path / "ws")
    assert values(panel, panel.open_project("crop"))["crop_name"]["choices"] == ["p.png"]
    image, *fields, message = panel.show_crop("crop", "p.png")
    assert image.size == (768, 384) and fields == [0, 0, 1536, 768]
    image, *fields, message = panel.crop_click("crop", "p.png", *fields, SimpleNamespace(index=[200, 150]))
    assert fields == [gr.update()] * 4 and "one corner at 400, 300" in message
    image, *fields, message = panel.crop_click("crop", "p.png", 0, 0, 1536, 768, SimpleNamespace(index=[50, 10]))
    assert fields == [100, 20, 400, 300] and "box (100, 20, 400, 300)" in message
    # a third click starts a new box
    assert "one corner" in panel.crop_click("crop", "p.png", *fields, SimpleNamespace(index=[1, 1]))[-1]


def test_face_and_subject_buttons_fill_the_box_or_explain(imported, tmp_path):
    from lora_trainer.dataset.closeups import closeup_box

    panel = panel_for(tmp_path / "ws")
    panel.face_detector = lambda im: [(600, 200, 800, 400)]
    image, *fields, message = panel.face_crop("crop", "p.png")
    assert tuple(fields) == closeup_box((600, 200, 800, 400), (1536, 768)) and "face box" in message
    panel.face_detector = lambda im: []
    assert "no face found" in panel.face_crop("crop", "p.png")[-1]
    *_, message = panel.subject_crop("crop", "p.png")
    assert "replace the background first" in message
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 16, 16, 32))  # the photo is 64x32 at y 16..48: its top-left quarter (+ a margin)
    imported.masks.mkdir(parents=True, exist_ok=True)
    mask.save(imported.masks / "p.png")
    image, *fields, message = panel.subject_crop("crop", "p.png")
    assert fields[0] == 0 and fields[1] == 0 and 384 <= fields[2] <= 440 and 384 <= fields[3] <= 440
    assert "subject box" in message
    assert "choose the image" in panel.face_crop("crop", None)[-1]


def test_apply_the_crop_replaces_the_image_and_refuses_a_bad_box(imported, tmp_path):
    panel = panel_for(tmp_path / "ws")
    image = imported.train_images / "p.png"
    caption = (imported.train_images / "p.txt").read_bytes()
    message, *view, shown = panel.apply_crop("crop", "p.png", 0, 0, 400, 1000)
    assert "p.png" in message and "outside the 1536x768 original" in message and shown == gr.update()
    assert len(view) == len(panel.view_outputs())
    message, *view, shown = panel.apply_crop("crop", "p.png", 0, 0, 384, 384)
    assert "p.png prepared again" in message and values(panel, view)["crop_name"]["value"] == "p.png"
    pixels = list(Image.open(image).convert("RGB").getdata())
    assert all(p == (255, 0, 0) for p in pixels[:64]) and len(pixels) == 64 * 64
    assert (imported.train_images / "p.txt").read_bytes() == caption
    assert shown.size == (768, 384)
    assert "fill the four box fields" in panel.apply_crop("crop", "p.png", None, 0, 1, 1)[0]


# --- redo, the mask editor, another fill, the host's rembg folder ------------------------------------------

def test_redo_with_a_fixed_fill_then_paint_the_mask_then_refill(tmp_path, project):
    panel = panel_for(tmp_path)
    panel.start_background("hero", ["001.png"], str(TINY), 4)
    wait(panel)
    mask_before = (project.masks / "001.png").read_bytes()
    assert "the colour (0, 0, 255)" in panel.redo_background("hero", "001.png", str(TINY), 4, "fixed", "#0000ff")
    status, rows, *view = wait(panel)
    assert rows[0][2].startswith("colour (0, 0, 255)") and values(panel, view)["compare_name"]["value"] == "001.png"
    assert (project.masks / "001.png").read_bytes() == mask_before  # the photo segmented again, not the result
    assert "choose the image" in panel.redo_background("hero", None, str(TINY), 4)

    editor, message = panel.edit_mask("hero", "001.png")
    shown = editor["background"]
    assert shown.size == Image.open(project.train_images / "001.png").size and "paint white" in message
    mask = Image.open(project.masks / "001.png").convert("L")
    background_px = next((x, y) for y in range(0, 64, 4) for x in range(0, 64, 4) if mask.getpixel((x, y)) == 0)
    photo = Image.open(project.root / "before-background" / "001.png").convert("RGB")
    assert shown.convert("RGB").getpixel(background_px) != photo.getpixel(background_px)  # tinted

    message, *_ = panel.apply_mask("hero", "001.png", {"background": shown, "layers": [], "composite": shown})
    assert "nothing painted" in message
    strokes = Image.new("RGBA", shown.size, (0, 0, 0, 0))
    strokes.paste((255, 255, 255, 255), (background_px[0], background_px[1], background_px[0] + 1, background_px[1] + 1))
    message, *view, again = panel.apply_mask("hero", "001.png", {"background": shown, "layers": [strokes]})
    assert "with its corrected mask" in message and again["layers"] == []  # the corrected one, to paint on
    assert again["background"].convert("RGB").getpixel(background_px) == photo.getpixel(background_px)
    assert Image.open(project.masks / "001.png").getpixel(background_px) == 255
    out = Image.open(project.train_images / "001.png").convert("RGB")
    assert out.getpixel(background_px) == photo.getpixel(background_px)

    message, *view = panel.refill("hero", "001.png", "#00ff00")
    assert "the colour (0, 255, 0)" in message
    corrected = Image.open(project.masks / "001.png").convert("L")
    gone = next((x, y) for y in range(64) for x in range(64) if corrected.getpixel((x, y)) == 0)
    assert Image.open(project.train_images / "001.png").convert("RGB").getpixel(gone) == (0, 255, 0)
    assert "no background mask" in panel.edit_mask("hero", "002.png")[1]
    # a large image is shown at EDITOR_SIDE (its canvas is redrawn every frame); the strokes are scaled back
    big = Image.open(project.masks / "001.png").resize((1024, 768))
    big.save(project.masks / "001.png")
    Image.open(project.root / "before-background" / "001.png").resize((1024, 768)).save(
        project.root / "before-background" / "001.png")
    assert panel.edit_mask("hero", "001.png")[0]["background"].size == (512, 384)
    # the editor is built for the image named in mask_target; without a mask it stays shut, with the reason
    assert panel.open_mask_editor("hero", "001.png")[0] == "001.png"
    target, message = panel.open_mask_editor("hero", "002.png")
    assert target == gr.update() and "no background mask" in message
    assert "#zz" in panel.refill("hero", "001.png", "#zz")[0]


def test_the_hosts_rembg_folder_is_where_the_model_is_looked_for(tmp_path, project, monkeypatch):
    monkeypatch.delenv("U2NET_HOME", raising=False)

    class ForgeLike(StandaloneHost):
        def rembg_models(self):
            return tmp_path / "forge" / "models" / "u2net"

    with gr.Blocks():
        panel = dp.DatasetPanel(ForgeLike(tmp_path)).build()
    assert str(tmp_path / "forge" / "models" / "u2net") in panel.bg_model.info
    message = panel.start_background("hero", [], "u2net", 0)
    assert f"u2net.onnx not found in {tmp_path / 'forge' / 'models' / 'u2net'}" in message


# --- face close-ups ----------------------------------------------------------------------------------------

def test_close_ups_are_made_shown_with_their_shots_and_selected_for_review(tmp_path):
    from lora_trainer.dataset.prepare import PrepareOptions, prepare

    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (1600, 1600), (200, 40, 40)).save(src / "full.png")
    Image.new("RGB", (1600, 1600), (40, 200, 40)).save(src / "other.png")
    project = Project(tmp_path / "ws" / "hero", "hero")
    prepare([src], project, PrepareOptions(size=256, workers=1), detector=lambda im: [])
    panel = panel_for(tmp_path / "ws")
    panel.face_detector = lambda im: [(700, 200, 900, 400)] if im.convert("RGB").getpixel((5, 5))[0] == 200 else []
    assert "select the images" in panel.start_closeups("hero", [])  # the audit (Haar) finds no face here
    assert "from 2 image(s)" in panel.start_closeups("hero", ["full.png", "other.png"])
    status, rows, *view = wait(panel)
    assert "1 close-up(s) made from 2 image(s)" in status
    assert rows == [["full.png", "close-up", "-> full_closeup.png"],
                    ["other.png", "not made", "no face found in its original"]]
    view = values(panel, view)
    assert view["selection"]["value"] == ["full_closeup.png"]
    assert [(Path(p).name, label) for p, label in view["closeups_gallery"]] == \
        [("full_closeup.png", "full_closeup.png <- full.png")]
    picked, highlight = panel.select_closeup("hero", [], SimpleNamespace(index=0))
    assert picked["value"] == ["full_closeup.png"] and highlight["selected_index"] == dp.NO_HIGHLIGHT
    assert panel.select_closeup("hero", ["full_closeup.png"], SimpleNamespace(index=0))[0]["value"] == []
    message, *view = panel.exclude("hero", ["full_closeup.png"])
    assert values(panel, view)["closeups_gallery"] == []


def test_picked_folders_are_imported_once_and_stay_inside_on_a_server(tmp_path):
    src = tmp_path / "ws" / "photos"
    (src / "more").mkdir(parents=True)
    Image.new("RGB", (120, 90), (200, 40, 40)).save(src / "p0.png")
    Image.new("RGB", (120, 90), (40, 200, 40)).save(src / "more" / "p1.png")
    panel = panel_for(tmp_path / "ws")
    assert dp.picker_root(panel.host) == Path.home()
    # the picker's value when a folder is ticked: the folder and its subfolders (and files)
    picked = [str(src), str(src / "more"), str(src / "more" / "p1.png")]
    assert dp.topmost([Path(p) for p in picked]) == [src]
    message, _ = panel.start_import("hero", "", None, 128, "pad", "#808080", "off", False, picked, workers=1)
    assert "importing 1 input(s)" in message
    status, rows, *_ = wait(panel)
    assert sorted(row[0] for row in rows) == ["p0.png", "p1.png"] and "2 image(s) prepared" in status

    confined = StandaloneHost(tmp_path / "ws", confined=True)
    assert dp.picker_root(confined) == tmp_path / "ws"
    with pytest.raises(ValueError, match="outside the folders"):
        dp.import_inputs("", None, confined.path_roots(), [str(tmp_path / "elsewhere")])
    assert dp.import_inputs("", None, confined.path_roots(), [str(src)]) == [src]


def test_batch_edits_stop_between_images_and_leave_the_rest_untouched(tmp_path, project):
    from lora_trainer.dataset import curate
    from lora_trainer.dataset.edits import Edits

    before = {p.name: p.read_bytes() for p in project.train_images.glob("*.png")}
    stop = __import__("threading").Event()
    written = curate.edit_images(project, sorted(before), Edits(brightness=1.5),
                                 progress=lambda done, total, path: stop.set(), stop=stop)
    assert [p.name for p in written] == ["000.png"]
    assert (project.train_images / "000.png").read_bytes() != before["000.png"]
    assert all((project.train_images / n).read_bytes() == before[n] for n in sorted(before)[1:])
    assert not [p for p in project.root.iterdir() if p.name.startswith(".")]  # no scratch left
