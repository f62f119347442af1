"""Run with Forge's Python: merge a LoRA file into given base weights with Forge's own LoRA code.

    <forge python> forge_merge.py FORGE_DIR LORA.safetensors BASES.safetensors OUT.safetensors STRENGTH

BASES holds one weight per kohya stem (the layer a LoRA module names); OUT gets each merged weight under
the same stem, and `__unloaded__` counts the file's keys Forge's loader did not take."""

import os
import sys

forge_dir, lora_path, bases_path, out_path, strength = sys.argv[1:6]
os.chdir(forge_dir)
sys.path[:0] = [forge_dir, os.path.join(forge_dir, "packages_3rdparty")]
sys.argv = [sys.argv[0], "--always-cpu"]  # Forge's backend reads its flags at import

import torch  # noqa: E402
from backend.patcher.lora import load_lora, merge_lora_to_weight  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

lora = load_file(lora_path)
bases = load_file(bases_path)
patches, remaining = load_lora(lora, {stem: stem for stem in bases})
merged = {}
for stem, weight in bases.items():
    patch = [(float(strength), patches[stem], 1.0, None, None)]
    merged[stem] = merge_lora_to_weight(patch, weight, key=stem, computation_dtype=torch.float32).contiguous()
merged["__unloaded__"] = torch.tensor(float(len(remaining)))
save_file(merged, out_path)
