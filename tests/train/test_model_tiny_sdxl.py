"""The tiny SDXL fixture is a faithful stand-in for a user's model: its single-file checkpoint is in
the original SGM layout and diffusers' own single-file loader reads back the very same weights."""

from __future__ import annotations

import hashlib

import torch
from diffusers import StableDiffusionXLPipeline
from safetensors import safe_open

from lora_trainer.demo.tiny_sdxl import build_tiny_sdxl


def _state_dicts(pipe):
    return {name: getattr(pipe, name).state_dict() for name in ("unet", "vae", "text_encoder", "text_encoder_2")}


def test_single_file_loads_offline_with_identical_weights(tiny_sdxl):
    from_folder = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl.diffusers_dir, local_files_only=True)
    from_file = StableDiffusionXLPipeline.from_single_file(
        str(tiny_sdxl.single_file), config=str(tiny_sdxl.config_dir), local_files_only=True
    )
    expected, loaded = _state_dicts(from_folder), _state_dicts(from_file)
    for component, state in expected.items():
        assert loaded[component].keys() == state.keys(), component
        different = [k for k in state if not torch.equal(state[k], loaded[component][k])]
        assert different == [], component


def test_single_file_uses_the_sgm_key_layout(tiny_sdxl):
    with safe_open(str(tiny_sdxl.single_file), "pt") as f:
        keys = set(f.keys())
    roots = ("model.diffusion_model.", "first_stage_model.", "conditioner.embedders.0.transformer.",
             "conditioner.embedders.1.model.")
    assert all(k.startswith(roots) for k in keys)
    assert "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight" in keys
    assert "model.diffusion_model.middle_block.1.transformer_blocks.1.ff.net.2.weight" in keys  # depth 2
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in keys
    assert "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight" in keys
    assert "first_stage_model.decoder.up.3.upsample.conv.weight" in keys


def test_config_folder_has_the_layout_but_no_weights(tiny_sdxl):
    files = {p.relative_to(tiny_sdxl.config_dir).as_posix() for p in tiny_sdxl.config_dir.rglob("*") if p.is_file()}
    for needed in ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                   "text_encoder_2/config.json", "scheduler/scheduler_config.json",
                   "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer_2/vocab.json"):
        assert needed in files
    assert not [f for f in files if f.endswith((".safetensors", ".bin"))]


def test_model_is_sdxl_shaped_and_renders(tiny_sdxl):
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl.diffusers_dir, local_files_only=True)
    assert pipe.text_encoder.config.hidden_size != pipe.text_encoder_2.config.hidden_size
    assert pipe.unet.config.cross_attention_dim == (pipe.text_encoder.config.hidden_size
                                                    + pipe.text_encoder_2.config.hidden_size)
    assert pipe.vae_scale_factor == 8 and pipe.vae.config.scaling_factor == 0.13025
    ids = pipe.tokenizer("a photo of mylora woman", padding="max_length").input_ids
    assert len(ids) == 77 and ids[0] == pipe.tokenizer.bos_token_id
    assert len(pipe.tokenizer("a photo").input_ids) == 4  # learnt merges: whole words are one token
    image = pipe("a photo", num_inference_steps=2, height=64, width=64, output_type="np").images
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(torch.from_numpy(image)).all()


def test_build_is_deterministic(tiny_sdxl, tmp_path):
    again = build_tiny_sdxl(tmp_path / "again")
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(again.single_file) == digest(tiny_sdxl.single_file)
