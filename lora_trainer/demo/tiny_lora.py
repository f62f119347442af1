"""A LoRA file as the trainer exports it (kohya keys, real alpha, the trainer's metadata), with random
non-zero U-Net weights and no training: for tests, benchmarks and demos of the Review, where what a
LoRA looks like matters and what it learned does not."""

from __future__ import annotations

from pathlib import Path


def write_tiny_lora(diffusers_dir: str | Path, path: str | Path, *, seed: int, epoch: int | None = None,
                    step: int | None = None, scale: float = 0.5, rank: int = 4, alpha: float = 4.0) -> Path:
    """Write `path` for the U-Net in `diffusers_dir` (e.g. `build_tiny_sdxl(...).diffusers_dir`);
    `lora_up` ~ N(0, scale^2), so it visibly changes images; metadata epoch/step default to `seed`."""
    import torch
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    from lora_trainer.runs.layout import parse_lora_stem
    from lora_trainer.train.export import lora_metadata, save_lora
    from lora_trainer.train.network import collect_network_tensors
    from lora_trainer.train.sgm_names import UNET_LORA_TARGETS, UNetLayout

    path = Path(path)
    unet = UNet2DConditionModel.from_pretrained(str(diffusers_dir), subfolder="unet")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(UNET_LORA_TARGETS)))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, scale)
    tensors = collect_network_tensors({"unet": unet}, UNetLayout.from_config(unet.config))
    meta = lora_metadata(output_name=parse_lora_stem(path.stem)[0], network_dim=rank, network_alpha=alpha,
                         epoch=seed if epoch is None else epoch, steps=seed if step is None else step,
                         num_train_images=8, resolution=(64, 64), learning_rate=1e-4, unet_lr=1e-4,
                         text_encoder_lr=None, optimizer="AdamW", lr_scheduler="constant", model_name="tiny",
                         training_started_at=0.0, tag_frequency={}, bucket_info={})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_lora(path, tensors, meta, save_precision="float")
    return path
