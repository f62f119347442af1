"""Named starting points: plain dicts of TrainConfig fields (anything not named keeps its default)."""

from __future__ import annotations

from typing import Any

from lora_trainer.config.settings import ConfigError, TrainConfig

# ../shared/guide-realistic-character-lora.txt, "Setup the training process": the settings it names.
_GUIDE: dict[str, Any] = {
    "max_train_epochs": 64,  # high on purpose: pick the best epoch afterwards from TensorBoard and grids
    "save_every_n_epochs": 1,  # ... which needs every epoch saved
    "caption_extension": ".txt",
    "save_precision": "bf16",
    "optimizer": "Adafactor",
    "lr_scheduler": "adafactor",
    # The guide names Adafactor but no arguments; these are what kohya_ss users pass for a fixed learning
    # rate. relative_step=False: otherwise Adafactor ignores learning_rate and picks its own time-based
    # step size. scale_parameter=False: no scaling by the weights' RMS, which is ~0 for a fresh LoRA's
    # up-weights and would stall the first steps. warmup_init only matters with relative_step.
    "optimizer_args": "scale_parameter=False relative_step=False warmup_init=False",
    # The guide keeps the kohya_ss GUI's default rates: 1e-4, the text encoders at half (they overfit
    # sooner than the U-Net).
    "learning_rate": 1e-4,
    "text_encoder_lr": 5e-5,
    "cache_latents": True,
    "cache_latents_to_disk": True,
    "network_dim": 128,
    "network_alpha": 32.0,
    "enable_bucket": True,
    "min_bucket_reso": 256,
    "max_bucket_reso": 2048,
    "bucket_no_upscale": True,
    "max_resolution": "1024,1024",
    # Not in the guide (kohya's default is 75): the WebUI reads a prompt whole, in 75-token chunks, so a
    # WD14 caption with a trigger word, often past 75 tokens, trains whole up to 225, as it is tested.
    "max_token_length": 225,
}

PRESETS: dict[str, dict[str, Any]] = {
    "Realistic character (guide)": _GUIDE,
    "Realistic character (guide) - NVIDIA": {
        **_GUIDE,
        "train_batch_size": 2,
        "mixed_precision": "bf16",
        "full_bf16": True,
        "gradient_checkpointing": True,
        # The guide says "CrossAttention: xformers"; PyTorch's SDPA is the same memory-efficient
        # attention without the extra package.
        "xformers": "sdpa",
    },
    "Realistic character (guide) - Apple": {
        **_GUIDE,
        "train_batch_size": 1,
        "mixed_precision": "no",
        "xformers": "none",
    },
    # What kohya documents for an SDXL LoRA on an 8 GB card: the U-Net only (the frozen text encoders'
    # outputs are cached and they leave the GPU, as does the VAE once every latent is cached), gradient
    # checkpointing, bf16 weights, Adafactor (its state is a fraction of AdamW's) and a low rank. Cards
    # without bf16 (GTX 16xx, RTX 20xx): mixed_precision fp16 with full_fp16.
    "Low VRAM (8 GB)": {
        **_GUIDE,
        "network_train_unet_only": True,
        "sdxl_cache_text_encoder_outputs": True,
        "gradient_checkpointing": True,
        "mixed_precision": "bf16",
        "full_bf16": True,
        "train_batch_size": 1,
        "network_dim": 16,
        "network_alpha": 8.0,
        "xformers": "sdpa",
        # The frozen U-Net in float8 (kohya's fp8_base): 2.4 GiB instead of 4.8, what makes 8 GB cards
        # comfortable; with gradient checkpointing only one block's upcast copy lives at a time.
        "fp8_base": True,
    },
    # For the demo and tests: the tiny random-weight model, 64 px images, a few seconds per epoch on CPU.
    "CPU smoke test": {
        "max_resolution": "64,64",
        "enable_bucket": True,
        "min_bucket_reso": 64,
        "bucket_reso_steps": 64,
        "network_dim": 4,
        "network_alpha": 2.0,  # alpha != rank, so the alpha/rank scale is exercised
        "train_batch_size": 1,
        "mixed_precision": "no",  # bf16 autocast works on CPU but is slower there
        "optimizer": "AdamW",
        "learning_rate": 1e-3,  # a tiny model and a few dozen steps: a larger rate shows learning
        "max_train_epochs": 2,
        "save_every_n_epochs": 1,
        "max_token_length": 225,
    },
}


def preset_names() -> list[str]:
    return list(PRESETS)


def load_preset(name: str, **overrides: Any) -> TrainConfig:
    """The preset as a validated TrainConfig, with `overrides` (TrainConfig field names) applied."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(repr(n) for n in PRESETS)}")
    return TrainConfig.from_dict({**PRESETS[name], **overrides})
