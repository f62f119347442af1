"""Batch edits on a small dataset give the expected caption files; undo puts them back."""

import functools
import json

import pytest
from PIL import Image

from lora_trainer.captions import (
    TagGroups,
    TagSettings,
    add_tags,
    dedupe,
    edit_captions,
    last_edit,
    list_images,
    order_tags,
    put_first,
    read_caption,
    remove_tags,
    replace_tag,
    select_images,
    set_caption,
    tag_folder,
    undo,
)
from lora_trainer.captions.edit import JOURNAL
from lora_trainer.captions.order import ORDER


def texts(folder):
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.txt"))}


def test_listing_and_selection(dataset):
    (dataset / ".hidden.png").write_bytes(b"")
    names = [p.name for p in list_images(dataset)]
    assert names == ["a.png", "b.png", "c.png", "d.png", "e.jpg"]
    assert [p.name for p in select_images(list_images(dataset), ["b", "d.png", "[ab]*"])] == ["a.png", "b.png", "d.png"]
    with pytest.raises(FileNotFoundError, match="zzz"):
        select_images(list_images(dataset), ["zzz"])


def test_trigger_first_everywhere_and_undo(dataset):
    before = texts(dataset)
    result = edit_captions(dataset, functools.partial(put_first, trigger="myLoRA"), "trigger myLoRA")
    assert [p.name for p in result.changed] == ["a.txt", "c.txt", "d.txt", "e.txt"]  # b already starts with it
    assert result.unchanged == 1
    after = texts(dataset)
    assert after["a.txt"] == "myLoRA, 1girl, smile, smiling, short hair, simple background, standing, looking at viewer\n"
    assert after["c.txt"].startswith("myLoRA, looking at viewer") and after["c.txt"].count("myLoRA") == 1
    assert after["e.txt"] == "myLoRA\n"  # an image without a caption gets one
    assert last_edit(dataset) == "trigger myLoRA"
    restored = undo(dataset)
    assert len(restored.restored) == 4 and restored.skipped == []
    assert texts(dataset) == before and not (dataset / "e.txt").exists()
    assert not (dataset / JOURNAL).exists()
    with pytest.raises(LookupError, match="nothing to undo"):
        undo(dataset)


def test_order_with_trigger(dataset):
    edit_captions(dataset, functools.partial(order_tags, trigger="myLoRA"), "order")
    assert texts(dataset)["c.txt"] == ("myLoRA, 1girl, glasses, red shirt, white background, standing, hand on hip, "
                                       "looking at viewer\n")
    assert texts(dataset)["d.txt"] == ("myLoRA, 1girl, short_hair, smile, short hair, border, holding cup, "
                                       "upper body\n")


def test_replace_on_a_selection(dataset):
    result = edit_captions(dataset, functools.partial(replace_tag, old="smiling", new="smile"), "replace",
                           only=["a", "b"])
    assert [p.name for p in result.changed] == ["a.txt"]
    assert texts(dataset)["a.txt"] == "1girl, smile, short hair, simple background, standing, looking at viewer\n"


def test_add_and_remove(dataset):
    edit_captions(dataset, functools.partial(add_tags, new=["outdoors", "smile"]), "add", only=["d"])
    assert texts(dataset)["d.txt"] == "1girl, short_hair, border, holding cup, upper body, smile, short hair, outdoors\n"
    edit_captions(dataset, functools.partial(remove_tags, patterns=["* background", "glasses"]), "remove")
    assert texts(dataset)["b.txt"] == "myLoRA, 1girl, Smile, hand on hip, full body\n"
    assert "background" not in "".join(texts(dataset).values())


def test_dedupe_exact_then_near(dataset):
    edit_captions(dataset, dedupe, "dedupe")
    assert texts(dataset)["d.txt"] == "1girl, short_hair, border, holding cup, upper body, smile\n"
    assert texts(dataset)["a.txt"].startswith("1girl, smile, smiling,")  # near-duplicates only when asked
    edit_captions(dataset, functools.partial(dedupe, near=True), "dedupe near")
    assert texts(dataset)["a.txt"] == "1girl, smile, short hair, simple background, standing, looking at viewer\n"
    undo(dataset)  # one step back: the exact dedupe stays
    assert texts(dataset)["a.txt"].startswith("1girl, smile, smiling,")
    assert texts(dataset)["d.txt"] == "1girl, short_hair, border, holding cup, upper body, smile\n"


def test_per_image_editing(dataset):
    set_caption(dataset, "b.png", ["myLoRA", "1girl", "café au lait"])
    assert texts(dataset)["b.txt"] == "myLoRA, 1girl, café au lait\n"
    assert read_caption(dataset / "b.png") == ["myLoRA", "1girl", "café au lait"]
    undo(dataset)
    assert texts(dataset)["b.txt"] == "myLoRA, 1girl, Smile, glasses, white background, hand on hip, full body\n"
    with pytest.raises(FileNotFoundError, match="nope.png"):
        set_caption(dataset, "nope.png", ["x"])


def test_undo_leaves_captions_changed_since_unless_forced(dataset):
    edit_captions(dataset, functools.partial(add_tags, new=["x"]), "add x", only=["a", "b"])
    (dataset / "b.txt").write_text("edited by hand\n", encoding="utf-8")
    result = undo(dataset)
    assert [p.name for p in result.restored] == ["a.txt"] and [p.name for p in result.skipped] == ["b.txt"]
    assert "changed since" in result.summary()
    assert texts(dataset)["b.txt"] == "edited by hand\n"

    edit_captions(dataset, functools.partial(add_tags, new=["x"]), "add x", only=["c"])
    (dataset / "c.txt").write_text("edited by hand\n", encoding="utf-8")
    assert [p.name for p in undo(dataset, force=True).restored] == ["c.txt"]
    assert "hand on hip" in texts(dataset)["c.txt"]


def test_an_edit_that_changes_nothing_keeps_the_previous_undo(dataset):
    edit_captions(dataset, functools.partial(add_tags, new=["x"]), "add x")
    result = edit_captions(dataset, functools.partial(add_tags, new=["x"]), "add x again")
    assert result.changed == [] and last_edit(dataset) == "add x"


def test_caption_files_are_utf8_one_line_and_leave_no_temp_files(dataset):
    (dataset / "a.txt").write_bytes("\ufeff1girl,smile\nsmiling\n".encode())  # BOM, no spaces, two lines
    assert read_caption(dataset / "a.png") == ["1girl", "smile", "smiling"]
    edit_captions(dataset, functools.partial(put_first, trigger="myLoRA"), "trigger")
    assert (dataset / "a.txt").read_bytes() == b"myLoRA, 1girl, smile, smiling\n"
    assert sorted(p.name for p in dataset.iterdir() if p.name.startswith(".")) == [JOURNAL]
    journal = json.loads((dataset / JOURNAL).read_text(encoding="utf-8"))
    assert journal["label"] == "trigger" and {e["path"] for e in journal["files"]} >= {"a.txt", "e.txt"}


def _colour_dataset(folder):
    folder.mkdir()
    for name, rgb in {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}.items():
        Image.new("RGB", (24, 16), rgb).save(folder / f"{name}.png")
    return folder


def test_tag_folder_writes_captions_with_parentheses_as_they_are(tmp_path, tagger):
    folder = _colour_dataset(tmp_path / "set")
    result = tag_folder(folder, tagger, trigger="myLoRA")
    assert [p.name for p in result.written] == ["blue.txt", "green.txt", "red.txt"] and result.skipped == []
    assert texts(folder)["red.txt"].startswith("myLoRA, demo girl (tiny), red shirt, 1girl, solo,")
    assert texts(folder)["green.txt"].startswith("myLoRA, green hair, ^_^, 1girl")
    assert "tagged 3 image(s) on CPUExecutionProvider" in result.summary()
    undo(folder)
    assert texts(folder) == {}  # undo removes the captions the tagger created


def test_tag_folder_existing_captions(tmp_path, tagger):
    folder = _colour_dataset(tmp_path / "set")
    (folder / "red.txt").write_text("myLoRA, red shirt, hand-written\n", encoding="utf-8")
    settings = TagSettings(general_threshold=0.9)  # red: red shirt, 1girl, solo (+ the character)

    skipped = tag_folder(folder, tagger, settings)
    assert [p.name for p in skipped.skipped] == ["red.png"]
    assert texts(folder)["red.txt"] == "myLoRA, red shirt, hand-written\n"

    tag_folder(folder, tagger, settings, existing="append", only=["red"])
    assert texts(folder)["red.txt"] == "myLoRA, red shirt, hand-written, demo girl (tiny), 1girl, solo\n"

    tag_folder(folder, tagger, settings, existing="overwrite", only=["red"])
    assert texts(folder)["red.txt"] == "demo girl (tiny), red shirt, 1girl, solo\n"
    with pytest.raises(ValueError, match="existing must be"):
        tag_folder(folder, tagger, existing="replace")


def test_tag_folder_reports_unreadable_images(tmp_path, tagger):
    folder = _colour_dataset(tmp_path / "set")
    (folder / "broken.png").write_bytes(b"not a png")
    result = tag_folder(folder, tagger)
    assert len(result.written) == 3 and len(result.errors) == 1 and "broken.png" in result.errors[0]


def test_synthetic_demo_dataset_into_the_guide_format(character_dataset, tagger):
    folder = character_dataset / "1_myLoRA"
    tag_folder(folder, tagger, existing="append")
    edit_captions(folder, functools.partial(remove_tags, patterns=["* (tiny)"]), "remove characters")
    edit_captions(folder, functools.partial(order_tags, trigger="myLoRA"), "order")
    groups = TagGroups()
    for image in list_images(folder):
        tags = read_caption(image)
        assert tags[:3] == ["myLoRA", "1girl", "solo"] and "purple dress" in tags
        positions = [ORDER.index(groups.group_of(t)) for t in tags[1:]]
        assert positions == sorted(positions), tags  # subject, switch, negative, pose, hands, camera


def test_a_stopped_tagging_writes_what_it_tagged_and_lists_the_rest(tmp_path, tagger):
    import threading

    folder = _colour_dataset(tmp_path / "set")
    stop = threading.Event()
    batch = tagger.batch_size
    tagger.batch_size = 1
    try:
        result = tag_folder(folder, tagger, progress=lambda done, total: stop.set(), stop=stop)
    finally:
        tagger.batch_size = batch
    assert [p.name for p in result.written] == ["blue.txt"]
    assert [p.name for p in result.not_tagged] == ["green.png", "red.png"]
    assert result.summary().startswith("stopped: tagged 1 image(s)") and "2 image(s) not tagged" in result.summary()
    assert sorted(texts(folder)) == ["blue.txt"]
