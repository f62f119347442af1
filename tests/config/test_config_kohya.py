"""kohya_ss GUI JSON import: the GUI's 18 real SDXL presets, string numbers, synonyms, ignored keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.config.kohya_import import import_kohya

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
PRESETS_DIR = SHARED / "kohya_ss_presets"
needs_presets = pytest.mark.skipif(not PRESETS_DIR.is_dir(),
                                   reason=f"kohya_ss presets not found at {PRESETS_DIR} (shared/ beside the clone)")
PRESET_FILES = sorted(PRESETS_DIR.glob("*.json")) if PRESETS_DIR.is_dir() else []


def _preset(name: str):
    return import_kohya(PRESETS_DIR / f"SDXL - {name}.json")


@needs_presets
def test_all_eighteen_presets_are_there():
    assert len(PRESET_FILES) == 18


@needs_presets
@pytest.mark.parametrize("path", PRESET_FILES, ids=lambda p: p.stem)
def test_every_real_preset_imports(path):
    data = json.loads(path.read_text())
    result = import_kohya(path)
    assert isinstance(result.config, TrainConfig)
    assert result.ignored, "kohya presets always hold LyCORIS/launcher keys we do not use"
    assert set(result.ignored) <= set(data), "ignored names only keys of the file"
    # every key is either applied (a TrainConfig field or a handled synonym) or listed with a reason
    for key, reason in result.ignored.items():
        assert reason and reason != "unknown kohya_ss setting", (key, reason)
    lycoris = data.get("LoRA_type") in ("LyCORIS/LoCon", "LyCORIS/LoHa", "LyCORIS/LoKr", "Kohya LoCon")
    if "conv_dim" in data and not lycoris:
        assert result.ignored["conv_dim"] == "LoCon/LyCORIS only"
    if lycoris and data.get("conv_dim"):
        assert result.config.conv_dim == int(float(data["conv_dim"]))
    assert result.config.sdxl and result.config.max_token_length == int(data.get("max_token_length") or 75)
    assert "max_token_length" not in result.ignored


@needs_presets
def test_adafactor_preset_values_and_coerced_strings():
    result = _preset("LoRA adafactor v1.0")
    config = result.config
    assert (config.optimizer, config.lr_scheduler) == ("Adafactor", "adafactor")
    assert config.max_train_epochs == 30  # "max_train_epochs": "30"
    assert config.seed == TrainConfig.seed  # "seed": "" -> default
    assert config.lr_scheduler_num_cycles == 1  # "1"
    assert config.lr_scheduler_power == TrainConfig.lr_scheduler_power  # ""
    assert config.keep_tokens == 1 and config.gradient_accumulation_steps == 1  # 1.0 -> 1
    assert (config.network_dim, config.network_alpha, config.train_batch_size) == (128, 128.0, 5)
    assert (config.min_bucket_reso, config.bucket_reso_steps) == (64, 32)
    assert config.noise_offset == 0.0357  # noise_offset_type "Original"
    assert config.caption_extension == ".txt2" and config.save_precision == "bf16"
    assert config.xformers == "xformers"  # "xformers": true
    assert config.training_comment == "trigger: the white queen"
    assert result.ignored["additional_parameters"] == "not supported: --log_prefix xl-loha"
    assert result.ignored["clip_skip"] == "SD1/2 only"
    assert result.ignored["conv_dim"] == "LoCon/LyCORIS only"
    assert "LoRA_type" not in result.ignored  # "Standard" is what we train


@needs_presets
def test_a_loha_preset_imports_as_loha_with_its_convolutions():
    result = _preset("LoHA AI_Characters v1.0")
    data = json.loads((PRESETS_DIR / "SDXL - LoHA AI_Characters v1.0.json").read_text())
    assert "LoRA_type" not in result.ignored and result.config.LoRA_type == "LyCORIS/LoHa"
    assert (result.config.conv_dim, result.config.conv_alpha) == (int(float(data["conv_dim"])),
                                                                  float(data["conv_alpha"]))
    assert result.config.max_train_epochs == 100  # "max_train_epochs": "100" wins over "epoch": 1
    assert "max_train_epochs is set" in result.ignored["epoch"]
    assert result.config.optimizer == "AdamW8bit"


@needs_presets
def test_epoch_steps_prodigy_args_and_multires_noise():
    result = _preset("1 image LoRA v1.0")
    config = result.config
    assert (config.max_train_epochs, config.max_train_steps) == (100, 160)  # "epoch": 100, "max_train_steps": "160"
    assert config.optimizer == "Prodigy"
    assert config.optimizer_kwargs == {"d0": 1e-5, "d_coef": 1.0, "weight_decay": 0.4, "decouple": True,
                                       "safeguard_warmup": True, "use_bias_correction": True}
    assert config.lr_scheduler == "cosine"
    # Multires noise and the debiased estimation loss import as themselves
    assert (config.multires_noise_iterations, config.multires_noise_discount) == (5, 0.1)
    assert config.debiased_estimation_loss is True and config.noise_offset == 0.0
    assert not {"noise_offset_type", "multires_noise_iterations", "debiased_estimation_loss"} & set(result.ignored)
    assert "--lr_scheduler_type CosineAnnealingLR" in result.ignored["additional_parameters"]


@needs_presets
def test_dadaptation_becomes_prodigy_and_long_captions_are_reported():
    result = _preset("LoRA kudou-reira dadaptadam v1.1")
    config = result.config
    assert config.optimizer == "Prodigy"
    assert "DAdaptAdam" in result.ignored["optimizer"]
    assert config.optimizer_kwargs == {"decouple": True, "weight_decay": 0.1, "betas": (0.9, 0.91)}
    assert config.network_train_unet_only and not config.train_text_encoder  # from additional_parameters
    assert "additional_parameters" not in result.ignored
    assert (config.lr_scheduler, config.lr_warmup) == ("cosine", 5)
    assert config.warmup_steps(1000) == 50
    assert config.max_token_length == 225 and "max_token_length" not in result.ignored
    assert config.shuffle_caption and config.keep_tokens == 2


@needs_presets
def test_max_grad_norm_from_additional_parameters():
    result = _preset("edgLoRAXL")
    assert result.config.max_grad_norm == 0.0  # "--max_grad_norm=0" after "max_grad_norm": 1
    assert "additional_parameters" not in result.ignored


def test_tolerant_values_and_synonyms():
    result = import_kohya({
        "LoRA_type": "Standard", "sdxl": True, "epoch": "12", "max_train_epochs": "", "max_train_steps": "0",
        "seed": "1234", "network_dim": "16", "network_alpha": "8", "learning_rate": "0.0002",
        "unet_lr": "", "text_encoder_lr": 0, "xformers": "sdpa", "lr_scheduler": "constant", "lr_warmup": 10,
        "cache_latents": "true", "optimizer": "adamw", "optimizer_args": "weight_decay=0.1",
        "some_new_gui_key": 3,
    })
    config = result.config
    assert (config.max_train_epochs, config.max_train_steps, config.seed) == (12, 0, 1234)
    assert (config.network_dim, config.network_alpha, config.learning_rate) == (16, 8.0, 2e-4)
    assert config.unet_lr is None and config.text_encoder_lr == 0 and not config.train_text_encoder
    assert config.xformers == "sdpa" and config.optimizer == "AdamW"
    assert config.optimizer_kwargs == {"weight_decay": 0.1}
    assert config.lr_warmup == 0 and "no warmup" in result.ignored["lr_warmup"]
    assert result.ignored["some_new_gui_key"] == "unknown kohya_ss setting"


@pytest.mark.parametrize(("raw", "attention"), [(True, "xformers"), (False, "none"), ("xformers", "xformers"),
                                                 ("sdpa", "sdpa"), ("none", "none")])
def test_xformers_synonyms(raw, attention):
    assert import_kohya({"xformers": raw}).config.xformers == attention


def test_unknown_optimizer_falls_back_to_adamw_without_its_args():
    result = import_kohya({"optimizer": "Lion", "optimizer_args": "betas=0.95,0.98", "learning_rate": 3e-5})
    assert result.config.optimizer == "AdamW" and result.config.optimizer_args == ""
    assert "Lion" in result.ignored["optimizer"] and "Lion" in result.ignored["optimizer_args"]


def test_unsupported_scheduler_and_adafactor_schedule_without_adafactor():
    result = import_kohya({"lr_scheduler": "piecewise_constant"})
    assert result.config.lr_scheduler == "constant" and "piecewise_constant" in result.ignored["lr_scheduler"]
    result = import_kohya({"optimizer": "AdamW", "lr_scheduler": "adafactor"})
    assert result.config.lr_scheduler == "constant" and "Adafactor" in result.ignored["lr_scheduler"]


@pytest.mark.parametrize(("data", "expected"), [
    ({"sdxl": False}, "not for SDXL"),
    ({"sdxl": True, "v2": True}, "v2 = true"),
    ({"network_dim": "lots"}, "kohya_ss key 'network_dim' = 'lots': expected an integer"),
    ({"max_resolution": "1024x1024"}, "kohya_ss settings: max_resolution = '1024x1024'"),  # 1000,1000 becomes 992,992
])
def test_what_cannot_be_imported_is_an_error(data, expected):
    with pytest.raises(ConfigError) as error:
        import_kohya(data)
    assert expected in str(error.value)


def test_import_from_path_and_broken_file(tmp_path):
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"network_dim": 8, "LoRA_type": "LyCORIS/LoKr"}))
    assert import_kohya(path).config.network_dim == 8
    path.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        import_kohya(path)


def test_original_noise_ignores_multires_keys_and_caption_dropout_imports():
    base = {"sdxl": True, "LoRA_type": "Standard"}
    original = import_kohya({**base, "noise_offset_type": "Original", "noise_offset": 0.05,
                             "multires_noise_iterations": 6, "caption_dropout_rate": 0.1,
                             "caption_dropout_every_n_epochs": 3, "loss_type": "huber", "huber_c": 0.2,
                             "huber_schedule": "exponential"})
    config = original.config
    assert (config.noise_offset, config.multires_noise_iterations) == (0.05, 0)
    assert "not used by kohya_ss with noise_offset_type 'Original'" in original.ignored["multires_noise_iterations"]
    assert (config.caption_dropout_rate, config.caption_dropout_every_n_epochs) == (0.1, 3)
    assert (config.loss_type, config.huber_c, config.huber_schedule) == ("huber", 0.2, "exponential")
    multires = import_kohya({**base, "noise_offset_type": "Multires", "noise_offset": 0.05,
                             "multires_noise_iterations": "8", "multires_noise_discount": "0.3"})
    assert (multires.config.noise_offset, multires.config.multires_noise_iterations) == (0.0, 8)
    assert "noise_offset" in multires.ignored


def test_loraplus_imports_and_its_separate_ratios_are_named():
    result = import_kohya({"sdxl": True, "LoRA_type": "Standard", "loraplus_lr_ratio": "16",
                           "loraplus_unet_lr_ratio": 8})
    assert result.config.loraplus_lr_ratio == 16.0
    assert "separate LoRA+ ratios" in result.ignored["loraplus_unet_lr_ratio"]


@pytest.mark.parametrize(("kohya", "expected", "ignored"), [
    ({"LoRA_type": "LyCORIS/LoKr", "factor": 8, "conv_dim": 4, "conv_alpha": 2, "dora_wd": True},
     {"LoRA_type": "LyCORIS/LoKr", "factor": 8, "conv_dim": 4, "conv_alpha": 2.0, "dora_wd": False},
     {"dora_wd": "not supported: DoRA on LyCORIS/LoKr"}),
    ({"LoRA_type": "LyCORIS/LoCon", "conv_dim": 8, "conv_alpha": 1, "dora_wd": True, "factor": -1},
     {"LoRA_type": "LyCORIS/LoCon", "conv_dim": 8, "dora_wd": True, "factor": -1}, {}),
    ({"LoRA_type": "Kohya LoCon", "conv_dim": 16, "conv_alpha": 8},
     {"LoRA_type": "Standard", "conv_dim": 16, "conv_alpha": 8.0}, {}),
    ({"LoRA_type": "Standard", "conv_dim": 16, "dora_wd": True, "factor": 4},
     {"LoRA_type": "Standard", "conv_dim": 0, "dora_wd": False, "factor": -1},
     {"conv_dim": "LoCon/LyCORIS only", "dora_wd": "LoCon/LyCORIS only", "factor": "LoCon/LyCORIS only"}),
    ({"LoRA_type": "LyCORIS/iA3", "conv_dim": 4},
     {"LoRA_type": "Standard", "conv_dim": 0}, {"LoRA_type": "not supported: LoRA_type 'LyCORIS/iA3'"}),
])
def test_lycoris_types_import_as_themselves_with_their_settings(kohya, expected, ignored):
    result = import_kohya(kohya)
    assert {k: getattr(result.config, k) for k in expected} == expected
    for key, reason in ignored.items():
        assert result.ignored[key].startswith(reason)
