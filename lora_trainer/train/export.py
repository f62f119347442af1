"""Save trained LoRA weights as a kohya-format `.safetensors` that Forge, A1111 and ComfyUI load.

Keys are `lora_unet_<SGM module path>` / `lora_te1_...` / `lora_te2_...` with `.lora_down.weight`,
`.lora_up.weight` and `.alpha` (scale = alpha / rank, the same meaning as peft's lora_alpha / r).
Metadata values are all strings; `ss_base_model_version` and `modelspec.architecture` make Forge
classify the file as SDXL (without them it is hidden while an SDXL model is loaded).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save

from lora_trainer.fsutil import atomic_open

ADAPTER = "default"
SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "float": torch.float32}


def file_hashes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, str]:
    """The two hashes A1111-style UIs show for a LoRA: sha256 of the tensor data (the part after the
    header, so metadata does not change it) and the legacy 8-digit hash of a 64 KiB slice."""
    data = save(tensors, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    header_len = int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(data[8 + header_len:]).hexdigest()
    legacy = io.BytesIO(data)
    legacy.seek(0x100000)
    legacy_hash = hashlib.sha256(legacy.read(0x10000)).hexdigest()[:8]
    return {"sshs_model_hash": model_hash, "sshs_legacy_hash": legacy_hash}


def save_lora(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str],
              save_precision: str = "fp16") -> Path:
    """Write atomically: a crash never leaves a half-written file that Forge would mark corrupted."""
    dtype = SAVE_DTYPES[save_precision]
    cast = {k: v.detach().to("cpu", dtype).contiguous() for k, v in tensors.items()}
    metadata = {**metadata, **file_hashes(cast, metadata)}
    path = Path(path)
    # Serialised in memory and written through a Python file, so a full disk raises OSError (ENOSPC)
    # naming the file rather than safetensors' own error type.
    with atomic_open(path, "wb") as f:
        f.write(save(cast, metadata=metadata))
    return path


def lora_metadata(*, output_name: str, network_dim: int, network_alpha: float, epoch: int, steps: int,
                  num_train_images: int, resolution: tuple[int, int], learning_rate: float,
                  unet_lr: float, text_encoder_lr: float | None, optimizer: str, lr_scheduler: str,
                  model_name: str, training_started_at: float, tag_frequency: dict, bucket_info: dict,
                  extra: Mapping[str, object] = ()) -> dict[str, str]:
    width, height = resolution
    metadata = {
        "ss_base_model_version": "sdxl_base_v1-0",
        "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": output_name,
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(training_started_at)),
        "ss_output_name": output_name,
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(network_dim),
        "ss_network_alpha": str(network_alpha),
        "ss_epoch": str(epoch),
        "ss_steps": str(steps),
        "ss_num_train_images": str(num_train_images),
        "ss_resolution": f"({width}, {height})",
        "ss_learning_rate": str(learning_rate),
        "ss_unet_lr": str(unet_lr),
        "ss_text_encoder_lr": str(text_encoder_lr) if text_encoder_lr is not None else "None",
        "ss_network_train_unet_only": str(text_encoder_lr is None),
        "ss_optimizer": optimizer,
        "ss_lr_scheduler": lr_scheduler,
        "ss_sd_model_name": model_name,
        "ss_training_started_at": str(training_started_at),
        "ss_tag_frequency": json.dumps(tag_frequency),
        "ss_bucket_info": json.dumps(bucket_info),
    }
    metadata.update({f"ss_{k}": str(v) for k, v in dict(extra).items()})
    return metadata
