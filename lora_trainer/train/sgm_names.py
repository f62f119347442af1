"""Names in the original SDXL (SGM / LDM) layout, computed from diffusers names.

Every WebUI (Forge, A1111, ComfyUI) knows the SDXL U-Net by the module paths of Stability's
`sgm` code (`input_blocks.4.1...`), not by diffusers' (`down_blocks.1.attentions.0...`). The
diffusers wheel only converts the other way, so this module holds our own forward mapping:

- U-Net module / parameter names, derived from the U-Net config (levels, layers per block,
  which levels have attention), so the tiny test model and the real one map alike;
- whole-checkpoint conversion of U-Net, VAE and both text encoders into the single-file key
  layout (`model.diffusion_model.*`, `first_stage_model.*`, `conditioner.embedders.*`);
- the LoRA target modules and their kohya key names (`lora_unet_...`, `lora_te1_...`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
CLIP_G_PREFIX = "conditioner.embedders.1.model."

# Inside every transformer block (and the proj_in/proj_out around each block stack).
UNET_LORA_TARGETS = (
    "proj_in", "proj_out",
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
    "ff.net.0.proj", "ff.net.2",
)
TEXT_ENCODER_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")

KOHYA_PREFIXES = {"unet": "lora_unet_", "te1": "lora_te1_", "te2": "lora_te2_"}


# ---------------------------------------------------------------------------------------------
# U-Net


@dataclass(frozen=True)
class UNetLayout:
    """What the diffusers -> SGM block numbering depends on."""

    layers_per_block: int
    down_has_attention: tuple[bool, ...]
    up_has_attention: tuple[bool, ...]

    @classmethod
    def from_config(cls, config: Mapping) -> UNetLayout:
        layers = config["layers_per_block"]
        if not isinstance(layers, int):
            raise ValueError(f"per-level layers_per_block {layers!r} has no SGM layout")
        return cls(
            layers_per_block=layers,
            down_has_attention=tuple("CrossAttn" in t for t in config["down_block_types"]),
            up_has_attention=tuple("CrossAttn" in t for t in config["up_block_types"]),
        )

    @property
    def num_levels(self) -> int:
        return len(self.down_has_attention)


SDXL_UNET_LAYOUT = UNetLayout(
    layers_per_block=2,
    down_has_attention=(False, True, True),
    up_has_attention=(True, True, False),
)

_UNET_TOP_LEVEL = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_BLOCK_RE = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)(.*)$")
_MID_RE = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)(.*)$")


def _join(*parts: str) -> str:
    return ".".join(p.strip(".") for p in parts if p.strip("."))


def _resnet_rest(rest: str) -> str:
    """`.norm1.weight` -> `in_layers.0.weight` (rest starts with the part inside the resnet)."""
    head, _, tail = rest.strip(".").partition(".")
    if head not in _RESNET_PARTS:
        raise KeyError(head)
    return _join(_RESNET_PARTS[head], tail)


def unet_name_to_sgm(name: str, layout: UNetLayout = SDXL_UNET_LAYOUT) -> str:
    """A diffusers U-Net module or parameter name in SGM form (without `model.diffusion_model.`).

    `down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q` ->
    `input_blocks.4.1.transformer_blocks.0.attn1.to_q`.
    """
    try:
        return _unet_name_to_sgm(name, layout)
    except (KeyError, IndexError):
        raise ValueError(f"no SGM name for U-Net module {name!r}") from None


def _unet_name_to_sgm(name: str, layout: UNetLayout) -> str:
    for diffusers_head, sgm_head in _UNET_TOP_LEVEL.items():
        if name == diffusers_head or name.startswith(diffusers_head + "."):
            return _join(sgm_head, name[len(diffusers_head):])
    per_level = layout.layers_per_block + 1  # resnets (+attention) then one down/upsampler slot
    if match := _MID_RE.match(name):
        kind, index, rest = match.group(1), int(match.group(2)), match.group(3)
        if kind == "resnets":
            return _join(f"middle_block.{2 * index}", _resnet_rest(rest))
        return _join(f"middle_block.{2 * index + 1}", rest)
    match = _BLOCK_RE.match(name)
    if not match:
        raise KeyError(name)
    side, level, kind, index, rest = match.group(1), int(match.group(2)), match.group(3), int(match.group(4)), match.group(5)
    if level >= layout.num_levels:
        raise IndexError(level)
    if side == "down_blocks":
        block = 1 + level * per_level + (layout.layers_per_block if kind == "downsamplers" else index)
        if kind == "resnets":
            return _join(f"input_blocks.{block}.0", _resnet_rest(rest))
        if kind == "attentions":
            return _join(f"input_blocks.{block}.1", rest)
        # diffusers' `downsamplers.0.conv` is SGM's `op`
        return _join(f"input_blocks.{block}.0", re.sub(r"^\.conv(?=\.|$)", ".op", rest))
    block = level * per_level + (layout.layers_per_block if kind == "upsamplers" else index)
    if kind == "resnets":
        return _join(f"output_blocks.{block}.0", _resnet_rest(rest))
    if kind == "attentions":
        return _join(f"output_blocks.{block}.1", rest)
    # the upsampler follows the resnet, and the attention where the level has one
    slot = 2 if layout.up_has_attention[level] else 1
    return _join(f"output_blocks.{block}.{slot}", rest)


def unet_state_dict_to_sgm(state_dict: Mapping[str, torch.Tensor], layout: UNetLayout) -> dict[str, torch.Tensor]:
    return {UNET_PREFIX + unet_name_to_sgm(k, layout): v for k, v in state_dict.items()}


# ---------------------------------------------------------------------------------------------
# VAE (diffusers AutoencoderKL -> LDM `first_stage_model`)

_VAE_TOP_LEVEL = {"conv_norm_out": "norm_out"}
_VAE_ATTENTION_PARTS = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_RE = re.compile(r"^(encoder|decoder)\.(down_blocks|up_blocks|mid_block)\.?(.*)$")


def _vae_mid(rest: str) -> str:
    match = re.match(r"^(resnets|attentions)\.(\d+)\.(.*)$", rest)
    if not match:
        raise ValueError(f"no LDM name for VAE mid-block part {rest!r}")
    kind, index, tail = match.groups()
    if kind == "resnets":
        return _join(f"mid.block_{int(index) + 1}", tail.replace("conv_shortcut", "nin_shortcut"))
    for diffusers_part, ldm_part in _VAE_ATTENTION_PARTS.items():
        if tail.startswith(diffusers_part + "."):
            return _join("mid.attn_1", ldm_part, tail[len(diffusers_part):])
    raise ValueError(f"no LDM name for VAE attention part {tail!r}")


def vae_name_to_ldm(name: str, num_levels: int) -> str:
    """`decoder.up_blocks.0.resnets.1.conv1.weight` -> `decoder.up.3.block.1.conv1.weight` (4 levels)."""
    match = _VAE_RE.match(name)
    if not match:
        head, _, tail = name.partition(".")
        side_head, _, side_tail = tail.partition(".")
        if head in ("encoder", "decoder") and side_head in _VAE_TOP_LEVEL:
            return _join(head, _VAE_TOP_LEVEL[side_head], side_tail)
        return name  # conv_in, conv_out, quant_conv, post_quant_conv keep their names
    side, part, rest = match.groups()
    if part == "mid_block":
        return _join(side, _vae_mid(rest))
    level_text, _, tail = rest.partition(".")
    level = int(level_text)
    # diffusers counts decoder levels from the bottom; LDM from the top
    ldm_level = level if part == "down_blocks" else num_levels - 1 - level
    ldm_group = "down" if part == "down_blocks" else "up"
    tail = re.sub(r"^resnets\.", "block.", tail)
    tail = re.sub(r"^(downsamplers|upsamplers)\.0\.", lambda m: m.group(1)[:-2] + ".", tail)
    return _join(side, f"{ldm_group}.{ldm_level}", tail.replace("conv_shortcut", "nin_shortcut"))


def vae_state_dict_to_ldm(state_dict: Mapping[str, torch.Tensor], num_levels: int) -> dict[str, torch.Tensor]:
    converted = {}
    for key, value in state_dict.items():
        ldm_key = vae_name_to_ldm(key, num_levels)
        if ".mid.attn_1." in ldm_key and ldm_key.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]  # LDM's VAE attention uses 1x1 convolutions
        converted[VAE_PREFIX + ldm_key] = value
    return converted


# ---------------------------------------------------------------------------------------------
# Text encoders

def clip_l_state_dict_to_sgm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIP-L keeps the transformers names under `conditioner.embedders.0.transformer.`."""
    return {CLIP_L_PREFIX + k: v for k, v in state_dict.items()}


_OPENCLIP_LAYER_PARTS = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_OPENCLIP_TOP_LEVEL = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
_CLIP_LAYER_RE = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def clip_g_state_dict_to_openclip(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIP-bigG (CLIPTextModelWithProjection) in OpenCLIP layout: q/k/v fused into `in_proj`,
    the projection stored transposed, under `conditioner.embedders.1.model.`."""
    converted: dict[str, torch.Tensor] = {}
    pending_qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if key in _OPENCLIP_TOP_LEVEL:
            converted[_OPENCLIP_TOP_LEVEL[key]] = value
        elif key == "text_projection.weight":
            converted["text_projection"] = value.T.contiguous()
        elif match := _CLIP_LAYER_RE.match(key):
            layer, part, kind = match.groups()
            if part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                pending_qkv.setdefault((layer, kind), {})[part[-6]] = value
            elif part in _OPENCLIP_LAYER_PARTS:
                converted[f"transformer.resblocks.{layer}.{_OPENCLIP_LAYER_PARTS[part]}.{kind}"] = value
            else:
                raise ValueError(f"no OpenCLIP name for text-encoder parameter {key!r}")
        else:
            raise ValueError(f"no OpenCLIP name for text-encoder parameter {key!r}")
    for (layer, kind), parts in pending_qkv.items():
        converted[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]], dim=0
        )
    return {CLIP_G_PREFIX + k: v for k, v in converted.items()}


def sdxl_single_file_state_dict(unet, vae, text_encoder_1, text_encoder_2) -> dict[str, torch.Tensor]:
    """The four diffusers/transformers modules as one state dict in the single-file layout."""
    state = {}
    state.update(unet_state_dict_to_sgm(unet.state_dict(), UNetLayout.from_config(unet.config)))
    state.update(vae_state_dict_to_ldm(vae.state_dict(), len(vae.config.block_out_channels)))
    state.update(clip_l_state_dict_to_sgm(text_encoder_1.state_dict()))
    state.update(clip_g_state_dict_to_openclip(text_encoder_2.state_dict()))
    return state


# ---------------------------------------------------------------------------------------------
# LoRA targets and kohya names

def _is_target(name: str, targets: Iterable[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def lora_target_names(model: torch.nn.Module, targets: Iterable[str]) -> list[str]:
    """Names of the Linear / Conv2d modules of `model` that a LoRA attaches to, in model order."""
    targets = tuple(targets)
    return [
        name for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and _is_target(name, targets)
    ]


def kohya_lora_name(component: str, diffusers_module_name: str, layout: UNetLayout = SDXL_UNET_LAYOUT) -> str:
    """The kohya key stem of one LoRA module: component "unet", "te1" (CLIP-L) or "te2" (bigG).

    `("unet", "mid_block.attentions.0.transformer_blocks.9.ff.net.2")` ->
    `lora_unet_middle_block_1_transformer_blocks_9_ff_net_2`. Text encoders keep the
    transformers module names: `lora_te1_text_model_encoder_layers_0_self_attn_q_proj`.
    """
    if component not in KOHYA_PREFIXES:
        raise ValueError(f"unknown LoRA component {component!r}; expected one of {sorted(KOHYA_PREFIXES)}")
    name = unet_name_to_sgm(diffusers_module_name, layout) if component == "unet" else diffusers_module_name
    return KOHYA_PREFIXES[component] + name.replace(".", "_")
