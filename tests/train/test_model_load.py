"""Loading the model to train on: what Forge users have (a single-file SDXL checkpoint and Forge's
config folder), a diffusers folder, and clear refusals for everything that is not SDXL base."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file, save_file

from lora_trainer.train.model import ModelLoadError, SDXLModel, detect_architecture, load_sdxl
from lora_trainer.train.sgm_names import vae_state_dict_to_ldm


def _parameters(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def from_folder(tiny_sdxl) -> SDXLModel:
    return load_sdxl(str(tiny_sdxl.diffusers_dir))


def test_single_file_with_config_folder_loads_the_same_model_as_the_diffusers_folder(tiny_sdxl, from_folder):
    model = load_sdxl(str(tiny_sdxl.single_file), config_dir=str(tiny_sdxl.config_dir))

    for part in ("unet", "vae", "text_encoder_1", "text_encoder_2"):
        assert _same(_parameters(getattr(model, part)), _parameters(getattr(from_folder, part))), part
    assert model.model_name == tiny_sdxl.single_file.name and model.source == str(tiny_sdxl.single_file)
    assert model.tokenizer_1("a photo").input_ids == from_folder.tokenizer_1("a photo").input_ids
    assert model.tokenizer_2.pad_token == "!"


def test_loaded_model_is_frozen_with_fp32_vae_and_sdxl_noise_schedule(tiny_sdxl):
    model = load_sdxl(str(tiny_sdxl.diffusers_dir), dtype=torch.bfloat16)

    assert model.unet.dtype == torch.bfloat16 and model.text_encoder_2.dtype == torch.bfloat16
    assert model.vae.dtype == torch.float32  # the fp16 SDXL VAE makes NaNs
    assert not any(p.requires_grad for m in (model.unet, model.vae, model.text_encoder_1, model.text_encoder_2)
                   for p in m.parameters())
    scheduler = model.noise_scheduler
    assert type(scheduler).__name__ == "DDPMScheduler"
    assert scheduler.config.num_train_timesteps == 1000 and scheduler.config.beta_schedule == "scaled_linear"
    assert scheduler.config.beta_start == 0.00085 and scheduler.config.beta_end == 0.012
    assert model.model_name == tiny_sdxl.diffusers_dir.name


def test_a_single_file_loads_in_the_dtype_it_stores_its_weights_in(tiny_sdxl, tmp_path, from_folder):
    """An fp16 checkpoint (most SDXL files) loads as fp16, value for value, and not as float32 first:
    a full SDXL held as float32 next to the file needs over 13 GiB of RAM."""
    from safetensors.torch import save_file

    from lora_trainer.train.model import stored_dtype

    half = tmp_path / "half.safetensors"
    save_file({k: v.half() for k, v in load_file(str(tiny_sdxl.single_file)).items()}, str(half))
    assert stored_dtype(half) == torch.float16 and stored_dtype(tiny_sdxl.single_file) == torch.float32

    model = load_sdxl(str(half), config_dir=str(tiny_sdxl.config_dir), dtype=None)
    assert model.unet.dtype == torch.float16 and model.text_encoder_1.dtype == torch.float16
    assert model.vae.dtype == torch.float32
    stored = {k: v.half() for k, v in _parameters(from_folder.unet).items()}
    assert all(torch.equal(v, stored[k]) for k, v in _parameters(model.unet).items())
    # the default still gives float32, the same values
    assert load_sdxl(str(half), config_dir=str(tiny_sdxl.config_dir)).unet.dtype == torch.float32


def test_tensor_only_ckpt_pickle_loads(tiny_sdxl, tmp_path, from_folder):
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": load_file(str(tiny_sdxl.single_file)), "global_step": 10}, ckpt)

    model = load_sdxl(str(ckpt), config_dir=str(tiny_sdxl.config_dir))
    assert _same(_parameters(model.unet), _parameters(from_folder.unet))


class _NotATensor:
    pass


def test_pickle_with_code_objects_is_refused_before_it_runs(tmp_path):
    ckpt = tmp_path / "suspicious.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}, "payload": _NotATensor()}, ckpt)

    with pytest.raises(ModelLoadError, match=r"suspicious\.ckpt was not loaded.*could run code.*safetensors"):
        load_sdxl(str(ckpt))


def _fake_checkpoint(path, keys):
    save_file({k: torch.zeros(1) for k in keys}, str(path))
    return path


FAKE_KEYS = {
    "sd1": ["cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
            "model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.encoder.conv_in.weight"],
    "sd2": ["cond_stage_model.model.token_embedding.weight", "model.diffusion_model.input_blocks.0.0.weight"],
    "flux": ["double_blocks.0.img_attn.norm.key_norm.scale", "single_blocks.0.linear1.weight"],
    "sd3": ["model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias"],
    "sdxl_refiner": ["conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight",
                     "model.diffusion_model.label_emb.0.0.weight"],
    "lora": ["lora_unet_input_blocks_4_1_proj_in.lora_down.weight"],
}
LOOKS_LIKE = {"sd1": "Stable Diffusion 1.x", "sd2": "Stable Diffusion 2.x", "flux": "Flux",
              "sd3": "Stable Diffusion 3", "sdxl_refiner": "SDXL refiner", "lora": "a LoRA"}


@pytest.mark.parametrize("kind", sorted(FAKE_KEYS))
def test_non_sdxl_checkpoints_are_refused_naming_file_and_kind(tmp_path, kind):
    path = _fake_checkpoint(tmp_path / f"{kind}_model.safetensors", FAKE_KEYS[kind])

    assert detect_architecture({k: (1,) for k in FAKE_KEYS[kind]}) == kind
    with pytest.raises(ModelLoadError) as error:
        load_sdxl(str(path), config_dir=str(tmp_path))  # refused before the config folder matters
    assert str(path) in str(error.value) and LOOKS_LIKE[kind] in str(error.value)
    assert "SDXL" in str(error.value)


def test_missing_model_and_broken_file_say_so(tmp_path):
    with pytest.raises(ModelLoadError, match="model not found: .*nothing_here.safetensors"):
        load_sdxl(str(tmp_path / "nothing_here.safetensors"))
    broken = tmp_path / "half_downloaded.safetensors"
    broken.write_bytes(b"\x10\x00")
    with pytest.raises(ModelLoadError, match="half_downloaded.safetensors is not a readable .safetensors"):
        load_sdxl(str(broken))


def test_single_file_without_config_folder_offline_explains_what_is_needed(tiny_sdxl):
    with pytest.raises(ModelLoadError, match="needs SDXL's config folder.*backend/huggingface"):
        load_sdxl(str(tiny_sdxl.single_file), allow_download=False)


def test_config_folder_problems_are_named(tiny_sdxl, tmp_path):
    with pytest.raises(ModelLoadError, match="config folder not found"):
        load_sdxl(str(tiny_sdxl.single_file), config_dir=str(tmp_path / "absent"))
    incomplete = tmp_path / "incomplete"
    shutil.copytree(tiny_sdxl.config_dir, incomplete)
    (incomplete / "unet" / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="not an SDXL config folder: missing unet/config.json"):
        load_sdxl(str(tiny_sdxl.single_file), config_dir=str(incomplete))
    # A real folder for another size of model (here: a wider second text encoder).
    other = tmp_path / "other"
    shutil.copytree(tiny_sdxl.config_dir, other)
    te2 = json.loads((other / "text_encoder_2" / "config.json").read_text())
    (other / "text_encoder_2" / "config.json").write_text(json.dumps(dict(te2, hidden_size=64)))
    with pytest.raises(ModelLoadError, match=r"config folder .*other does not fit .*tiny_sdxl.safetensors"):
        load_sdxl(str(tiny_sdxl.single_file), config_dir=str(other))


def test_non_sdxl_diffusers_folder_is_refused(tmp_path):
    (tmp_path / "sd15").mkdir()
    (tmp_path / "sd15" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ModelLoadError, match="StableDiffusionPipeline, not an SDXL base model"):
        load_sdxl(str(tmp_path / "sd15"))


def _other_vae(tiny_sdxl):
    torch.manual_seed(123)
    return AutoencoderKL.from_config(AutoencoderKL.load_config(tiny_sdxl.config_dir / "vae"))


@pytest.mark.parametrize("layout", ["original", "diffusers"])
def test_user_vae_file_replaces_the_models_vae(tiny_sdxl, tmp_path, from_folder, layout):
    user_vae = _other_vae(tiny_sdxl)
    state = user_vae.state_dict()
    if layout == "original":  # like sdxl_vae.safetensors
        state = {k.removeprefix("first_stage_model."): v for k, v in vae_state_dict_to_ldm(state, 4).items()}
    vae_file = tmp_path / "my_vae.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(vae_file))

    model = load_sdxl(str(tiny_sdxl.single_file), config_dir=str(tiny_sdxl.config_dir), vae=str(vae_file))
    assert _same(_parameters(model.vae), _parameters(user_vae))
    assert not _same(_parameters(model.vae), _parameters(from_folder.vae))
    assert _same(_parameters(model.unet), _parameters(from_folder.unet))
    assert model.vae.dtype == torch.float32


def test_a_vae_that_is_not_one_is_refused(tiny_sdxl, tmp_path):
    not_vae = _fake_checkpoint(tmp_path / "lora.safetensors", FAKE_KEYS["lora"])
    with pytest.raises(ModelLoadError, match="lora.safetensors does not look like a VAE.*a LoRA"):
        load_sdxl(str(tiny_sdxl.diffusers_dir), vae=str(not_vae))
    with pytest.raises(ModelLoadError, match="VAE not found"):
        load_sdxl(str(tiny_sdxl.diffusers_dir), vae=str(tmp_path / "absent.safetensors"))
