"""The Train panel's GPU memory line (train/vram.py behind it): shown for the form's settings before
Start, with the GPU's verdict and the changes that would make a run fit."""

from __future__ import annotations

import html
import re

import gradio as gr

from lora_trainer.config.presets import PRESETS
from lora_trainer.host import StandaloneHost
from lora_trainer.runs.runner import TrainRunner
from lora_trainer.ui import train_panel as tp
from lora_trainer.ui.form import FIELDS, form_values

GIB = 2**30


def panel_for(tmp_path, config_dir) -> tp.TrainPanel:
    host = StandaloneHost(tmp_path, config_dir=config_dir)
    with gr.Blocks():
        return tp.TrainPanel(host, TrainRunner(host)).build()


def form(settings: dict, **changes) -> list:
    values = form_values({**settings, **changes})
    return values


def test_the_line_follows_the_settings_and_says_what_makes_a_run_fit(tmp_path, tiny_sdxl, monkeypatch):
    panel = panel_for(tmp_path, tiny_sdxl.config_dir)
    settings = dict(PRESETS["Realistic character (guide) - NVIDIA"])
    monkeypatch.setattr(tp, "training_gpu", lambda: None)
    line = panel.estimate_memory(settings, *form(settings))
    assert "GPU memory" in line and "no CUDA GPU here" in line
    # a larger batch needs more (the tiny model's activations are small: compare in bytes, not the line)
    from lora_trainer.config import TrainConfig
    from lora_trainer.train.vram import estimate_training_memory

    one = estimate_training_memory(TrainConfig.from_dict({**settings, "train_batch_size": 1}), tiny_sdxl.config_dir)
    eight = estimate_training_memory(TrainConfig.from_dict({**settings, "train_batch_size": 8}), tiny_sdxl.config_dir)
    assert eight.total_bytes > one.total_bytes

    # on a GPU too small for it: the verdict and the changes that fit, each with its figure
    tight = one.total_bytes - 1
    monkeypatch.setattr(tp, "training_gpu", lambda: (tight, "Test GPU 4 GB"))
    line = panel.estimate_memory(settings, *form(settings, train_batch_size=1))
    assert "does not fit in" in line and "(Test GPU 4 GB)" in line and "To fit, change one of" in line
    assert re.search(r"<li>[^<]+: about [\d.]+ GiB", line), line
    # ... and one large enough
    monkeypatch.setattr(tp, "training_gpu", lambda: (80 * GIB, "Test GPU 80 GB"))
    assert "fits in 80.0 GiB" in panel.estimate_memory(settings, *form(settings))


def test_invalid_settings_get_the_reason_instead_of_a_figure(tmp_path, tiny_sdxl, monkeypatch):
    panel = panel_for(tmp_path, tiny_sdxl.config_dir)
    monkeypatch.setattr(tp, "training_gpu", lambda: None)
    settings = dict(PRESETS["Low VRAM (8 GB)"])
    values = form(settings)
    values[[f.key for f in FIELDS].index("network_dim")] = 0
    assert "no estimate until the settings are valid: network_dim = 0" in panel.estimate_memory(settings, *values)


def test_without_the_config_folder_the_line_says_so(tmp_path, monkeypatch):
    panel = panel_for(tmp_path, None)
    monkeypatch.setattr(tp, "find_config_dir", lambda **kw: (_ for _ in ()).throw(tp.ModelLoadError("none")))
    settings = dict(PRESETS["Low VRAM (8 GB)"])
    line = html.unescape(panel.estimate_memory(settings, *form(settings)))
    assert "SDXL's config folder is not on this machine yet" in line
