"""Precision settings change what runs in which dtype: sdxl_no_half_vae (the VAE), full_fp16 (the LoRA
weights, their gradients and the gradient scaler). CPU only: bf16 stands in for a half VAE here."""

from __future__ import annotations

import math

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.config.presets import load_preset
from lora_trainer.train import trainer as trainer_module
from lora_trainer.train.batches import TrainingBatches, vae_dtype
from lora_trainer.train.cache import LatentCache, LatentError
from lora_trainer.train.events import EventLog
from lora_trainer.train.model import load_sdxl
from lora_trainer.train.trainer import TrainingError, _let_scaler_unscale_fp16, train


@pytest.fixture
def fresh_accelerate():
    """accelerate keeps one mixed-precision setting per process; these tests use others."""
    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


def tiny_config(tiny_sdxl, img_root, out, **changes):
    return load_preset("CPU smoke test", pretrained_model_name_or_path=str(tiny_sdxl.single_file),
                       train_data_dir=str(img_root), output_dir=str(out / "model"), logging_dir=str(out / "log"),
                       output_name="myLoRA", network_train_unet_only=True, **changes)


def test_vae_dtype_follows_sdxl_no_half_vae():
    assert vae_dtype(TrainConfig()) == torch.float32  # sdxl_no_half_vae is on by default
    assert vae_dtype(TrainConfig(sdxl_no_half_vae=False, mixed_precision="bf16")) == torch.bfloat16
    assert vae_dtype(TrainConfig(sdxl_no_half_vae=False, mixed_precision="fp16")) == torch.float16
    assert vae_dtype(TrainConfig(sdxl_no_half_vae=False, mixed_precision="no")) == torch.float32
    assert vae_dtype(TrainConfig(sdxl_no_half_vae=True, mixed_precision="fp16")) == torch.float32


def test_the_vae_runs_in_fp32_or_in_the_mixed_precision_dtype(tiny_sdxl, character_dataset, tmp_path):
    model = load_sdxl(str(tiny_sdxl.single_file), config_dir=str(tiny_sdxl.config_dir))
    seen = []
    model.vae.encoder.register_forward_hook(
        lambda module, args, output: seen.append((args[0].dtype, next(module.parameters()).dtype)))

    def prepare(**changes):
        seen.clear()
        cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path, mixed_precision="bf16", **changes)
        events = []
        TrainingBatches.prepare(cfg, model, Accelerator(), EventLog(callback=events.append))
        latents = next(e for e in events if e["event"] == "latents")
        return set(seen), (latents["encoded"], latents["reused"])

    assert prepare(sdxl_no_half_vae=True) == ({(torch.float32, torch.float32)}, (8, 0))
    # bf16 latents are cached apart from the fp32 ones: encoded again, never mixed with them.
    assert prepare(sdxl_no_half_vae=False) == ({(torch.bfloat16, torch.bfloat16)}, (8, 0))
    assert prepare(sdxl_no_half_vae=False) == (set(), (0, 8))
    assert prepare(sdxl_no_half_vae=True) == (set(), (0, 8))


def test_nan_latents_from_a_half_vae_say_to_turn_sdxl_no_half_vae_back_on(character_dataset):
    from lora_trainer.train.buckets import Bucketer
    from lora_trainer.train.data import scan_training_folder

    class NaNVae(torch.nn.Module):
        config = type("Config", (), {"scaling_factor": 0.13025, "shift_factor": None})

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def encode(self, pixels):
            dist = type("Dist", (), {"mean": torch.full((len(pixels), 4, 8, 8), math.nan, dtype=pixels.dtype)})
            return type("Out", (), {"latent_dist": dist})

    item = scan_training_folder(character_dataset).items[0]
    job = [(item.path, Bucketer((64, 64), enable_bucket=False).assign(item.size))]
    with pytest.raises(LatentError, match=rf"NaN/inf latents for .*{item.path.name} running in torch.float16 "
                                          r"\(sdxl_no_half_vae = false\): set sdxl_no_half_vae back to true"):
        LatentCache(NaNVae(), "vae", None, dtype=torch.float16).prepare(job)


@pytest.mark.slow
def test_a_training_with_nan_latents_stops_and_names_the_image(tiny_sdxl, character_dataset, tmp_path, monkeypatch,
                                                               fresh_accelerate):
    def nan_latents(cache, pixels):
        return torch.full((len(pixels), 4, 8, 8), math.nan)

    monkeypatch.setattr(LatentCache, "_encode", nan_latents)
    events = []
    cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path, mixed_precision="bf16", sdxl_no_half_vae=False)
    with pytest.raises(TrainingError, match=r"NaN/inf latents for .*000\.png running in torch\.bfloat16 .*"
                                            r"set sdxl_no_half_vae back to true"):
        train(cfg, model_config_dir=str(tiny_sdxl.config_dir), on_event=events.append)
    assert events[-1]["event"] == "error" and "sdxl_no_half_vae" in events[-1]["message"]


def test_full_fp16_needs_an_optimizer_that_steps_fp16_weights():
    with pytest.raises(ConfigError, match="AdamW's epsilon .* rounds to 0.*use optimizer Adafactor or AdamW8bit"):
        TrainConfig(mixed_precision="fp16", full_fp16=True, optimizer="AdamW")
    assert TrainConfig(mixed_precision="fp16", full_fp16=True, optimizer="Adafactor").full_fp16


def test_full_fp16_lets_the_gradient_scaler_unscale_fp16_gradients():
    weight = torch.nn.Parameter(torch.ones(4, dtype=torch.float16))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    holder = type("AcceleratorLike", (), {"scaler": torch.amp.GradScaler("cpu", init_scale=1024.0)})()

    def unscaled_gradient():
        optimizer.zero_grad()
        holder.scaler.scale((weight.float() * torch.arange(4.0)).sum()).backward()
        holder.scaler.unscale_(optimizer)
        grad = weight.grad.clone()
        holder.scaler.update()
        return grad

    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        unscaled_gradient()
    holder.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    _let_scaler_unscale_fp16(holder)
    torch.testing.assert_close(unscaled_gradient(), torch.arange(4.0, dtype=torch.float16))


@pytest.mark.slow
@pytest.mark.parametrize("full_fp16", [False, True])
def test_full_fp16_trains_the_lora_weights_in_fp16(tiny_sdxl, character_dataset, tmp_path, monkeypatch,
                                                   fresh_accelerate, full_fp16):
    """mixed_precision fp16 alone: frozen U-Net in fp16, LoRA weights (and so their gradients and optimizer
    state) in fp32. full_fp16 makes the LoRA weights fp16 too."""
    trained_dtypes, unet_dtypes = set(), set()
    real_build = trainer_module.build_optimizer

    def build_optimizer(name, groups, *args, **kwargs):
        trained_dtypes.update(p.dtype for g in groups for p in g["params"])
        return real_build(name, groups, *args, **kwargs)

    real_load = trainer_module.load_sdxl

    def load_sdxl_watched(*args, **kwargs):
        model = real_load(*args, **kwargs)
        model.unet.conv_in.register_forward_hook(lambda m, a, o: unet_dtypes.add((m.weight.dtype, o.dtype)))
        return model

    monkeypatch.setattr(trainer_module, "build_optimizer", build_optimizer)
    monkeypatch.setattr(trainer_module, "load_sdxl", load_sdxl_watched)
    cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path, mixed_precision="fp16", full_fp16=full_fp16,
                      optimizer="Adafactor", optimizer_args="scale_parameter=False relative_step=False",
                      max_train_steps=3, save_precision="float")
    result = train(cfg, model_config_dir=str(tiny_sdxl.config_dir))
    assert trained_dtypes == {torch.float16 if full_fp16 else torch.float32}
    assert unet_dtypes == {(torch.float16, torch.float16)}  # the frozen base computes in fp16 either way
    tensors = load_file(result.final_file)
    assert all(t.isfinite().all() for t in tensors.values())
    assert any(k.endswith("lora_up.weight") and t.abs().sum() > 0 for k, t in tensors.items()), "it trained"


def test_the_low_vram_preset_trains_the_unet_only_in_bf16(tiny_sdxl, character_dataset, tmp_path,
                                                          fresh_accelerate, monkeypatch):
    cfg = load_preset("Low VRAM (8 GB)", pretrained_model_name_or_path=str(tiny_sdxl.single_file),
                      train_data_dir=str(character_dataset), output_dir=str(tmp_path / "model"),
                      logging_dir=str(tmp_path / "log"), output_name="myLoRA", max_resolution="64,64",
                      min_bucket_reso=64, max_train_epochs=1, learning_rate=1e-3)
    from lora_trainer.train import trainer as trainer_module
    from lora_trainer.train.fp8 import FP8

    stored = []
    real = trainer_module.store_frozen_weights_in_fp8
    monkeypatch.setattr(trainer_module, "store_frozen_weights_in_fp8",
                        lambda unet: stored.append(unet) or real(unet))
    result = train(cfg, model_config_dir=str(tiny_sdxl.config_dir))
    dtypes = {p.dtype for p in stored[0].parameters()}
    assert FP8 in dtypes and torch.bfloat16 in dtypes  # frozen weights in float8, norms and biases in bf16
    tensors = load_file(result.final_file)
    assert tensors and all(k.startswith("lora_unet_") for k in tensors)  # the U-Net only
    assert all(v.isfinite().all() for v in tensors.values())
    assert {v.dtype for k, v in tensors.items() if k.endswith("weight")} == {torch.bfloat16}
    assert any(v.abs().max() > 0 for k, v in tensors.items() if k.endswith("lora_up.weight"))  # it learned

