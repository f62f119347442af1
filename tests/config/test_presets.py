"""Presets validate and hold the guide's settings (../shared/guide-realistic-character-lora.txt)."""

from __future__ import annotations

import pytest

from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.config.presets import PRESETS, load_preset, preset_names

GUIDE = "Realistic character (guide)"


def test_names_guide_first():
    assert preset_names() == [GUIDE, f"{GUIDE} - NVIDIA", f"{GUIDE} - Apple", "CPU smoke test"]


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_validates(name):
    assert isinstance(load_preset(name), TrainConfig)


@pytest.mark.parametrize("name", [GUIDE, f"{GUIDE} - NVIDIA", f"{GUIDE} - Apple"])
def test_guide_settings(name):
    config = load_preset(name)
    assert config.max_train_epochs == 64
    assert config.caption_extension == ".txt"
    assert config.save_precision == "bf16"
    assert (config.optimizer, config.lr_scheduler) == ("Adafactor", "adafactor")
    assert config.optimizer_kwargs == {"scale_parameter": False, "relative_step": False, "warmup_init": False}
    assert config.cache_latents
    assert (config.network_dim, config.network_alpha) == (128, 32.0)
    assert config.bucket_no_upscale and config.enable_bucket
    assert (config.min_bucket_reso, config.max_bucket_reso, config.resolution) == (256, 2048, (1024, 1024))
    assert config.train_text_encoder


def test_nvidia_variant():
    config = load_preset(f"{GUIDE} - NVIDIA")
    assert config.train_batch_size == 2
    assert config.mixed_precision == "bf16" and config.full_bf16
    assert config.gradient_checkpointing
    assert config.xformers == "sdpa"  # the guide's "xformers", as PyTorch's own memory-efficient attention


def test_apple_variant():
    config = load_preset(f"{GUIDE} - Apple")
    assert (config.train_batch_size, config.mixed_precision, config.xformers) == (1, "no", "none")
    assert not config.full_bf16


def test_cpu_smoke_test_is_tiny():
    config = load_preset("CPU smoke test")
    assert config.resolution == (64, 64)
    assert (config.network_dim, config.train_batch_size, config.max_train_epochs) == (4, 1, 2)
    assert (config.mixed_precision, config.optimizer) == ("no", "AdamW")


def test_overrides_are_validated_and_presets_not_mutated():
    config = load_preset(GUIDE, output_name="zkw", train_data_dir="/data/img")
    assert (config.output_name, config.train_data_dir, config.network_dim) == ("zkw", "/data/img", 128)
    assert "output_name" not in PRESETS[GUIDE]
    with pytest.raises(ConfigError, match="network_rank"):
        load_preset(GUIDE, network_rank=8)
    with pytest.raises(ConfigError, match="full_bf16 = True needs mixed_precision 'bf16'"):
        load_preset(f"{GUIDE} - NVIDIA", mixed_precision="fp16")


def test_unknown_preset_lists_the_names():
    with pytest.raises(ConfigError, match="unknown preset 'Anime'.*CPU smoke test"):
        load_preset("Anime")
