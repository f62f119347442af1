"""The trained network: which layers get an adapter, of which kind, and the tensors a file holds.

Kinds (TrainConfig.LoRA_type, the kohya_ss GUI's names):
- "Standard": LoRA on the attention and feed-forward layers (and on the convolutions with conv_dim);
- "LyCORIS/LoCon": the same with the convolutions, saved as LyCORIS's LoCon;
- "LyCORIS/LoHa": delta = (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / rank;
- "LyCORIS/LoKr": delta = kron(w1, w2_a @ w2_b) * alpha / rank (kron(w1, w2) when w2 is whole);
- dora_wd: DoRA (see `dora.py`) on Standard or LoCon.
peft (0.13.2) holds the LoRA, LoHa and LoKr layers; files use the keys Forge, A1111 and ComfyUI read:
`<stem>.lora_down/lora_up.weight`, `.hada_w1_a ...`, `.lokr_w1 / .lokr_w2(_a/_b)`, `.alpha`, `.dora_scale`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import torch
from peft import LoHaConfig, LoKrConfig, LoraConfig
from peft.tuners.loha import LoHaLayer
from peft.tuners.lokr import LoKrLayer
from peft.tuners.lora import LoraLayer

from lora_trainer.train import dora
from lora_trainer.train.sgm_names import SDXL_UNET_LAYOUT, UNetLayout, kohya_lora_name

ADAPTER = "default"
# The U-Net's convolutions a conv_dim trains (kohya's "C3Lier" / LyCORIS's LoCon): the ResNet blocks'
# 3x3 and skip convolutions and the down/upsamplers; not conv_in / conv_out.
UNET_CONV_TARGETS = ("conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv")
LYCORIS_ALGOS = {"Standard": "lora", "LyCORIS/LoCon": "locon", "LyCORIS/LoHa": "loha", "LyCORIS/LoKr": "lokr"}


def add_network(model: torch.nn.Module, cfg, targets: tuple[str, ...], conv_targets: tuple[str, ...] = ()) -> None:
    """Attach the configured adapter to `targets` (Linear layers, rank network_dim) and, when conv_dim
    is set, to `conv_targets` (rank conv_dim, alpha conv_alpha)."""
    convs = conv_targets if cfg.conv_dim else ()
    common = dict(r=cfg.network_dim, target_modules=list(targets) + list(convs),
                  rank_pattern={c: cfg.conv_dim for c in convs}, alpha_pattern={c: cfg.conv_alpha for c in convs})
    if cfg.LoRA_type == "LyCORIS/LoHa":
        config = LoHaConfig(alpha=cfg.network_alpha, use_effective_conv2d=False, init_weights=True, **common)
    elif cfg.LoRA_type == "LyCORIS/LoKr":
        config = LoKrConfig(alpha=cfg.network_alpha, use_effective_conv2d=False, init_weights=True,
                            decompose_both=False, decompose_factor=cfg.factor, **common)
    else:
        config = LoraConfig(lora_alpha=cfg.network_alpha, init_lora_weights=True, **common)
    model.add_adapter(config)
    if cfg.LoRA_type == "LyCORIS/LoKr":
        for module in model.modules():
            if isinstance(module, LoKrLayer):
                _apply_lokr_alpha(module)
    if cfg.dora_wd:
        for module in model.modules():
            if isinstance(module, LoraLayer):
                dora.attach(module)


def _apply_lokr_alpha(layer: LoKrLayer) -> None:
    """peft's LoKr leaves alpha out of its delta; LyCORIS (and so every WebUI) scales a LoKr whose w2
    is factored by alpha / rank, and one with a whole w2 by 1. The same here, so the file means what
    was trained."""
    scale = lokr_scale(layer)
    if scale == 1.0:
        return
    unscaled = layer.get_delta_weight
    layer.get_delta_weight = lambda adapter_name: unscaled(adapter_name) * scale


def lokr_scale(layer: LoKrLayer) -> float:
    if ADAPTER in layer.lokr_w2:
        return 1.0
    return float(layer.alpha[ADAPTER]) / layer.r[ADAPTER]


# ---------------------------------------------------------------------------------------------
# Export


def collect_network_tensors(models: Mapping[str, torch.nn.Module],
                            unet_layout: UNetLayout = SDXL_UNET_LAYOUT) -> dict[str, torch.Tensor]:
    """`models` maps a kohya component ("unet", "te1", "te2") to a model carrying adapters."""
    tensors: dict[str, torch.Tensor] = {}
    for component, model in models.items():
        for module_name, module in model.named_modules():
            stem = None
            if isinstance(module, (LoraLayer, LoHaLayer, LoKrLayer)) and _has_adapter(module):
                stem = kohya_lora_name(component, module_name, unet_layout)
            if stem is None:
                continue
            for suffix, tensor in _module_tensors(module).items():
                tensors[f"{stem}.{suffix}"] = tensor.detach()
    return tensors


def _has_adapter(module) -> bool:
    if isinstance(module, LoraLayer):
        return ADAPTER in module.lora_A
    if isinstance(module, LoHaLayer):
        return ADAPTER in module.hada_w1_a
    return ADAPTER in module.lokr_w1 or ADAPTER in module.lokr_w1_a


def _module_tensors(module) -> dict[str, torch.Tensor]:
    if isinstance(module, LoraLayer):
        out = {"lora_down.weight": module.lora_A[ADAPTER].weight, "lora_up.weight": module.lora_B[ADAPTER].weight,
               "alpha": torch.tensor(float(module.lora_alpha[ADAPTER]))}
        if dora.is_attached(module):
            out["dora_scale"] = dora.exported_scale(module)
        return out
    if isinstance(module, LoHaLayer):
        return {"hada_w1_a": module.hada_w1_a[ADAPTER], "hada_w1_b": module.hada_w1_b[ADAPTER],
                "hada_w2_a": module.hada_w2_a[ADAPTER], "hada_w2_b": module.hada_w2_b[ADAPTER],
                "alpha": torch.tensor(float(module.alpha[ADAPTER]))}
    out = {"lokr_w1": module.lokr_w1[ADAPTER]}
    if ADAPTER in module.lokr_w2:
        out["lokr_w2"] = module.lokr_w2[ADAPTER]  # whole: readers scale by 1, so no alpha is written
    else:
        out.update(lokr_w2_a=module.lokr_w2_a[ADAPTER], lokr_w2_b=module.lokr_w2_b[ADAPTER],
                   alpha=torch.tensor(float(module.alpha[ADAPTER])))
    return out


def network_metadata(cfg) -> dict[str, str]:
    """`ss_network_module` / `ss_network_args` as kohya's and LyCORIS's trainers write them."""
    args: dict[str, str] = {}
    if cfg.conv_dim:
        args.update(conv_dim=str(cfg.conv_dim), conv_alpha=f"{cfg.conv_alpha:g}")
    if cfg.LoRA_type == "Standard" and not cfg.dora_wd:
        module = "networks.lora"
    else:
        module = "lycoris.kohya"
        args["algo"] = "locon" if cfg.LoRA_type == "Standard" else LYCORIS_ALGOS[cfg.LoRA_type]
        if cfg.dora_wd:
            args.update(dora_wd="True", wd_on_output="False")
        if cfg.LoRA_type == "LyCORIS/LoKr":
            args["factor"] = str(cfg.factor)
    metadata = {"ss_network_module": module}
    if args:
        metadata["ss_network_args"] = json.dumps(args)
    return metadata


# ---------------------------------------------------------------------------------------------
# Reading a file back: what a WebUI computes from its tensors


def module_stems(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    return sorted({key.rsplit(".", 2)[0] if key.endswith(".weight") else key.rsplit(".", 1)[0]
                   for key in tensors})


def merged_weight(weight: torch.Tensor, tensors: Mapping[str, torch.Tensor], stem: str,
                  strength: float = 1.0) -> torch.Tensor:
    """The base `weight` with one module's adapter from a file merged in at `strength`, computed the
    way Forge, A1111 and ComfyUI do it (fp32)."""
    base = weight.float()
    delta, scale = _file_delta(tensors, stem, base.shape)
    dora_scale = tensors.get(f"{stem}.dora_scale")
    if dora_scale is None:
        return base + strength * scale * delta
    merged = dora.rescale(base + scale * delta, dora_scale.float())
    return base + strength * (merged - base)


def _file_delta(tensors: Mapping[str, torch.Tensor], stem: str, shape: torch.Size) -> tuple[torch.Tensor, float]:
    def get(name: str) -> torch.Tensor | None:
        value = tensors.get(f"{stem}.{name}")
        return None if value is None else value.float()

    alpha = get("alpha")
    if get("lora_down.weight") is not None:
        down, up = get("lora_down.weight"), get("lora_up.weight")
        delta = up.flatten(1) @ down.flatten(1)
        return delta.reshape(shape), (1.0 if alpha is None else float(alpha) / down.shape[0])
    if get("hada_w1_a") is not None:
        w1b = get("hada_w1_b")
        delta = (get("hada_w1_a") @ w1b) * (get("hada_w2_a") @ get("hada_w2_b"))
        return delta.reshape(shape), (1.0 if alpha is None else float(alpha) / w1b.shape[0])
    if get("lokr_w1") is not None:
        w1, w2 = get("lokr_w1"), get("lokr_w2")
        scale = 1.0
        if w2 is None:
            w2_b = get("lokr_w2_b")
            w2 = get("lokr_w2_a") @ w2_b
            scale = 1.0 if alpha is None else float(alpha) / w2_b.shape[0]
        if w2.dim() == 4:
            w1 = w1[:, :, None, None]
        return torch.kron(w1, w2).reshape(shape), scale
    raise KeyError(f"no adapter tensors for {stem}")
