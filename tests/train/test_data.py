"""The kohya training folder: repeats, captions (missing ones warned, never dropped), bad files."""

import random
from pathlib import Path

import pytest
from PIL import Image

from lora_trainer.train.data import DatasetError, process_caption, scan_training_folder


def _image(path, size=(32, 24), color=(200, 10, 10), caption=None, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")
    return path


def test_synthetic_dataset_scans_with_its_captions(character_dataset):
    result = scan_training_folder(character_dataset)
    assert result.num_images == 8 and result.num_samples == 8
    assert result.warnings == []
    first = result.items[0]
    assert first.folder == "1_myLoRA" and first.size == (64, 64) and first.repeats == 1
    assert first.caption.startswith("myLoRA, 1girl, red hair")
    assert result.tag_frequency()["1_myLoRA"]["myLoRA"] == 8


def test_repeats_of_several_folders_are_counted(tmp_path):
    for i in range(3):
        _image(tmp_path / "10_alice" / f"{i}.png", caption="alice")
    _image(tmp_path / "2_style" / "a.jpg", caption="style")
    result = scan_training_folder(tmp_path)
    assert result.num_images == 4
    assert result.num_samples == 3 * 10 + 2
    assert sorted(item.repeats for item in result.items) == [2, 10, 10, 10]
    indices = result.sample_indices()
    assert len(indices) == 32 and indices.count(0) == 10


def test_missing_caption_trains_with_class_name_and_is_warned(tmp_path):
    _image(tmp_path / "3_my_char" / "with.png", caption="my_char, smiling\n")
    lonely = _image(tmp_path / "3_my_char" / "without.png")
    result = scan_training_folder(tmp_path)
    captions = {item.path.name: item.caption for item in result.items}
    assert captions == {"with.png": "my_char, smiling", "without.png": "my_char"}
    assert result.missing_captions == [lonely]
    assert any("no .txt caption" in w and str(lonely) in w for w in result.warnings)


def test_caption_extension_and_bom_and_extra_lines(tmp_path):
    img = _image(tmp_path / "1_x" / "a.png")
    img.with_suffix(".caption").write_bytes("\ufeffcafé, tag\nsecond line\n".encode())
    result = scan_training_folder(tmp_path, caption_extension=".caption")
    assert result.items[0].caption == "café, tag"
    assert any("only the first is used" in w for w in result.warnings)


def test_bad_folders_are_skipped_with_a_reason(tmp_path):
    _image(tmp_path / "5_good" / "a.png", caption="good")
    _image(tmp_path / "no_repeats_here" / "a.png", caption="x")
    _image(tmp_path / "0_zero" / "a.png", caption="x")
    result = scan_training_folder(tmp_path)
    assert [item.folder for item in result.items] == ["5_good"]
    reasons = {path.name: why for path, why in result.skipped_folders}
    assert "does not match <repeats>_<name>" in reasons["no_repeats_here"]
    assert "must be 1 or more" in reasons["0_zero"]
    assert sum("folder skipped" in w for w in result.warnings) == 2


def test_every_bad_file_is_listed_in_one_error(tmp_path):
    folder = tmp_path / "1_set"
    _image(folder / "ok.png", caption="ok")
    (folder / "empty.png").write_bytes(b"")
    (folder / "garbage.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    good_jpeg = _image(folder / "cut.jpg", size=(256, 256), fmt="JPEG").read_bytes()
    (folder / "cut.jpg").write_bytes(good_jpeg[: len(good_jpeg) // 2])  # truncated download
    (folder / "latin1.png").write_bytes((folder / "ok.png").read_bytes())
    (folder / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DatasetError) as info:
        scan_training_folder(tmp_path)
    message = str(info.value)
    assert message.startswith("4 file(s)")
    for name in ("empty.png", "garbage.jpg", "cut.jpg", "latin1.txt"):
        assert name in message
    assert "0 bytes" in message and "not UTF-8" in message
    assert "ok.png" not in message


def test_utf16_captions_train_and_oversized_or_bomless_ones_are_listed(tmp_path):
    folder = tmp_path / "1_set"
    _image(folder / "bom16.png")
    (folder / "bom16.txt").write_bytes("café, smile".encode("utf-16"))  # with a BOM: read as text
    _image(folder / "big.png")
    (folder / "big.txt").write_bytes(b"tag, " * 20000)  # 100 KB: no real caption
    _image(folder / "nobom.png")
    (folder / "nobom.txt").write_bytes("my caption".encode("utf-16-le"))  # no BOM: "m\x00y\x00..." refused
    with pytest.raises(DatasetError) as info:
        scan_training_folder(tmp_path)
    message = str(info.value)
    assert message.startswith("2 file(s)") and "big.txt: caption over 64 KB" in message
    assert "nobom.txt: caption holds NUL bytes" in message and "bom16" not in message
    (folder / "big.txt").unlink()
    (folder / "nobom.txt").unlink()
    items = {item.path.name: item.caption for item in scan_training_folder(tmp_path).items}
    assert items["bom16.png"] == "café, smile"


def test_exif_rotation_gives_the_trained_size(tmp_path):
    path = tmp_path / "1_x" / "portrait.jpg"
    path.parent.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (40, 20)).save(path, exif=exif)
    assert scan_training_folder(tmp_path).items[0].size == (20, 40)


def test_empty_or_missing_folder_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        scan_training_folder(tmp_path / "nope")
    (tmp_path / "img" / "photos").mkdir(parents=True)
    with pytest.raises(DatasetError, match="(?s)no training images.*skipped photos: name does not match"):
        scan_training_folder(tmp_path / "img")


def test_process_caption_keeps_the_first_tokens_and_shuffles_the_rest():
    caption = "myLoRA, 1girl, red hair, smile, outdoors, hat, dress"
    assert process_caption(caption, False, 1, random.Random(0)) == caption
    seen = set()
    for seed in range(20):
        out = process_caption(caption, True, 2, random.Random(seed))
        tags = out.split(", ")
        assert tags[:2] == ["myLoRA", "1girl"]
        assert sorted(tags) == sorted(caption.split(", "))
        seen.add(out)
    assert len(seen) > 5
    assert process_caption(caption, True, 2, random.Random(3)) == process_caption(caption, True, 2,
                                                                                    random.Random(3))


def test_caption_dropout_whole_per_tag_and_by_epoch():
    caption = "myLoRA, 1girl, red hair, smile, outdoors, hat, dress"
    assert process_caption(caption, False, 1, random.Random(0), drop=True) == ""
    assert process_caption(caption, True, 1, random.Random(0), dropout=1.0) == ""
    rng = random.Random(0)
    assert process_caption(caption, False, 1, rng, dropout=0.0, tag_dropout=0.0) == caption
    assert rng.random() == random.Random(0).random()  # an option that is off draws nothing
    # per tag: the first keep_tokens always stay, in front; about half of the others go
    kept = [process_caption(caption, False, 1, random.Random(seed), tag_dropout=0.5).split(", ")
            for seed in range(200)]
    assert all(tags[0] == "myLoRA" and set(tags) <= set(caption.split(", ")) for tags in kept)
    share = sum(len(tags) - 1 for tags in kept) / (200 * 6)
    assert 0.4 < share < 0.6, share
    assert process_caption(caption, False, 1, random.Random(0), tag_dropout=1.0) == "myLoRA"
    # about a quarter of whole captions dropped at 0.25
    dropped = sum(process_caption(caption, False, 1, random.Random(s), dropout=0.25) == "" for s in range(400))
    assert 60 < dropped < 140, dropped


def test_hold_out_takes_a_fraction_or_a_count_the_same_way_each_time():
    from lora_trainer.train.data import ImageItem, hold_out

    items = [ImageItem(Path(f"/set/1_x/{i:02d}.png"), "x", 1, "1_x", (64, 64)) for i in range(20)]
    train_items, held = hold_out(items, 0.1, seed=7)
    assert len(held) == 2 and len(train_items) == 18 and not set(map(id, held)) & set(map(id, train_items))
    assert hold_out(list(reversed(items)), 0.1, seed=7)[1] == sorted(held, key=lambda i: str(i.path), reverse=True)
    assert hold_out(items, 0.1, seed=8)[1] != held
    assert len(hold_out(items, 5, seed=7)[1]) == 5 and len(hold_out(items, 0.01, seed=7)[1]) == 1
    assert hold_out(items, 0, seed=7) == (items, [])
    with pytest.raises(DatasetError, match="holds out 20 of the 20 images: at least one must stay"):
        hold_out(items, 20, seed=7)
