"""Random-weight SDXL files at any size, built from a diffusers config folder without real weights.

For checking the WebUI integration end to end without downloading 7 GB: the model structure comes
from a config folder (Forge ships SDXL base's in `backend/huggingface/stabilityai/
stable-diffusion-xl-base-1.0`), is built on the meta device (no memory), and only what is written
gets real values:

- `write_random_checkpoint`: a single-file checkpoint in the original (SGM) key layout, streamed
  tensor by tensor into a `.safetensors` file (full-size SDXL: 6.5 GB written with ~0.3 GB of RAM);
- `random_lora_tensors`: LoRA weights made the trainer's way (peft adapters on the same targets,
  named by `network.collect_network_tensors`), any network type, random values in place of training.

`python -m lora_trainer.demo.random_sdxl CONFIG_DIR OUT.safetensors` writes a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
from pathlib import Path

import torch

from lora_trainer.fsutil import atomic_open
from lora_trainer.train.dora import MAGNITUDE
from lora_trainer.train.model import meta_sdxl
from lora_trainer.train.sgm_names import (
    TEXT_ENCODER_LORA_TARGETS,
    UNET_LORA_TARGETS,
    UNetLayout,
    sdxl_single_file_state_dict,
)

_SAFETENSORS_DTYPES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}


def checkpoint_shapes(config_dir: str | Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a single-file checkpoint that fits the config folder."""
    state = sdxl_single_file_state_dict(*meta_sdxl(config_dir))
    return {key: tuple(value.shape) for key, value in state.items()}


def random_tensor(key: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """1-D weights are norm scales (ones), biases zeros, the rest N(0, 1/fan_in): activations stay
    finite through every layer of the full-size model."""
    if len(shape) == 1:
        return torch.ones(shape) if key.endswith("weight") else torch.zeros(shape)
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=generator) / math.sqrt(fan_in)


def write_random_checkpoint(config_dir: str | Path, out: str | Path, *, seed: int = 0,
                            dtype: torch.dtype = torch.float16) -> Path:
    """Stream a random-weight single-file SDXL checkpoint to `out` (atomically)."""
    shapes = checkpoint_shapes(config_dir)
    keys = sorted(shapes)
    type_name = _SAFETENSORS_DTYPES[dtype]
    itemsize = torch.tensor([], dtype=dtype).element_size()
    header: dict[str, object] = {
        "__metadata__": {"format": "pt", "modelspec.architecture": "stable-diffusion-xl-v1-base",
                         "lora_trainer.note": "random weights, for integration tests"},
    }
    offset = 0
    for key in keys:
        size = math.prod(shapes[key]) * itemsize
        header[key] = {"dtype": type_name, "shape": list(shapes[key]), "data_offsets": [offset, offset + size]}
        offset += size
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # the format aligns the data to 8 bytes
    generator = torch.Generator().manual_seed(seed)
    out = Path(out)
    with atomic_open(out, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for key in keys:
            tensor = random_tensor(key, shapes[key], generator).to(dtype).contiguous()
            f.write(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # little-endian, as the format
    return out


def random_lora_tensors(config_dir: str | Path, *, rank: int = 4, alpha: float = 4.0, text_encoders: bool = True,
                        seed: int = 0, up_std: float = 0.05, network: dict | None = None) -> dict[str, torch.Tensor]:
    """Network tensors for the config's model, exactly the keys a training run exports. `network`: the
    TrainConfig network settings (LoRA_type, conv_dim, dora_wd, ...), default a standard LoRA. Factors a
    run starts at zero (`lora_up`, `hada_w2_b`, `lokr_w1`) ~ N(0, up_std^2), the others N(0, 1/fan_in),
    so the network visibly changes outputs; DoRA's magnitudes are 1 (the base weights are not read)."""
    from lora_trainer.config import TrainConfig
    from lora_trainer.train.network import UNET_CONV_TARGETS, add_network, collect_network_tensors

    cfg = TrainConfig(network_dim=rank, network_alpha=alpha, **(network or {}))
    unet, _vae, te1, te2 = meta_sdxl(config_dir)
    models = {"unet": unet, "te1": te1, "te2": te2} if text_encoders else {"unet": unet}
    generator = torch.Generator().manual_seed(seed)
    for component, model in models.items():
        if component == "unet":
            add_network(model, cfg, UNET_LORA_TARGETS, UNET_CONV_TARGETS)
        else:
            add_network(model, cfg, TEXT_ENCODER_LORA_TARGETS)
        for name, param in list(model.named_parameters()):
            if param.requires_grad:  # a meta tensor: replaced by a real parameter in its owner
                owner, _, leaf = name.rpartition(".")
                value = _random_factor(name, param.shape, generator, up_std)
                model.get_submodule(owner)._parameters[leaf] = torch.nn.Parameter(value)
    return collect_network_tensors(models, UNetLayout.from_config(unet.config))


def _random_factor(name: str, shape: torch.Size, generator: torch.Generator, up_std: float) -> torch.Tensor:
    if name.endswith(MAGNITUDE):
        return torch.ones(shape)
    if any(part in name for part in (".lora_B.", ".hada_w2_b.", ".lokr_w1.")):
        return torch.randn(shape, generator=generator) * up_std
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    return torch.randn(shape, generator=generator) / math.sqrt(fan_in)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lora_trainer.demo.random_sdxl", description=__doc__.split("\n")[0])
    parser.add_argument("config_dir", help="diffusers SDXL config folder (no weights needed)")
    parser.add_argument("out", help="the .safetensors file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = write_random_checkpoint(args.config_dir, args.out, seed=args.seed)
    print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB)")


if __name__ == "__main__":
    main()
