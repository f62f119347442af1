"""Background removal through rembg with the tiny committed segmenter (red = subject): one session per
batch, seeded H-random S0.5 V0.5 colours, masks kept, and a clear message for a missing model."""

from __future__ import annotations

import colorsys
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image

from lora_trainer.dataset import background
from lora_trainer.dataset.background import (
    BackgroundRemover,
    ModelMissingError,
    new_session,
    random_fill_color,
    remove_backgrounds,
)
from lora_trainer.dataset.prepare import PrepareOptions, prepare
from lora_trainer.project import Project

TINY = Path(__file__).resolve().parents[1] / "assets" / "tiny_segmenter.onnx"


def subject(width=800, height=600, box=(300, 150, 500, 450)) -> Image.Image:
    im = Image.new("RGB", (width, height), (40, 160, 90))
    im.paste((230, 30, 30), box)
    return im


def test_random_fill_colour_is_hsv_half_half_and_seeded():
    a = [random_fill_color(random.Random(7)) for _ in range(2)]
    assert a[0] == a[1]
    colours = [random_fill_color(rng) for rng in [random.Random(1)] for _ in range(20)]
    assert len(set(colours)) > 10
    for r, g, b in colours:
        _, s, v = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
        assert abs(s - 0.5) < 0.02 and abs(v - 0.5) < 0.01


def test_replace_background_and_mask():
    remover = BackgroundRemover.create(str(TINY))
    out, mask = remover.replace(subject(), (10, 20, 30))
    assert out.size == mask.size == (800, 600) and mask.mode == "L"
    assert mask.getpixel((400, 300)) > 200 and mask.getpixel((50, 50)) < 30
    assert max(abs(a - b) for a, b in zip(out.getpixel((400, 300)), (230, 30, 30))) <= 3
    assert out.getpixel((50, 50)) == (10, 20, 30)


def test_batch_uses_one_session_and_keeps_masks(tmp_path, monkeypatch):
    import rembg

    made = []
    real = rembg.new_session
    monkeypatch.setattr(rembg, "new_session", lambda *a, **k: made.append(a) or real(*a, **k))
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        subject().save(src / f"s{i}.png")
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    records = remove_backgrounds(sorted(src.iterdir()), tmp_path / "out", model=str(TINY), seed=3)
    assert len(made) == 1
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    rng = random.Random(3)
    for r in records:
        assert tuple(r["color"]) == random_fill_color(rng)
        assert Image.open(r["output"]).getpixel((5, 5)) == tuple(r["color"])
        assert Path(r["mask"]).name.endswith("_mask.png") and Image.open(r["mask"]).mode == "L"


def test_prepare_with_background_subject_crop(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    subject(2000, 1500, (900, 300, 1300, 1200)).save(src / "a.png")
    project = Project(tmp_path / "p", "x")
    options = PrepareOptions(background=True, background_model=str(TINY), crop="subject", mode="bucket",
                             background_seed=5, workers=1)
    report = prepare([src], project, options)
    e = report.entries[0]
    assert e.status == "ok", e.line()
    out, mask = Image.open(e.output), Image.open(e.mask)
    # the subject (400 x 900) plus a 5% margin, not upscaled
    assert out.size == mask.size and 400 < out.width < 520 and 900 < out.height < 1010
    assert Path(e.mask).parent == project.masks
    colour = random_fill_color(random.Random(5))
    assert out.getpixel((2, 2)) == colour
    assert f"background replaced with {colour}" in e.notes


def test_named_model_from_u2net_home(tmp_path, monkeypatch):
    home = tmp_path / "u2net"
    home.mkdir()
    shutil.copy(TINY, home / "u2net.onnx")
    monkeypatch.setenv("U2NET_HOME", "restored-after-the-test")  # new_session(home=...) sets it
    monkeypatch.setenv("MODEL_CHECKSUM_DISABLED", "1")
    session = new_session("u2net", home=home)
    assert BackgroundRemover(session).mask(subject()).getpixel((400, 300)) > 200


def test_missing_model_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "empty"))
    with pytest.raises(ModelMissingError) as e:
        new_session("birefnet-portrait")
    text = str(e.value)
    assert f"birefnet-portrait.onnx not found in {tmp_path / 'empty'}" in text and "--download-model" in text
    with pytest.raises(ModelMissingError, match="does not exist"):
        new_session(str(tmp_path / "nope.onnx"))
    with pytest.raises(ValueError, match="unknown rembg model 'u3net'"):
        new_session("u3net")


def test_damaged_model_is_a_clear_error(tmp_path, monkeypatch):
    home = tmp_path / "u2net"
    home.mkdir()
    (home / "u2net.onnx").write_bytes(b"not a model")
    monkeypatch.setenv("U2NET_HOME", "restored-after-the-test")
    monkeypatch.setenv("MODEL_CHECKSUM_DISABLED", "1")
    with pytest.raises(ModelMissingError, match="could not be loaded.*put a good copy at"):
        new_session("u2net", home=home)
    assert background.u2net_home() == home
