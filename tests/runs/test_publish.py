"""Publishing a LoRA into the WebUI's LoRA folder: a hard link, a copy where links are impossible,
and never a second, different file under a name the WebUI already knows."""

from __future__ import annotations

import errno
import os

import pytest

from lora_trainer.fsutil import write_text_atomic
from lora_trainer.runs import publish
from lora_trainer.runs.publish import PublishError, project_subfolder, publish_lora, same_name_files


@pytest.fixture
def lora(tmp_path):
    path = tmp_path / "project" / "model" / "myLoRA-000002.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"epoch two weights")
    return path


@pytest.fixture
def lora_root(tmp_path):
    root = tmp_path / "models" / "Lora"
    root.mkdir(parents=True)
    return root


def test_hard_link_into_the_subfolder(lora, lora_root):
    published = publish_lora(lora, lora_root, "lora_trainer/myproject")

    assert published == lora_root / "lora_trainer" / "myproject" / "myLoRA-000002.safetensors"
    assert os.path.samefile(published, lora)  # no second copy on disk
    assert lora.stat().st_nlink == 2


def test_publishing_again_is_a_no_op(lora, lora_root):
    first = publish_lora(lora, lora_root, "lora_trainer/p")
    second = publish_lora(lora, lora_root, "lora_trainer/p")

    assert second == first
    assert sorted(p.name for p in first.parent.iterdir()) == ["myLoRA-000002.safetensors"]


def test_an_identical_file_already_in_the_lora_folder_is_reused(lora, lora_root):
    (lora_root / "old").mkdir()
    copy = lora_root / "old" / lora.name
    copy.write_bytes(lora.read_bytes())

    assert publish_lora(lora, lora_root, "lora_trainer/p") == copy
    assert not (lora_root / "lora_trainer").exists()


def test_a_different_file_of_the_same_name_is_never_replaced(lora, lora_root):
    target = lora_root / "lora_trainer" / "p" / lora.name
    target.parent.mkdir(parents=True)
    target.write_bytes(b"an older run's weights")

    with pytest.raises(PublishError) as caught:
        publish_lora(lora, lora_root, "lora_trainer/p")

    message = str(caught.value)
    assert str(target) in message and str(lora) in message
    assert "output name" in message
    assert target.read_bytes() == b"an older run's weights"


@pytest.mark.parametrize("other", ["myLoRA-000002.pt", "someone/else/myLoRA-000002.safetensors",
                                   "MYLORA/myLoRA-000002.ckpt"])
def test_the_same_name_anywhere_in_the_lora_folder_is_refused(lora, lora_root, other):
    """The WebUI lists LoRAs by file stem across all sub-folders: one name, one file."""
    clash = lora_root / other
    clash.parent.mkdir(parents=True, exist_ok=True)
    clash.write_bytes(b"not ours")

    with pytest.raises(PublishError, match="myLoRA-000002"):
        publish_lora(lora, lora_root, "lora_trainer/p")
    assert not (lora_root / "lora_trainer").exists()


def test_other_names_and_non_lora_files_do_not_clash(lora, lora_root):
    (lora_root / "myLoRA-000002.txt").write_text("notes")
    (lora_root / "myLoRA-000003.safetensors").write_bytes(b"another epoch")

    published = publish_lora(lora, lora_root, "lora_trainer/p")

    assert os.path.samefile(published, lora)
    assert same_name_files(lora_root, "myLoRA-000002") == [published]


def test_the_published_link_keeps_its_content_when_the_project_file_is_rewritten(lora, lora_root):
    """The trainer replaces files with os.replace (a new inode): the published LoRA stays as it
    was, and publishing the new content under the old name is refused rather than done silently."""
    published = publish_lora(lora, lora_root, "lora_trainer/p")
    write_text_atomic(lora, "a new run's weights")

    assert published.read_bytes() == b"epoch two weights"
    with pytest.raises(PublishError):
        publish_lora(lora, lora_root, "lora_trainer/p")


@pytest.mark.parametrize("code", [errno.EXDEV, errno.EPERM, errno.ENOTSUP])
def test_copies_where_a_hard_link_is_impossible(lora, lora_root, monkeypatch, code):
    def no_link(src, dst):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(publish.os, "link", no_link)
    published = publish_lora(lora, lora_root, "lora_trainer/p")

    assert published.read_bytes() == lora.read_bytes()
    assert not os.path.samefile(published, lora)
    assert sorted(p.name for p in published.parent.iterdir()) == [lora.name]  # no temp file left
    assert publish_lora(lora, lora_root, "lora_trainer/p") == published  # identical copy: no-op


def test_other_link_errors_are_not_hidden(lora, lora_root, monkeypatch):
    def disk_full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(publish.os, "link", disk_full)
    with pytest.raises(OSError) as caught:
        publish_lora(lora, lora_root, "p")
    assert caught.value.errno == errno.ENOSPC


def test_the_subfolder_may_be_empty(lora, lora_root):
    assert publish_lora(lora, lora_root, "") == lora_root / lora.name


@pytest.mark.parametrize("subfolder", ["../outside", "/abs/path", "a/../../b"])
def test_the_subfolder_stays_inside_the_lora_folder(lora, lora_root, subfolder):
    with pytest.raises(ValueError, match="inside the LoRA folder"):
        publish_lora(lora, lora_root, subfolder)


def test_missing_or_non_lora_files_are_refused(tmp_path, lora_root):
    with pytest.raises(FileNotFoundError):
        publish_lora(tmp_path / "gone.safetensors", lora_root, "p")
    state = tmp_path / "optimizer.json"
    state.write_text("{}")
    with pytest.raises(ValueError, match="not a LoRA file"):
        publish_lora(state, lora_root, "p")


def test_project_subfolder_is_named_by_the_project():
    assert project_subfolder("anna") == "lora_trainer/anna"
    assert project_subfolder("anna", root="ours") == "ours/anna"
    for bad in ("", "..", "a/b", "../x"):
        with pytest.raises(ValueError, match="cannot be a folder name"):
            project_subfolder(bad)


def test_a_published_lora_gets_a_card_forge_lists_as_sdxl_with_the_trigger_word(tmp_path, lora_root, write_lora):
    import json

    lora = write_lora(tmp_path / "hero" / "model", "hero-000003", 1, ss_output_name="hero", ss_epoch="3",
                      ss_steps="24", ss_tag_frequency=json.dumps({"10_zkw": {"zkw": 8, "smile": 3}, "2_extra": {"a": 1}}))
    published = publish_lora(lora, lora_root, "lora_trainer/hero", card=publish.lora_card(lora))
    card = json.loads(published.with_suffix(".json").read_text(encoding="utf-8"))
    assert card["sd version"] == "SDXL"  # listed beside an SDXL model, whatever Forge's heuristics say
    assert card["activation text"] == "zkw" and card["preferred weight"] == 1.0
    assert "run hero, epoch 3, step 24" in card["description"]
    assert oct(published.with_suffix(".json").stat().st_mode & 0o777) == oct(0o666 & ~_umask())

    # a card the user edited in the WebUI is kept
    published.with_suffix(".json").write_text('{"activation text": "mine"}', encoding="utf-8")
    publish_lora(lora, lora_root, "lora_trainer/hero", card=publish.lora_card(lora))
    assert json.loads(published.with_suffix(".json").read_text(encoding="utf-8")) == {"activation text": "mine"}


def test_a_card_for_a_file_without_metadata_uses_its_name(lora):
    card = publish.lora_card(lora)
    assert card["activation text"] == "myLoRA-000002" and card["sd version"] == "SDXL"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_preview_is_the_png_beside_the_lora_and_replaces_the_last_one(lora, lora_root, tmp_path):
    """Forge's LoRA card shows `<stem>.preview.png`: the chosen cell's PNG, byte for byte, with the
    ordinary permissions of a new file; choosing again replaces it; a non-PNG or missing LoRA is refused."""
    from PIL import Image

    from lora_trainer.fsutil import new_file_mode

    published = publish_lora(lora, lora_root, "lora_trainer/p")
    cells = []
    for shade in (10, 200):
        cell = tmp_path / f"cell{shade}.png"
        Image.new("RGB", (8, 8), (shade, shade, shade)).save(cell)
        cells.append(cell)
    written = publish.write_preview(published, cells[0])
    assert written == published.with_name("myLoRA-000002.preview.png")
    assert written.read_bytes() == cells[0].read_bytes()
    assert written.stat().st_mode & 0o777 == new_file_mode()
    publish.write_preview(published, cells[1])
    assert written.read_bytes() == cells[1].read_bytes()
    assert sorted(p.name for p in written.parent.iterdir()) == ["myLoRA-000002.preview.png",
                                                                "myLoRA-000002.safetensors"]  # no temp file left

    jpeg = tmp_path / "cell.jpg"
    Image.new("RGB", (8, 8)).save(jpeg)
    with pytest.raises(ValueError, match=r"cell\.jpg is a JPEG image, not a PNG"):
        publish.write_preview(published, jpeg)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"junk\.png: not an image"):
        publish.write_preview(published, tmp_path / "junk.png")
    with pytest.raises(FileNotFoundError, match="LoRA file not found"):
        publish.write_preview(lora_root / "gone.safetensors", cells[0])
    assert written.read_bytes() == cells[1].read_bytes()  # refusals leave the preview as it was
