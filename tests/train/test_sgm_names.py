"""Our diffusers -> SGM naming, checked on the real SDXL architecture (built on the meta device,
no weights) and against diffusers' own SGM -> diffusers converter on other U-Net shapes."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from lora_trainer.train.sgm_names import (
    TEXT_ENCODER_LORA_TARGETS,
    UNET_LORA_TARGETS,
    UNetLayout,
    kohya_lora_name,
    lora_target_names,
    sdxl_single_file_state_dict,
    unet_name_to_sgm,
    unet_state_dict_to_sgm,
    vae_state_dict_to_ldm,
)

# Public values of stabilityai/stable-diffusion-xl-base-1.0's configs.
SDXL_UNET_CONFIG = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32,
)
SDXL_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32, sample_size=1024, scaling_factor=0.13025,
)
CLIP_L_CONFIG = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     projection_dim=768, hidden_act="quick_gelu", vocab_size=49408, max_position_embeddings=77)
CLIP_G_CONFIG = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                     projection_dim=1280, hidden_act="gelu", vocab_size=49408, max_position_embeddings=77)


@pytest.fixture(scope="module")
def real_sdxl():
    with torch.device("meta"):
        return {
            "unet": UNet2DConditionModel(**SDXL_UNET_CONFIG),
            "vae": AutoencoderKL(**SDXL_VAE_CONFIG),
            "te1": CLIPTextModel(CLIPTextConfig(**CLIP_L_CONFIG)),
            "te2": CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G_CONFIG)),
        }


def _kohya_names(models, component, key, targets):
    return [kohya_lora_name(component, name) for name in lora_target_names(models[key], targets)]


def test_real_sdxl_has_722_unet_and_264_text_encoder_lora_modules_in_sgm_form(real_sdxl):
    unet = _kohya_names(real_sdxl, "unet", "unet", UNET_LORA_TARGETS)
    te1 = _kohya_names(real_sdxl, "te1", "te1", TEXT_ENCODER_LORA_TARGETS)
    te2 = _kohya_names(real_sdxl, "te2", "te2", TEXT_ENCODER_LORA_TARGETS)

    assert len(unet) == len(set(unet)) == 722
    assert len(te1) + len(te2) == len(set(te1 + te2)) == 264
    assert (len(te1), len(te2)) == (72, 192)
    assert all(n.startswith(("lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_"))
               for n in unet)
    # Only the levels with attention: input blocks 4,5,7,8, the middle, output blocks 0-5.
    blocks = {"_".join(n.split("_")[2:5]) for n in unet}
    assert blocks == {"input_blocks_4", "input_blocks_5", "input_blocks_7", "input_blocks_8", "middle_block_1",
                      *(f"output_blocks_{i}" for i in range(6))}


@pytest.mark.parametrize("name", [
    "lora_unet_middle_block_1_transformer_blocks_9_ff_net_2",
    "lora_unet_output_blocks_0_1_transformer_blocks_0_attn2_to_k",
    "lora_unet_input_blocks_8_1_proj_in",
    "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_out_0",
    "lora_unet_output_blocks_5_1_transformer_blocks_1_ff_net_0_proj",
    "lora_unet_output_blocks_2_1_proj_out",
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
    "lora_te1_text_model_encoder_layers_11_mlp_fc2",
    "lora_te2_text_model_encoder_layers_31_self_attn_out_proj",
    "lora_te2_text_model_encoder_layers_0_mlp_fc1",
])
def test_known_kohya_names_of_real_sdxl_loras_are_produced(real_sdxl, name):
    every = (_kohya_names(real_sdxl, "unet", "unet", UNET_LORA_TARGETS)
             + _kohya_names(real_sdxl, "te1", "te1", TEXT_ENCODER_LORA_TARGETS)
             + _kohya_names(real_sdxl, "te2", "te2", TEXT_ENCODER_LORA_TARGETS))
    assert name in every


def test_single_file_layout_of_real_sdxl_has_the_original_keys_and_shapes(real_sdxl):
    state = sdxl_single_file_state_dict(real_sdxl["unet"], real_sdxl["vae"], real_sdxl["te1"], real_sdxl["te2"])
    expected_shapes = {
        "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
        "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
        "model.diffusion_model.input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
        "model.diffusion_model.input_blocks.1.0.emb_layers.1.weight": (320, 1280),
        "model.diffusion_model.middle_block.2.out_layers.3.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
        "model.diffusion_model.time_embed.2.weight": (1280, 1280),
        "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
        "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "first_stage_model.decoder.norm_out.weight": (128,),
        "conditioner.embedders.0.transformer.text_model.encoder.layers.11.mlp.fc2.weight": (768, 3072),
        "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
        "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (1280,),
        "conditioner.embedders.1.model.text_projection": (1280, 1280),
        "conditioner.embedders.1.model.positional_embedding": (77, 1280),
        "conditioner.embedders.1.model.ln_final.weight": (1280,),
    }
    assert {k: tuple(state[k].shape) for k in expected_shapes} == expected_shapes
    # diffusers names are gone (CLIP-L keeps the transformers names, as in real checkpoints).
    assert not any("down_blocks" in k or "self_attn.q_proj" in k
                   for k in state if not k.startswith("conditioner.embedders.0."))
    # Every parameter got its own name.
    n_params = sum(len(m.state_dict()) for m in real_sdxl.values())
    qkv_fused = 2 * 2 * CLIP_G_CONFIG["num_hidden_layers"]  # 3 weights + 3 biases -> 1 + 1 per layer
    assert len(state) == n_params - qkv_fused


def _round_trip_through_diffusers(unet):
    """Our SGM names, read back by diffusers' own SGM -> diffusers converter."""
    sgm = unet_state_dict_to_sgm(unet.state_dict(), UNetLayout.from_config(unet.config))
    return convert_ldm_unet_checkpoint(sgm, dict(unet.config))


@pytest.mark.parametrize("layout", ["sdxl", "sd1"])
def test_unet_mapping_follows_the_config_and_diffusers_reads_it_back(layout):
    torch.manual_seed(0)
    if layout == "sdxl":
        config = dict(SDXL_UNET_CONFIG, block_out_channels=(32, 64, 64), attention_head_dim=2,
                      transformer_layers_per_block=(1, 1, 2), cross_attention_dim=16,
                      addition_time_embed_dim=4, projection_class_embeddings_input_dim=32)
    else:  # four levels, one layer per block, attention on the other levels than SDXL's
        config = dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1, cross_attention_dim=16,
                      attention_head_dim=2, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                      up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    unet = UNet2DConditionModel(**config)
    back = _round_trip_through_diffusers(unet)
    original = unet.state_dict()
    assert back.keys() == original.keys()
    assert all(torch.equal(back[k], original[k]) for k in original)


def test_vae_mapping_is_read_back_by_diffusers():
    torch.manual_seed(0)
    vae = AutoencoderKL(**dict(SDXL_VAE_CONFIG, block_out_channels=(8, 16, 16, 16), norm_num_groups=8))
    sgm = vae_state_dict_to_ldm(vae.state_dict(), num_levels=4)
    back = convert_ldm_vae_checkpoint(sgm, dict(vae.config))
    original = vae.state_dict()
    assert back.keys() == original.keys()
    assert all(torch.equal(back[k], original[k]) for k in original)


def test_unknown_names_and_components_are_errors_that_name_them():
    with pytest.raises(ValueError, match="down_blocks.7.resnets.0"):
        unet_name_to_sgm("down_blocks.7.resnets.0")
    with pytest.raises(ValueError, match="encoder_hid_proj"):
        unet_name_to_sgm("encoder_hid_proj")
    with pytest.raises(ValueError, match="'te3'"):
        kohya_lora_name("te3", "text_model.encoder.layers.0.self_attn.q_proj")
