"""Fixtures for the caption tests: the tiny WD14-shaped tagger (tools/make_tiny_wd14_tagger.py) and
small captioned datasets."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lora_trainer.captions import DEMO_MODEL, Tagger, resolve_model

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "captions"


@pytest.fixture(scope="session")
def caption_assets():
    return ASSETS


@pytest.fixture(scope="session")
def tiny_model():
    return resolve_model(DEMO_MODEL)


@pytest.fixture(scope="session")
def tagger(tiny_model):
    return Tagger(tiny_model, device="cpu", batch_size=4)


@pytest.fixture
def dataset(tmp_path):
    """A folder of four images with hand-written captions (and one image without a caption)."""
    folder = tmp_path / "1_myLoRA"
    folder.mkdir()
    captions = {
        "a": "1girl, smile, smiling, short hair, simple background, standing, looking at viewer",
        "b": "myLoRA, 1girl, Smile, glasses, white background, hand on hip, full body",
        "c": "looking at viewer, hand on hip, standing, white background, glasses, 1girl, red shirt, myLoRA",
        "d": "1girl, short_hair, border, holding cup, upper body, smile, short hair",
    }
    for stem, caption in captions.items():
        Image.new("RGB", (8, 8), (200, 100, 50)).save(folder / f"{stem}.png")
        (folder / f"{stem}.txt").write_text(caption + "\n", encoding="utf-8")
    Image.new("RGB", (8, 8), (0, 0, 0)).save(folder / "e.jpg")
    return folder

