"""Network types (train/network.py, train/dora.py): LoRA with convolutions, DoRA, LoHa and LoKr.

What a user relies on: the file a run writes makes a WebUI compute exactly the layer that was trained
(Forge, A1111 and ComfyUI merge `W + strength * delta` from the file's tensors; `network.merged_weight`
does the same), the keys and metadata those programs read, and a real run of each type trains."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import safe_open
from safetensors.torch import load_file

from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.demo.tiny_sdxl import _make_unet
from lora_trainer.train import dora
from lora_trainer.train.export import save_lora
from lora_trainer.train.network import (
    UNET_CONV_TARGETS,
    add_network,
    collect_network_tensors,
    merged_weight,
    module_stems,
    network_metadata,
)
from lora_trainer.train.sgm_names import UNET_LORA_TARGETS, UNetLayout, kohya_lora_name, lora_target_names

TYPES = {
    "lora+conv": dict(LoRA_type="Standard", network_dim=4, network_alpha=3.0, conv_dim=2, conv_alpha=5.0),
    "dora": dict(LoRA_type="Standard", network_dim=4, network_alpha=3.0, dora_wd=True),
    "locon+dora": dict(LoRA_type="LyCORIS/LoCon", network_dim=4, network_alpha=3.0, conv_dim=2, conv_alpha=1.0,
                       dora_wd=True),
    "loha": dict(LoRA_type="LyCORIS/LoHa", network_dim=4, network_alpha=3.0, conv_dim=2, conv_alpha=5.0),
    "lokr": dict(LoRA_type="LyCORIS/LoKr", network_dim=4, network_alpha=3.0, conv_dim=2, conv_alpha=5.0),
    "lokr-factored": dict(LoRA_type="LyCORIS/LoKr", network_dim=2, network_alpha=3.0, factor=4),
}


def _trained_unet(settings: dict):
    """The tiny U-Net with the network attached and its weights set at random, as after training
    (fresh adapters are zero, which would hide any mistake in the scales)."""
    torch.manual_seed(0)
    unet = _make_unet(0)
    add_network(unet, TrainConfig(**settings), UNET_LORA_TARGETS, UNET_CONV_TARGETS)
    generator = torch.Generator().manual_seed(1)
    for name, p in unet.named_parameters():
        if p.requires_grad:
            noise = torch.randn(p.shape, generator=generator) * 0.1
            p.data = p.data * (1 + noise) if dora.MAGNITUDE in name else noise
    return unet


def _layer_input(base: torch.nn.Module) -> torch.Tensor:
    if isinstance(base, torch.nn.Conv2d):
        return torch.randn(2, base.in_channels, 6, 6)
    return torch.randn(3, base.in_features)


def _apply(base: torch.nn.Module, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if isinstance(base, torch.nn.Conv2d):
        return F.conv2d(x, weight, base.bias, base.stride, base.padding)
    return F.linear(x, weight, base.bias)


@pytest.mark.parametrize("kind", list(TYPES))
def test_the_saved_file_makes_a_webui_compute_the_trained_layer(kind, tmp_path):
    """Every adapted layer: its output in memory (peft's layer, our DoRA) equals the layer with the
    file's delta merged the WebUIs' way, at strength 1; at strength 0.5 half of the change."""
    unet = _trained_unet(TYPES[kind])
    layout = UNetLayout.from_config(unet.config)
    path = save_lora(tmp_path / "net.safetensors", collect_network_tensors({"unet": unet}, layout),
                     {"ss_network_module": "x"}, save_precision="float")
    tensors = load_file(path)
    checked, kinds = 0, set()
    for name, layer in unet.named_modules():
        if not isinstance(layer, BaseTunerLayer):
            continue
        base = layer.get_base_layer()
        x = _layer_input(base)
        with torch.no_grad():
            in_memory = layer(x)
        stem = kohya_lora_name("unet", name, layout)
        from_file = _apply(base, merged_weight(base.weight, tensors, stem), x)
        assert torch.allclose(in_memory, from_file, rtol=1e-4, atol=1e-5), f"{stem}: the file computes another layer"
        half = _apply(base, merged_weight(base.weight, tensors, stem, strength=0.5), x)
        plain = _apply(base, base.weight, x)
        assert torch.allclose(half, (plain + in_memory) / 2, rtol=1e-4, atol=1e-5)
        checked += 1
        kinds.add(type(base).__name__)
    plain = _make_unet(0)
    expected = len(lora_target_names(plain, UNET_LORA_TARGETS))
    if TYPES[kind].get("conv_dim"):
        expected += len(lora_target_names(plain, UNET_CONV_TARGETS))
        assert kinds == {"Linear", "Conv2d"}
    assert checked == expected == len(module_stems(tensors))


def test_each_type_writes_the_keys_the_webuis_read_with_alpha_where_they_scale():
    keys = {}
    for kind in TYPES:
        unet = _trained_unet(TYPES[kind])
        tensors = collect_network_tensors({"unet": unet}, UNetLayout.from_config(unet.config))
        keys[kind] = tensors
    q = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"  # a Linear of the tiny U-Net
    conv = "lora_unet_input_blocks_1_0_in_layers_2"  # its first ResNet's 3x3 convolution
    suffixes = {kind: sorted(k[len(q) + 1:] for k in tensors if k.startswith(q + ".")) for kind, tensors in keys.items()}
    assert suffixes["lora+conv"] == ["alpha", "lora_down.weight", "lora_up.weight"]
    assert suffixes["dora"] == ["alpha", "dora_scale", "lora_down.weight", "lora_up.weight"]
    assert suffixes["loha"] == ["alpha", "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"]
    # a whole w2 is scaled by 1 in every reader: no alpha; a factored one by alpha / rank
    assert suffixes["lokr"] == ["lokr_w1", "lokr_w2"]
    assert suffixes["lokr-factored"] == ["alpha", "lokr_w1", "lokr_w2_a", "lokr_w2_b"]
    lora = keys["lora+conv"]
    assert lora[f"{conv}.lora_down.weight"].shape[:2] == (2, lora[f"{conv}.lora_down.weight"].shape[1])
    assert lora[f"{conv}.lora_down.weight"].dim() == 4 and lora[f"{conv}.alpha"].item() == 5.0
    assert lora[f"{q}.alpha"].item() == 3.0
    # DoRA's magnitude: one per input channel, first side 1 (how A1111, Forge and ComfyUI read it)
    d = keys["dora"]
    assert d[f"{q}.dora_scale"].shape == (1, d[f"{q}.lora_down.weight"].shape[1])
    assert keys["locon+dora"][f"{conv}.dora_scale"].shape[:2] == (1, keys["locon+dora"][f"{conv}.lora_down.weight"].shape[1])


def test_dora_starts_as_the_unchanged_layer_and_its_magnitude_learns():
    torch.manual_seed(0)
    unet = _make_unet(0)
    plain = _make_unet(0)
    add_network(unet, TrainConfig(dora_wd=True, network_dim=4), UNET_LORA_TARGETS)
    layer = unet.get_submodule("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q")
    base = plain.get_submodule("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q")
    x = torch.randn(3, base.in_features)
    assert torch.allclose(layer(x), base(x), atol=1e-6)
    magnitude = getattr(layer, dora.MAGNITUDE)
    assert magnitude.requires_grad and magnitude.shape == (base.in_features,)
    layer(x).square().sum().backward()
    assert magnitude.grad is not None and magnitude.grad.abs().sum() > 0
    with torch.no_grad():
        magnitude[0] *= 2  # one input channel's magnitude doubled: that column of W doubles
    expected = base.weight.clone()
    expected[:, 0] *= 2
    assert torch.allclose(layer(x), F.linear(x, expected, base.bias), atol=1e-5)


def test_metadata_names_the_network_module_and_args():
    assert network_metadata(TrainConfig()) == {"ss_network_module": "networks.lora"}
    conv = network_metadata(TrainConfig(conv_dim=8, conv_alpha=4))
    assert conv["ss_network_module"] == "networks.lora"
    assert json.loads(conv["ss_network_args"]) == {"conv_dim": "8", "conv_alpha": "4"}
    loha = network_metadata(TrainConfig(LoRA_type="LyCORIS/LoHa"))
    assert loha["ss_network_module"] == "lycoris.kohya" and json.loads(loha["ss_network_args"])["algo"] == "loha"
    lokr = json.loads(network_metadata(TrainConfig(LoRA_type="LyCORIS/LoKr", factor=8))["ss_network_args"])
    assert lokr == {"algo": "lokr", "factor": "8"}
    dora_args = json.loads(network_metadata(TrainConfig(dora_wd=True))["ss_network_args"])
    assert dora_args == {"algo": "locon", "dora_wd": "True", "wd_on_output": "False"}


@pytest.mark.parametrize(("settings", "message"), [
    ({"LoRA_type": "LyCORIS/LoHa", "dora_wd": True}, "dora_wd = True works with LoRA_type 'Standard' or"),
    ({"LoRA_type": "LoHa"}, "LoRA_type = 'LoHa': must be one of 'Standard', 'LyCORIS/LoCon'"),
    ({"factor": 4}, "factor = 4 is a LoKr setting"),
    ({"LoRA_type": "LyCORIS/LoKr", "loraplus_lr_ratio": 16}, "loraplus_lr_ratio works on LoRA's up weights"),
    ({"fp8_base": True, "dora_wd": True}, "fp8_base = True with dora_wd = True"),
    ({"conv_dim": -1}, "conv_dim = -1: must be >= 0"),
    ({"optimizer": "AdamWScheduleFree", "lr_scheduler": "cosine"}, "schedules its own learning rate"),
    ({"optimizer": "AdamWScheduleFree", "ema_decay": 0.99}, "already averages the weights it saves"),
])
def test_network_and_optimizer_settings_that_cannot_work_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**settings)


# --- real runs on the tiny SDXL -------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dora", "loha", "lokr"])
def test_a_run_of_each_type_trains_and_writes_its_file(kind, tiny_sdxl, character_dataset, tmp_path):
    from tests.train.test_training import run, tiny_config

    settings = {k: v for k, v in TYPES[kind].items() if k not in ("network_dim", "network_alpha")}
    cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path, max_train_epochs=1, **settings)
    result = run(cfg, tiny_sdxl)
    tensors = load_file(result.final_file)
    with safe_open(str(result.final_file), "pt") as f:
        meta = f.metadata()
    assert meta["ss_network_module"] == "lycoris.kohya"
    q = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    # each type's zero-initialised factor has moved: the run trained it
    moved = {"dora": "lora_up.weight", "loha": "hada_w2_b", "lokr": "lokr_w1"}[kind]
    assert tensors[f"{q}.{moved}"].abs().sum() > 0
    if kind == "dora":  # the magnitude starts at the base weight's column norms and has learned
        from lora_trainer.train.model import load_sdxl

        unet = load_sdxl(str(tiny_sdxl.single_file), config_dir=str(tiny_sdxl.config_dir)).unet
        base = unet.get_submodule("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q").weight
        start = dora.column_norms(base.detach().float())
        scale = tensors[f"{q}.dora_scale"].float()
        assert scale.shape == (1, base.shape[1])
        assert not torch.allclose(scale[0], start, atol=1e-4)
        assert torch.allclose(scale[0], start, rtol=0.2), "it moved as training moves it, not at random"
