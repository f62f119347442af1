"""Forge's own LoRA code (backend/patcher/lora.py, run in Forge's Python, CPU) merges each network type
our trainer writes into exactly the layer that was trained: LoRA with convolutions, DoRA, LoHa, LoKr.

Light (the tiny U-Net, no WebUI started); needs a Forge prepared by tools/prepare_forge.sh in FORGE_DIR."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file, save_file

from lora_trainer.train.export import save_lora
from lora_trainer.train.network import collect_network_tensors, merged_weight
from lora_trainer.train.sgm_names import UNetLayout, kohya_lora_name
from tests.train.test_network_types import TYPES, _trained_unet

FORGE_DIR = os.environ.get("FORGE_DIR", "")
pytestmark = pytest.mark.skipif(not FORGE_DIR, reason="FORGE_DIR is not set (a Forge prepared by tools/prepare_forge.sh)")


@pytest.mark.parametrize("strength", [1.0, 0.6])
@pytest.mark.parametrize("kind", list(TYPES))
def test_forge_merges_each_type_into_the_layer_that_was_trained(kind, strength, tmp_path):
    unet = _trained_unet(TYPES[kind])
    layout = UNetLayout.from_config(unet.config)
    lora = save_lora(tmp_path / "net.safetensors", collect_network_tensors({"unet": unet}, layout),
                     {"ss_network_module": "x"}, save_precision="float")
    bases, expected = {}, {}
    for name, layer in unet.named_modules():
        if isinstance(layer, BaseTunerLayer):
            stem = kohya_lora_name("unet", name, layout)
            bases[stem] = layer.get_base_layer().weight.detach().float().contiguous()
    tensors = load_file(lora)
    # merged_weight == the trained layer's output (tests/train/test_network_types.py)
    expected = {stem: merged_weight(base, tensors, stem, strength) for stem, base in bases.items()}
    save_file(bases, tmp_path / "bases.safetensors")
    python = Path(FORGE_DIR) / "venv" / "bin" / "python"
    subprocess.run([str(python), str(Path(__file__).with_name("forge_merge.py")), FORGE_DIR, str(lora),
                    str(tmp_path / "bases.safetensors"), str(tmp_path / "out.safetensors"), str(strength)],
                   check=True, capture_output=True, timeout=300)
    merged = load_file(tmp_path / "out.safetensors")
    assert merged.pop("__unloaded__").item() == 0, "Forge left keys of the file unloaded"
    assert merged.keys() == expected.keys()
    for stem, weight in expected.items():
        scale = weight.abs().max().item()
        assert torch.allclose(merged[stem], weight, atol=1e-5 * scale, rtol=1e-4), stem
