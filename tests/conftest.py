"""Test isolation: tools that write into the home folder (onnxruntime, huggingface-hub, rembg,
Chromium) get a private one, and nothing may reach the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    for var, sub in (("HOME", ""), ("XDG_CACHE_HOME", ".cache"), ("HF_HOME", ".cache/huggingface"),
                     ("U2NET_HOME", ".u2net")):
        path = home / sub
        path.mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(path)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    yield


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory):
    """A tiny random-weight SDXL-shaped model, saved as a diffusers folder, as a single-file
    checkpoint in the original (SGM) key layout, and with its local config folder."""
    from lora_trainer.demo.tiny_sdxl import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny_sdxl"))


@pytest.fixture
def character_dataset(tmp_path):
    """A kohya-layout training folder `img/1_myLoRA/` of 8 captioned 64 px synthetic images."""
    from lora_trainer.demo.synthetic import make_character_dataset

    return make_character_dataset(tmp_path / "img", name="myLoRA", count=8, size=64, repeats=1, seed=0)


def _write_lora(folder: Path, stem: str, modified: float, **metadata: str) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.safetensors"
    save_file({"lora_unet_x.alpha": np.ones(1, np.float32)}, str(path), metadata=metadata or None)
    os.utime(path, (modified, modified))
    return path


@pytest.fixture(scope="session")
def write_lora():
    """`write_lora(folder, stem, modified_time, ss_output_name=..., ss_epoch=..., ss_steps=...)`: a
    small safetensors file named and tagged as the trainer's LoRA files are (no real weights)."""
    return _write_lora
