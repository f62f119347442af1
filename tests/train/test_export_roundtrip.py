"""The exported kohya file means what the trained model meant: diffusers' own `load_lora_weights`
reproduces the in-memory model's outputs (alpha != rank included), and a trained LoRA lowers the
denoising loss on its training images."""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from peft import LoraConfig
from safetensors.torch import load_file

from lora_trainer.config.presets import load_preset
from lora_trainer.train.buckets import Bucketer
from lora_trainer.train.cache import LatentCache
from lora_trainer.train.data import scan_training_folder
from lora_trainer.train.export import lora_metadata, save_lora
from lora_trainer.train.network import collect_network_tensors
from lora_trainer.train.sgm_names import (
    TEXT_ENCODER_LORA_TARGETS,
    UNET_LORA_TARGETS,
    UNetLayout,
    lora_target_names,
)
from lora_trainer.train.text import encode_prompts
from lora_trainer.train.trainer import train

RANK, ALPHA = 4, 2.0


def pipeline(tiny_sdxl) -> StableDiffusionXLPipeline:
    return StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl.diffusers_dir), local_files_only=True)


def unet_output(pipe, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 4, 8, 8, generator=g)
    embeds, pooled = encode_prompts([pipe.tokenizer, pipe.tokenizer_2], [pipe.text_encoder, pipe.text_encoder_2],
                                    ["myLoRA, red hair", "myLoRA, full body"])
    time_ids = torch.tensor([[64, 64, 0, 0, 64, 64]] * 2, dtype=torch.float32)
    with torch.no_grad():
        return pipe.unet(latents, torch.tensor([500, 900]), embeds,
                         added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample


def metadata() -> dict[str, str]:
    return lora_metadata(output_name="t", network_dim=RANK, network_alpha=ALPHA, epoch=1, steps=1,
                         num_train_images=1, resolution=(64, 64), learning_rate=1e-4, unet_lr=1e-4,
                         text_encoder_lr=1e-4, optimizer="AdamW", lr_scheduler="constant", model_name="tiny",
                         training_started_at=0.0, tag_frequency={}, bucket_info={})


def test_diffusers_load_lora_weights_reproduces_the_trained_model(tiny_sdxl, tmp_path):
    trained = pipeline(tiny_sdxl)
    models = {"unet": trained.unet, "te1": trained.text_encoder, "te2": trained.text_encoder_2}
    torch.manual_seed(1)
    for component, model in models.items():
        targets = UNET_LORA_TARGETS if component == "unet" else TEXT_ENCODER_LORA_TARGETS
        model.add_adapter(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=list(targets)))
        with torch.no_grad():  # lora_up starts at zero; give it values as training would
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.2)
    expected = unet_output(trained)

    tensors = collect_network_tensors(models, UNetLayout.from_config(trained.unet.config))
    save_lora(tmp_path / "t.safetensors", tensors, metadata(), save_precision="float")

    loaded = pipeline(tiny_sdxl)
    loaded.load_lora_weights(str(tmp_path), weight_name="t.safetensors")
    base = unet_output(pipeline(tiny_sdxl))
    got = unet_output(loaded)

    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert (got - base).abs().max() > 1e-2, "the LoRA must change the output"
    plain_unet = pipeline(tiny_sdxl).unet
    n_unet = sum(1 for k in tensors if k.startswith("lora_unet_") and k.endswith(".alpha"))
    assert n_unet == len(lora_target_names(plain_unet, UNET_LORA_TARGETS))


def fixed_noise_loss(pipe, img_root) -> float:
    """The denoising loss over the training images with fixed noise and timesteps: deterministic,
    so a drop is learning, not luck."""
    items = scan_training_folder(img_root).items
    bucketer = Bucketer((64, 64), min_bucket_reso=64, bucket_reso_steps=64)
    cache = LatentCache(pipe.vae, "vae")
    g = torch.Generator().manual_seed(0)
    total = 0.0
    with torch.no_grad():
        for item in items:
            latent = cache.get(item.path, bucketer.assign(item.size))[None]
            embeds, pooled = encode_prompts([pipe.tokenizer, pipe.tokenizer_2],
                                            [pipe.text_encoder, pipe.text_encoder_2], [item.caption])
            time_ids = torch.tensor([[64, 64, 0, 0, 64, 64]], dtype=torch.float32)
            for t in (100, 300, 500, 700, 900):
                noise = torch.randn(latent.shape, generator=g)
                timestep = torch.tensor([t])
                noisy = pipe.scheduler.add_noise(latent, noise, timestep)
                pred = pipe.unet(noisy, timestep, embeds,
                                 added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
                total += torch.nn.functional.mse_loss(pred, noise).item()
    return total / (len(items) * 5)


@pytest.mark.slow
def test_training_lowers_the_loss_on_the_training_set(tiny_sdxl, tmp_path):
    from lora_trainer.demo.synthetic import make_character_dataset

    img = make_character_dataset(tmp_path / "img", count=8, size=64, repeats=4, seed=1)
    cfg = load_preset("CPU smoke test", pretrained_model_name_or_path=str(tiny_sdxl.single_file),
                      train_data_dir=str(img), output_dir=str(tmp_path / "model"), logging_dir=str(tmp_path / "log"),
                      output_name="learn", max_train_epochs=6, train_batch_size=4, learning_rate=3e-2,
                      network_train_unet_only=True, save_precision="float")
    result = train(cfg, model_config_dir=str(tiny_sdxl.config_dir))

    base = pipeline(tiny_sdxl)
    before = fixed_noise_loss(base, img)
    base.load_lora_weights(str(result.final_file.parent), weight_name=result.final_file.name)
    after = fixed_noise_loss(base, img)
    assert after < 0.97 * before, (before, after)
    assert set(load_file(result.final_file)) == set(load_file(result.saved_files[0]))


def test_diffusers_reproduces_a_lora_with_convolutions(tiny_sdxl, tmp_path):
    """conv_dim: the ResNet and sampler convolutions' LoRA (conv alpha != conv rank) round-trips through
    diffusers' kohya reader like the attention layers'."""
    from lora_trainer.config import TrainConfig
    from lora_trainer.train.network import UNET_CONV_TARGETS, add_network

    trained = pipeline(tiny_sdxl)
    add_network(trained.unet, TrainConfig(network_dim=RANK, network_alpha=ALPHA, conv_dim=2, conv_alpha=3.0),
                UNET_LORA_TARGETS, UNET_CONV_TARGETS)
    torch.manual_seed(2)
    with torch.no_grad():
        for name, p in trained.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    expected = unet_output(trained)
    tensors = collect_network_tensors({"unet": trained.unet}, UNetLayout.from_config(trained.unet.config))
    conv_downs = [k for k, v in tensors.items() if k.endswith("lora_down.weight") and v.dim() == 4]
    assert conv_downs and all(tensors[k].shape[0] == 2 for k in conv_downs)
    save_lora(tmp_path / "c.safetensors", tensors, metadata(), save_precision="float")

    loaded = pipeline(tiny_sdxl)
    loaded.load_lora_weights(str(tmp_path), weight_name="c.safetensors")
    got = unet_output(loaded)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
