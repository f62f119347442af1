"""TrainConfig: kohya_ss key names, strict validation with messages that name the key, JSON round trip."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lora_trainer.config import ConfigError, TrainConfig


def test_defaults_are_valid_and_derived_values_follow_kohya():
    config = TrainConfig()
    assert config.resolution == (1024, 1024)
    assert config.unet_learning_rate == config.text_encoder_learning_rate == 1e-4
    assert config.train_text_encoder
    assert config.optimizer_kwargs == {}


@pytest.mark.parametrize(("changes", "train_te"), [
    ({"network_train_unet_only": True}, False),
    ({"text_encoder_lr": 0.0}, False),
    ({"text_encoder_lr": 5e-5}, True),
])
def test_train_text_encoder(changes, train_te):
    assert TrainConfig(**changes).train_text_encoder is train_te


def test_separate_learning_rates_override_learning_rate():
    config = TrainConfig(learning_rate=1e-4, unet_lr=2e-4, text_encoder_lr=5e-5)
    assert (config.unet_learning_rate, config.text_encoder_learning_rate) == (2e-4, 5e-5)


def test_optimizer_args_parse_like_kohya():
    config = TrainConfig(optimizer="Prodigy",
                         optimizer_args='"d0=1e-5" decouple=True betas=0.9,0.99 weight_decay=0.4')
    assert config.optimizer_kwargs == {"d0": 1e-5, "decouple": True, "betas": (0.9, 0.99), "weight_decay": 0.4}


def test_rectangular_and_square_resolution():
    assert TrainConfig(max_resolution="1152, 896").resolution == (1152, 896)
    assert TrainConfig(max_resolution="768").resolution == (768, 768)


def test_warmup_steps_from_percent_or_steps():
    assert TrainConfig(lr_scheduler="cosine", lr_warmup=5).warmup_steps(1000) == 50
    assert TrainConfig(lr_scheduler="cosine", lr_warmup_steps=30).warmup_steps(1000) == 30
    assert TrainConfig().warmup_steps(1000) == 0


def test_ints_are_accepted_for_floats():
    config = TrainConfig.from_dict({"network_alpha": 16, "learning_rate": 1})
    assert isinstance(config.network_alpha, float) and isinstance(config.learning_rate, float)


@pytest.mark.parametrize(("changes", "expected"), [
    ({"network_dim": 0}, "network_dim = 0: must be >= 1"),
    ({"network_dim": "32"}, "network_dim = '32': must be an integer"),
    ({"network_dim": 32.0}, "network_dim = 32.0: must be an integer"),
    ({"cache_latents": 1}, "cache_latents = 1: must be true or false"),
    ({"optimizer": "Lion"}, "optimizer = 'Lion': must be one of 'AdamW', 'AdamW8bit', 'Adafactor', 'Prodigy'"),
    ({"lr_scheduler": "cosine_with_min_lr"}, "lr_scheduler = 'cosine_with_min_lr': must be one of"),
    ({"mixed_precision": "fp32"}, "mixed_precision = 'fp32': must be one of 'no', 'fp16', 'bf16'"),
    ({"save_precision": "fp32"}, "save_precision = 'fp32'"),
    ({"xformers": True}, "xformers = True: must be a string"),
    ({"max_token_length": 100}, "max_token_length = 100: must be one of 75, 150, 225"),
    ({"sdxl": False}, "only SDXL is supported"),
    ({"unet_lr": 0.0}, "unet_lr = 0.0: must be > 0, or null"),
    ({"caption_extension": "txt"}, "caption_extension = 'txt'"),
    ({"output_name": "a/b"}, "output_name = 'a/b'"),
    ({"max_resolution": "1000,1000"}, "max_resolution = '1000,1000'"),
    ({"max_resolution": "big"}, "max_resolution = 'big'"),
    ({"bucket_reso_steps": 48}, "bucket_reso_steps = 48: must be a positive multiple of 32"),
    ({"lr_warmup": 150}, "lr_warmup = 150"),
    ({"optimizer_args": "relative_step"}, "'relative_step' is not key=value"),
    ({"optimizer_args": "mode=fast"}, "the value of 'mode', 'fast', is not a Python literal"),
])
def test_bad_values_name_the_key_value_and_what_is_allowed(changes, expected):
    with pytest.raises(ConfigError) as error:
        TrainConfig(**changes)
    assert expected in str(error.value)


@pytest.mark.parametrize(("changes", "expected"), [
    ({"full_bf16": True, "mixed_precision": "fp16"}, "full_bf16 = True needs mixed_precision 'bf16'"),
    ({"full_fp16": True}, "full_fp16 = True needs mixed_precision 'fp16'"),
    ({"lr_scheduler": "adafactor"}, "lr_scheduler 'adafactor' needs optimizer 'Adafactor'"),
    ({"sdxl_cache_text_encoder_outputs": True}, "cannot be used while the text encoders are trained"),
    ({"sdxl_cache_text_encoder_outputs": True, "network_train_unet_only": True, "shuffle_caption": True},
     "cannot be used with shuffle_caption"),
    ({"min_bucket_reso": 1024, "max_bucket_reso": 512}, "min_bucket_reso = 1024 is larger than max_bucket_reso"),
    ({"min_bucket_reso": 512, "max_resolution": "256,256"}, "min_bucket_reso = 512 is larger than the resolution"),
    ({"max_bucket_reso": 512}, "max_bucket_reso = 512 is smaller than the resolution"),
    ({"lr_warmup": 5}, "lr_scheduler 'constant' has no warmup"),
    ({"lr_scheduler": "cosine", "lr_warmup": 5, "lr_warmup_steps": 10}, "set only one"),
])
def test_contradicting_settings_are_refused(changes, expected):
    with pytest.raises(ConfigError) as error:
        TrainConfig(**changes)
    assert expected in str(error.value)


def test_text_encoder_cache_allowed_when_only_the_unet_trains():
    config = TrainConfig(sdxl_cache_text_encoder_outputs=True, text_encoder_lr=0.0)
    assert not config.train_text_encoder


def test_buckets_off_ignores_bucket_range():
    assert TrainConfig(enable_bucket=False, max_resolution="64,64").resolution == (64, 64)


def test_config_is_frozen_and_replace_revalidates():
    config = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.network_dim = 8  # type: ignore[misc]
    assert config.replace(network_dim=8).network_dim == 8
    with pytest.raises(ConfigError, match="network_dim = -1"):
        config.replace(network_dim=-1)
    with pytest.raises(ConfigError, match="unknown setting.*network_rank"):
        config.replace(network_rank=8)


def test_json_round_trip(tmp_path):
    config = TrainConfig(network_dim=64, unet_lr=2e-4, optimizer="Adafactor", lr_scheduler="adafactor",
                         optimizer_args="relative_step=False", training_comment="trigger: zkw")
    path = tmp_path / "sub" / "my.json"
    config.save_json(path)
    assert json.loads(path.read_text())["network_dim"] == 64
    assert TrainConfig.from_json(path) == config
    assert not list(path.parent.glob("*.tmp"))


def test_missing_keys_take_defaults():
    assert TrainConfig.from_dict({"network_dim": 8}) == TrainConfig(network_dim=8)


def test_unknown_keys_are_each_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting.*epochs, network_rank"):
        TrainConfig.from_dict({"network_rank": 8, "epochs": 3, "network_dim": 8})
    path = tmp_path / "kohya.json"
    path.write_text(json.dumps({"LoRA_type": "Standard", "epoch": 8, "network_dim": 8}))
    with pytest.raises(ConfigError, match=r"kohya\.json: .*epoch.*--import-kohya"):
        TrainConfig.from_json(path)


def test_broken_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "network_dim": 8,\n}')
    with pytest.raises(ConfigError, match=r"bad\.json is not valid JSON: .* line 3"):
        TrainConfig.from_json(path)
    with pytest.raises(ConfigError, match="cannot read config"):
        TrainConfig.from_json(tmp_path / "missing.json")
