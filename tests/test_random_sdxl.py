"""Random-weight checkpoints and LoRAs from a config folder alone (what the real-Forge test uses at
full size), checked on the tiny model's config folder: same keys and shapes as the real thing."""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from safetensors import safe_open

from lora_trainer.demo.random_sdxl import main, random_lora_tensors, write_random_checkpoint
from lora_trainer.train.model import load_sdxl
from lora_trainer.train.network import collect_network_tensors
from lora_trainer.train.sgm_names import (
    TEXT_ENCODER_LORA_TARGETS,
    UNET_LORA_TARGETS,
    UNetLayout,
    sdxl_single_file_state_dict,
)


@pytest.fixture(scope="module")
def tiny_pipe(tiny_sdxl):
    return StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl.diffusers_dir), local_files_only=True)


def test_random_checkpoint_has_the_real_keys_and_loads(tiny_sdxl, tiny_pipe, tmp_path):
    out = write_random_checkpoint(tiny_sdxl.config_dir, tmp_path / "random.safetensors", seed=3)

    real = sdxl_single_file_state_dict(tiny_pipe.unet, tiny_pipe.vae, tiny_pipe.text_encoder,
                                       tiny_pipe.text_encoder_2)
    with safe_open(str(out), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        norm = f.get_tensor("model.diffusion_model.out.0.weight")
        bias = f.get_tensor("model.diffusion_model.out.0.bias")
        conv = f.get_tensor("model.diffusion_model.input_blocks.0.0.weight")
    assert shapes == {k: tuple(v.shape) for k, v in real.items()}
    assert norm.dtype == torch.float16 and torch.all(norm == 1) and torch.all(bias == 0)
    assert 0.5 < conv.float().std().item() * (4 * 3 * 3) ** 0.5 < 1.5  # N(0, 1/fan_in)

    model = load_sdxl(str(out), config_dir=str(tiny_sdxl.config_dir), allow_download=False)
    assert torch.isfinite(next(model.unet.parameters())).all()
    again = write_random_checkpoint(tiny_sdxl.config_dir, tmp_path / "again.safetensors", seed=3)
    assert again.read_bytes() == out.read_bytes()  # deterministic


def test_cli_writes_a_checkpoint(tiny_sdxl, tmp_path, capsys):
    main([str(tiny_sdxl.config_dir), str(tmp_path / "m.safetensors")])
    assert "wrote" in capsys.readouterr().out and (tmp_path / "m.safetensors").stat().st_size > 0


def test_random_lora_has_exactly_the_keys_training_exports(tiny_sdxl):
    """The meta-device model with materialised LoRA layers names its tensors as a model trained
    in memory does (both go through network.collect_network_tensors)."""
    from peft import LoraConfig

    tensors = random_lora_tensors(tiny_sdxl.config_dir, rank=2, alpha=1.0, seed=1)

    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl.diffusers_dir), local_files_only=True)
    models = {"unet": pipe.unet, "te1": pipe.text_encoder, "te2": pipe.text_encoder_2}
    for component, model in models.items():
        targets = UNET_LORA_TARGETS if component == "unet" else TEXT_ENCODER_LORA_TARGETS
        model.add_adapter(LoraConfig(r=2, lora_alpha=1.0, target_modules=list(targets)))
    trained = collect_network_tensors(models, UNetLayout.from_config(pipe.unet.config))

    assert {k: tuple(v.shape) for k, v in tensors.items()} == {k: tuple(v.shape) for k, v in trained.items()}
    assert all(t.device.type == "cpu" and torch.isfinite(t).all() for t in tensors.values())
    ups = [v for k, v in tensors.items() if k.endswith("lora_up.weight")]
    assert all(u.abs().sum() > 0 for u in ups)  # not peft's zero init: the LoRA changes outputs
    assert any(k.startswith("lora_te2_") for k in tensors)

    unet_only = random_lora_tensors(tiny_sdxl.config_dir, rank=2, text_encoders=False)
    assert unet_only and all(k.startswith("lora_unet_") for k in unet_only)


@pytest.mark.parametrize("network", [{"LoRA_type": "LyCORIS/LoHa", "conv_dim": 2}, {"LoRA_type": "LyCORIS/LoKr"},
                                     {"dora_wd": True}], ids=["loha", "lokr", "dora"])
def test_random_networks_of_each_type_have_the_keys_a_run_exports(tiny_sdxl, network):
    from lora_trainer.config import TrainConfig
    from lora_trainer.train.network import UNET_CONV_TARGETS, add_network

    tensors = random_lora_tensors(tiny_sdxl.config_dir, rank=2, alpha=1.0, seed=1, text_encoders=False,
                                  network=network)
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl.diffusers_dir), local_files_only=True)
    add_network(pipe.unet, TrainConfig(network_dim=2, network_alpha=1.0, **network), UNET_LORA_TARGETS,
                UNET_CONV_TARGETS)
    trained = collect_network_tensors({"unet": pipe.unet}, UNetLayout.from_config(pipe.unet.config))
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {k: tuple(v.shape) for k, v in trained.items()}
    assert all(torch.isfinite(t).all() and t.abs().sum() > 0 for t in tensors.values())
