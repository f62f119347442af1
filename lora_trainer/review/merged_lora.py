"""LyCORIS and DoRA files in the standalone renderer: merged into the weights, as the WebUIs do.

diffusers 0.31 reads plain kohya LoRAs as peft adapters, but drops DoRA's `dora_scale` and cannot read
LoHa or LoKr at all. For those files the renderer patches the pipeline's weights with
`network.merged_weight` (the WebUIs' formulas) at the job's strength, and puts the originals back before
anything else renders.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from lora_trainer.review.spec import RenderError
from lora_trainer.train.network import merged_weight, module_stems
from lora_trainer.train.sgm_names import UNetLayout, kohya_lora_name

_MERGED_ONLY_SUFFIXES = (".hada_w1_a", ".lokr_w1", ".lokr_w1_a", ".dora_scale")


def needs_merging(path: Path) -> bool:
    """True for a file diffusers cannot apply as an adapter (LoHa, LoKr, DoRA)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return any(key.endswith(_MERGED_ONLY_SUFFIXES) for key in f.keys())
    except Exception as e:  # safetensors' errors do not name the file
        raise RenderError(f"could not read the LoRA file {path}: {type(e).__name__}: {e}") from None


class WeightPatcher:
    """Keeps the original weights of the layers it patched; one file at one strength at a time."""

    def __init__(self, pipe):
        self._pipe = pipe
        self._originals: dict[torch.nn.Module, torch.Tensor] = {}
        self._applied: tuple | None = None
        self._modules: dict[str, torch.nn.Module] | None = None

    def apply(self, path: Path, strength: float) -> None:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, float(strength))
        if key == self._applied:
            return
        self.restore()
        tensors = load_file(str(path))
        modules = self._module_map()
        stems = module_stems(tensors)
        missing = [s for s in stems if s not in modules]
        if missing:
            raise RenderError(f"{path} has {len(missing)} layers this model lacks (e.g. {missing[0]}): "
                              "a LoRA for another architecture?")
        with torch.no_grad():
            for stem in stems:
                module = modules[stem]
                original = module.weight.data
                self._originals[module] = original
                patched = merged_weight(original.to(torch.float32), tensors, stem, strength)
                module.weight.data = patched.to(original.dtype)
        self._applied = key

    def restore(self) -> None:
        for module, original in self._originals.items():
            module.weight.data = original
        self._originals.clear()
        self._applied = None

    def _module_map(self) -> dict[str, torch.nn.Module]:
        """kohya stem -> the pipeline's Linear / Conv2d it names."""
        if self._modules is None:
            pipe = self._pipe
            layout = UNetLayout.from_config(pipe.unet.config)
            parts = {"unet": pipe.unet, "te1": pipe.text_encoder, "te2": pipe.text_encoder_2}
            self._modules = {}
            for component, model in parts.items():
                for name, module in model.named_modules():
                    # peft adapters loaded for plain LoRAs wrap a layer as `<name>.base_layer`
                    if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) or ".lora_" in name:
                        continue
                    stem = _stem(component, name.replace(".base_layer", ""), layout)
                    if stem:
                        self._modules[stem] = module
        return self._modules


def _stem(component: str, name: str, layout: UNetLayout) -> str | None:
    try:
        return kohya_lora_name(component, name, layout)
    except (ValueError, KeyError):  # a layer outside the block layout (no LoRA names it)
        return None
