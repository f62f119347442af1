"""Presets hold the guide's settings (../shared/guide-realistic-character-lora.txt), and the file
`config --preset -o` writes is what `train` then runs with."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_trainer import cli
from lora_trainer.config import ConfigError
from lora_trainer.config.presets import PRESETS, load_preset, preset_names
from lora_trainer.train.cli import load_config

GUIDE = "Realistic character (guide)"
GUIDE_FILE = Path(__file__).resolve().parents[3] / "shared" / "guide-realistic-character-lora.txt"

# "Setup the training process" in the guide, line by line: what it says -> the setting it means.
# (The guide's Kohya GUI labels; "xformers" is run as PyTorch's SDPA, the same memory-efficient attention.)
GUIDE_SAYS = {
    "Train for 64 epochs": {"max_train_epochs": 64},
    "Caption Extension: .txt": {"caption_extension": ".txt"},
    "Save precision: bf16": {"save_precision": "bf16"},
    "LR Scheduler and Optimizer: Adafactor": {"optimizer": "Adafactor", "lr_scheduler": "adafactor"},
    "Cache latents": {"cache_latents": True},
    "Network rank: 128": {"network_dim": 128},
    "Network alpha: 32": {"network_alpha": 32.0},
    "Don't upscale bucket resolution: checked": {"bucket_no_upscale": True},
    'enable the "Enable buckets" option': {"enable_bucket": True},
    '"Minimum buck resolution" and "Maximum bucket resolution" to 256 and 2048':
        {"min_bucket_reso": 256, "max_bucket_reso": 2048},
    "All images must be sized at 1024 x 1024 pixels": {"max_resolution": "1024,1024"},
}
APPLE_SAYS = {
    "Train batch size: 1": {"train_batch_size": 1},
    "Mixed-mode: no": {"mixed_precision": "no"},
    "CrossAttention: none": {"xformers": "none"},
}
NVIDIA_SAYS = {
    "Train batch size: 2": {"train_batch_size": 2},
    "Mixed-mode: bf16": {"mixed_precision": "bf16"},
    "Full bf16 training": {"full_bf16": True},
    "Gradient checkpointing: yes": {"gradient_checkpointing": True},
    "CrossAttention: xformers": {"xformers": "sdpa"},
}
EXPECTED = {
    GUIDE: GUIDE_SAYS,
    f"{GUIDE} - Apple": {**GUIDE_SAYS, **APPLE_SAYS},
    f"{GUIDE} - NVIDIA": {**GUIDE_SAYS, **NVIDIA_SAYS},
}


@pytest.fixture(autouse=True)
def _only_config_command(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("lora_trainer.config.cli",))


def _written_and_loaded(name: str, tmp_path: Path) -> dict:
    """The preset as `train --config` reads it after `config --preset NAME --project ... -o FILE`."""
    model = tmp_path / "sdxl.safetensors"
    model.write_bytes(b"x")
    (tmp_path / "myLoRA" / "img").mkdir(parents=True, exist_ok=True)
    out = tmp_path / "myLoRA.json"
    assert cli.main(["config", "--preset", name, "--project", str(tmp_path / "myLoRA"), "--model", str(model),
                     "-o", str(out)]) == 0
    assert cli.main(["config", "--check", str(out)]) == 0
    return load_config(out, []).to_dict()


def test_names_guide_first():
    assert preset_names() == [GUIDE, f"{GUIDE} - NVIDIA", f"{GUIDE} - Apple", "Low VRAM (8 GB)", "CPU smoke test"]


def test_the_low_vram_preset_is_what_kohya_documents_for_8_gb():
    config = load_preset("Low VRAM (8 GB)")
    assert not config.train_text_encoder and config.sdxl_cache_text_encoder_outputs
    assert config.gradient_checkpointing and config.full_bf16 and config.train_batch_size == 1
    assert config.optimizer == "Adafactor" and config.network_dim <= 32 and config.cache_latents
    assert config.fp8_base  # the frozen U-Net in float8
    # fp16 cards: the same with full_fp16 is accepted (Adafactor steps fp16 weights)
    load_preset("Low VRAM (8 GB)", mixed_precision="fp16", full_bf16=False, full_fp16=True)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_a_guide_preset_trains_with_what_the_guide_says(name, tmp_path):
    settings = _written_and_loaded(name, tmp_path)
    for line, meant in EXPECTED[name].items():
        assert {key: settings[key] for key in meant} == meant, f"the guide says {line!r}"
    # the guide names Adafactor but no arguments: a fixed learning rate, as kohya_ss users run it
    assert load_config(tmp_path / "myLoRA.json", []).optimizer_kwargs == {
        "scale_parameter": False, "relative_step": False, "warmup_init": False}
    assert settings["output_name"] == "myLoRA" and settings["network_train_unet_only"] is False


@pytest.mark.skipif(not GUIDE_FILE.is_file(), reason="the guide is not beside this checkout")
def test_the_table_quotes_the_guide():
    text = " ".join(GUIDE_FILE.read_text(encoding="utf-8").split())
    assert [line for line in {**GUIDE_SAYS, **APPLE_SAYS, **NVIDIA_SAYS} if line not in text] == []


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_file_reads_back_as_written(name, tmp_path):
    """What the user gets from `config --preset` is the preset plus the paths, nothing lost or added."""
    settings = _written_and_loaded(name, tmp_path)
    paths = {"pretrained_model_name_or_path": str(tmp_path / "sdxl.safetensors"),
             "train_data_dir": str(tmp_path / "myLoRA" / "img"), "output_dir": str(tmp_path / "myLoRA" / "model"),
             "logging_dir": str(tmp_path / "myLoRA" / "log"), "output_name": "myLoRA"}
    assert settings == load_preset(name, **paths).to_dict()


def test_cpu_smoke_test_runs_on_a_cpu_without_extra_packages():
    """The demo's preset: no GPU-only precision, no optimizer from an optional package, and the
    demo's 64 px images fit its single bucket."""
    config = load_preset("CPU smoke test")
    assert config.mixed_precision != "fp16" and not (config.full_bf16 or config.full_fp16)
    assert config.optimizer in ("AdamW", "Adafactor") and config.xformers != "xformers"
    assert config.resolution == (64, 64) and config.min_bucket_reso <= 64


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
