"""DoRA (weight-decomposed LoRA, Liu et al. 2024) on a peft LoRA layer, in the form every WebUI reads.

    W' = (W + s·BA) · diag(m / ‖W + s·BA‖_col)

with one learned magnitude m per input channel, the norm taken over each column (all outputs and, for
a convolution, the kernel), as the paper writes it. A1111 reads a `dora_scale` of shape (1, in) only
this way, and Forge and ComfyUI read it this way when its first side is 1; peft's own DoRA keeps one
magnitude per output channel instead, which A1111 cannot read and Forge scales by the base weight's norm
rather than the merged one. So the layer here is ours: since W' scales W's columns, the layer's output is
the unchanged LoRA layer applied to the input scaled per channel by m / ‖·‖. The norm is treated as a
constant in the backward pass, as the paper proposes (less memory).
"""

from __future__ import annotations

import torch

ADAPTER = "default"
MAGNITUDE = "lora_dora_scale"  # a parameter on the peft layer; "lora_" keeps it among peft's adapter weights


def attach(layer) -> None:
    """Give a peft LoRA layer a magnitude (initialised to the base weight's column norms, so the layer
    starts unchanged) and scale its input by magnitude / norm on every call."""
    base = layer.get_base_layer().weight
    magnitude = torch.nn.Parameter(column_norms(base.detach().float()))
    layer.register_parameter(MAGNITUDE, magnitude)
    layer.register_forward_pre_hook(_scale_input)


def is_attached(layer) -> bool:
    return hasattr(layer, MAGNITUDE)


def column_norms(weight: torch.Tensor) -> torch.Tensor:
    """‖W‖ per input channel: over the outputs (dim 0) and the kernel (dims 2, 3)."""
    dims = (0,) + tuple(range(2, weight.dim()))
    return torch.linalg.vector_norm(weight, dim=dims)


def merged_weight(layer) -> torch.Tensor:
    """W + s·BA of the layer, in fp32."""
    base = layer.get_base_layer().weight
    down, up = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
    delta = (up.float().flatten(1) @ down.float().flatten(1)).reshape(base.shape)
    return base.float() + layer.scaling[ADAPTER] * delta


def _scale_input(layer, args):
    x = args[0]
    if layer.disable_adapters:
        return None
    with torch.no_grad():
        norms = column_norms(merged_weight(layer))
    factor = (getattr(layer, MAGNITUDE) / norms).to(x.dtype)
    if x.dim() == 4 and isinstance(layer.get_base_layer(), torch.nn.Conv2d):
        factor = factor.view(1, -1, 1, 1)
    return (x * factor, *args[1:])


def exported_scale(layer) -> torch.Tensor:
    """The magnitude as a file's `dora_scale`: (1, in) for a Linear, (1, in, 1, 1) for a Conv2d."""
    magnitude = getattr(layer, MAGNITUDE).detach()
    base = layer.get_base_layer().weight
    return magnitude.reshape(1, -1, *([1] * (base.dim() - 2)))


def rescale(merged: torch.Tensor, dora_scale: torch.Tensor) -> torch.Tensor:
    """What a WebUI does with a file's `dora_scale` of shape (1, in, ...): W' = merged · m / ‖merged‖_col."""
    norms = column_norms(merged).reshape(1, -1, *([1] * (merged.dim() - 2)))
    return merged * (dora_scale / norms)
