"""fp8_base: the frozen U-Net weights stored in float8 (e4m3), one byte a weight instead of bf16's two.

Each Linear / Conv2d keeps its weight in float8 with one scale per layer and upcasts it to the input's dtype for its own call only
(kohya's fp8_base and OneTrainer's fp8 weights do the same), so the full-precision copy of a layer lives
for one layer's forward. Autograd keeps that copy until the backward pass unless the block is
recomputed: with gradient checkpointing only one block's copies are alive at a time, without it the
saving is mostly lost (the Train panel's estimate counts this). Biases, norms and the adapters stay in
their own dtype; float8 here is storage only, no GPU needs fp8 arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FP8 = torch.float8_e4m3fn


FP8_MAX = 448.0  # e4m3's largest value


def _upcast(module: torch.nn.Module, dtype: torch.dtype) -> torch.Tensor:
    return module.weight.to(dtype) * module.fp8_scale.to(dtype)


class Fp8Linear(torch.nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, _upcast(self, x.dtype), bias)


class Fp8Conv2d(torch.nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return self._conv_forward(x, _upcast(self, x.dtype), bias)


_FP8_CLASSES = {torch.nn.Linear: Fp8Linear, torch.nn.Conv2d: Fp8Conv2d}


def store_frozen_weights_in_fp8(model: torch.nn.Module) -> int:
    """Store every frozen Linear / Conv2d weight of `model` in float8; the bytes saved.

    Adapter layers (trainable) are left alone; a peft layer's base layer is an ordinary frozen module
    and is converted like any other."""
    saved = 0
    for module in model.modules():
        fp8_class = _FP8_CLASSES.get(type(module))
        if fp8_class is None or module.weight.requires_grad:
            continue
        before = module.weight.nbytes
        weight = module.weight.data.float()
        # One scale per layer maps its largest weight to e4m3's largest value: SDXL's weights are small
        # (|w| ~ 0.01-0.1), where a plain cast falls into e4m3's few subnormal steps.
        scale = (weight.abs().max() / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
        module.weight.data = (weight / scale).to(FP8)
        module.register_buffer("fp8_scale", scale)
        module.__class__ = fp8_class
        saved += before - module.weight.nbytes
    return saved
