"""The VRAM estimate: checked against the bytes really allocated on CPU by the tiny model's training
step, against a trace of the whole U-Net, and setting by setting (each moves the estimate the way it
should); a GPU that is too small gets the changes that make the run fit."""

from __future__ import annotations

import functools
import re
import time

import pytest
import torch
import torch.nn.functional as F

from lora_trainer.config import TrainConfig
from lora_trainer.train import vram
from lora_trainer.train.fp8 import store_frozen_weights_in_fp8
from lora_trainer.train.network import UNET_CONV_TARGETS, add_network
from lora_trainer.train.sgm_names import TEXT_ENCODER_LORA_TARGETS, UNET_LORA_TARGETS

MIB = 2**20
# The real step and the estimate count the same tensors; what differs is what CPU kernels allocate
# besides them (measured: within 2 %).
TOLERANCE = 0.05


def config(**changes) -> TrainConfig:
    base = dict(network_train_unet_only=True, max_resolution="256,256", network_dim=8, network_alpha=4.0)
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def tiny_unet(tiny_sdxl):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(str(tiny_sdxl.diffusers_dir), subfolder="unet")


def real_step_peak(unet_source, cfg: TrainConfig) -> int:
    """The tiny U-Net set up as trainer._run sets it up, one training step (forward, backward, AdamW's
    step) on real CPU tensors: the most bytes allocated at once above what was there before, from the
    profiler's allocation events. CUDA's autocast is applied as the estimate applies it."""
    import copy

    from torch.profiler import ProfilerActivity, profile

    unet = copy.deepcopy(unet_source)
    unet.requires_grad_(False).to(vram._weight_dtype(cfg))
    add_network(unet, cfg, UNET_LORA_TARGETS, UNET_CONV_TARGETS)
    trainable = [p for p in unet.parameters() if p.requires_grad]
    for p in trainable:
        p.data = p.data.to(vram._lora_dtype(cfg))
    if cfg.fp8_base:
        store_frozen_weights_in_fp8(unet)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    dtype, c, batch = vram._weight_dtype(cfg), unet.config, cfg.train_batch_size
    width, height = cfg.resolution
    latents = torch.randn(batch, c.in_channels, height // 8, width // 8, dtype=dtype)
    ctx = torch.randn(batch, 77 * (cfg.max_token_length // 75), c.cross_attention_dim, dtype=dtype)
    pooled = torch.randn(batch, c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim,
                         dtype=dtype)
    time_ids, timesteps = torch.randn(batch, 6, dtype=dtype), torch.randint(0, 1000, (batch,))
    optimizer = torch.optim.AdamW(trainable, foreach=True)  # foreach, as on CUDA
    recompute = functools.partial(torch.utils.checkpoint.checkpoint,
                                  context_fn=functools.partial(vram._recompute_context, cfg))

    def step():
        with vram._autocast_for(cfg), vram._patched(torch.utils.checkpoint, "checkpoint", recompute):
            prediction = unet(latents, timesteps, ctx, added_cond_kwargs={"text_embeds": pooled,
                                                                         "time_ids": time_ids}).sample
            loss = F.mse_loss(prediction.float(), latents.float())
            del prediction
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # the optimizer's state is made here; it is counted apart
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def step_bytes(estimate: vram.MemoryEstimate) -> int:
    """What the estimate says a step allocates besides the weights and the optimizer's state."""
    parts = estimate.parts
    return parts["activations"] + parts["gradients"] + parts["optimizer step temporaries"]


@pytest.mark.slow
@pytest.mark.parametrize("changes", [
    dict(mixed_precision="no"),
    dict(),  # bf16
    dict(gradient_checkpointing=True),
    dict(fp8_base=True),
    dict(train_batch_size=2, mixed_precision="no"),
    dict(LoRA_type="LyCORIS/LoHa", mixed_precision="no"),
], ids=["fp32", "bf16", "checkpointing", "fp8", "batch2", "loha"])
def test_estimate_matches_the_bytes_a_real_step_allocates(tiny_sdxl, tiny_unet, changes):
    # 512 px: large enough that the CPU kernels' own small buffers (a few hundred KiB) do not count
    cfg = config(max_resolution="512,512", **changes)
    estimate = step_bytes(vram.estimate_training_memory(cfg, tiny_sdxl.config_dir))
    real = real_step_peak(tiny_unet, cfg)
    print(f"{changes}: estimate {estimate / MIB:.2f} MiB, real {real / MIB:.2f} MiB, {estimate / real - 1:+.1%}")
    assert abs(estimate / real - 1) < TOLERANCE


def test_block_by_block_estimate_matches_the_whole_unet(tiny_sdxl):
    """The estimate traces each distinct block once and puts them together; tracing the whole U-Net
    (diffusers' own forward, torch.utils.checkpoint's own recomputation) must give the same peak."""
    for cfg in (config(gradient_checkpointing=True), config(xformers="none")):
        step = vram._unet_step(str(tiny_sdxl.config_dir.resolve()), vram._UNetKey.of(cfg, 64, 64))
        whole = vram.trace_unet_step(cfg, tiny_sdxl.config_dir, 64, 64)
        print(f"{cfg.gradient_checkpointing=} {cfg.xformers=}: blocks {(step.activations + step.grads_at_peak) / MIB:.2f}"
              f" MiB, whole U-Net {whole / MIB:.2f} MiB")
        assert abs((step.activations + step.grads_at_peak) / whole - 1) < 0.03


def test_lora_weights_are_what_add_network_makes(tiny_sdxl, tiny_unet):
    import copy

    from transformers import CLIPTextModel

    te1 = CLIPTextModel.from_pretrained(str(tiny_sdxl.diffusers_dir), subfolder="text_encoder")
    for changes in (dict(), dict(LoRA_type="LyCORIS/LoCon", conv_dim=4), dict(LoRA_type="LyCORIS/LoHa"),
                    dict(LoRA_type="LyCORIS/LoKr"), dict(dora_wd=True)):
        cfg = config(**changes)
        unet = copy.deepcopy(tiny_unet).requires_grad_(False)
        add_network(unet, cfg, UNET_LORA_TARGETS, UNET_CONV_TARGETS)
        real = sum(p.numel() * 4 for p in unet.parameters() if p.requires_grad)
        assert vram.estimate_training_memory(cfg, tiny_sdxl.config_dir).parts["LoRA weights"] == real, changes
    # with the text encoders trained, both get adapters too
    cfg = config(network_train_unet_only=False)
    unet_only = vram.estimate_training_memory(config(), tiny_sdxl.config_dir).parts["LoRA weights"]
    encoder = copy.deepcopy(te1).requires_grad_(False)
    add_network(encoder, cfg, TEXT_ENCODER_LORA_TARGETS)
    te1_lora = sum(p.numel() * 4 for p in encoder.parameters() if p.requires_grad)
    assert vram.estimate_training_memory(cfg, tiny_sdxl.config_dir).parts["LoRA weights"] > unet_only + te1_lora


def test_optimizer_state_is_what_the_optimizers_keep():
    from transformers.optimization import Adafactor

    shapes = [(8, 64), (64, 8), (8, 32, 3, 3), (64,)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    for name, make in (("AdamW", lambda: torch.optim.AdamW(params)),
                       ("Adafactor", lambda: Adafactor(params, lr=1e-3, relative_step=False,
                                                       scale_parameter=False))):
        optimizer = make()
        for p in params:
            p.grad = torch.randn_like(p)
        optimizer.step()
        real = sum(t.nbytes for state in optimizer.state.values() for t in state.values()
                   if isinstance(t, torch.Tensor) and t.dim() > 0)
        state, _ = vram._optimizer_bytes(config(optimizer=name, lr_scheduler="constant"), shapes)
        assert state == real, name


def test_each_setting_moves_the_estimate_the_right_way(tiny_sdxl):
    def estimate(**changes):
        return vram.estimate_training_memory(config(**changes), tiny_sdxl.config_dir)

    base = estimate()
    parts = base.parts
    assert estimate(gradient_checkpointing=True).parts["activations"] < parts["activations"] / 2
    # fp8: one byte instead of two for every frozen Linear / Conv2d weight
    fp8 = estimate(fp8_base=True, gradient_checkpointing=True).parts["U-Net weights"]
    models = vram._models(str(tiny_sdxl.config_dir.resolve()))
    assert fp8 == parts["U-Net weights"] - models.unet_fp8_params
    assert estimate(network_dim=32).parts["LoRA weights"] > parts["LoRA weights"]
    assert estimate(network_dim=32).parts["optimizer state"] > parts["optimizer state"]
    assert estimate(train_batch_size=2).parts["activations"] > 1.8 * parts["activations"]
    assert estimate(max_resolution="512,512").parts["activations"] > 3.5 * parts["activations"]
    assert estimate(xformers="none").parts["activations"] > parts["activations"]
    fp32 = estimate(mixed_precision="no").parts
    assert fp32["U-Net weights"] == 2 * parts["U-Net weights"] and fp32["activations"] > parts["activations"]
    assert estimate(optimizer="Adafactor").parts["optimizer state"] < parts["optimizer state"] / 4
    assert estimate(full_bf16=True).parts["LoRA weights"] == parts["LoRA weights"] / 2
    with_encoders = estimate(network_train_unet_only=False).parts
    assert with_encoders["text encoders"] > 0 and with_encoders["LoRA weights"] > parts["LoRA weights"]
    assert parts["text encoders"] == 0  # frozen and cached: they leave the GPU before the first step
    # shuffled captions cannot be cached: the frozen encoders stay on the GPU (fp32)
    assert estimate(shuffle_caption=True).parts["text encoders"] == 4 * models.te_params


def test_the_set_up_holds_the_encoders_without_the_unet(tiny_sdxl):
    """trainer._run encodes the captions before the U-Net reaches the GPU (and converts it to fp8 on the
    CPU): the set-up's peak is the VAE's or the fp32 encoders', never the encoders and the U-Net together."""
    cfg = config(fp8_base=True, gradient_checkpointing=True)
    estimate = vram.estimate_training_memory(cfg, tiny_sdxl.config_dir)
    models = vram._models(str(tiny_sdxl.config_dir.resolve()))
    assert estimate.setup_bytes >= models.te_params * 4
    assert estimate.setup_bytes < (models.te_params * 4 + models.unet_params) * (1 + vram.FRAGMENTATION) \
        + vram.CUDA_CONTEXT_BYTES + models.vae_params * 4 or "latents" in estimate.setup_note
    assert estimate.total_bytes == max(estimate.step_bytes, estimate.setup_bytes)


def test_summary_says_what_holds_the_memory_and_whether_it_fits(tiny_sdxl):
    estimate = vram.estimate_training_memory(config(max_resolution="1024,1024"), tiny_sdxl.config_dir)
    line = estimate.summary(24 * vram.GIB)
    assert re.match(r"about \d+\.\d GiB peak \(.*activations \d+\.\d.*\).*; fits in 24\.0 GiB$", line), line
    assert estimate.summary(estimate.total_bytes // 2).endswith(f"does not fit in {estimate.total_bytes / 2 / vram.GIB:.1f} GiB")
    assert "fit" not in estimate.summary()


def test_a_too_small_gpu_gets_the_changes_that_make_it_fit(tiny_sdxl):
    cfg = config(max_resolution="1024,1024", min_bucket_reso=256, train_batch_size=2, network_dim=32)
    full = vram.estimate_training_memory(cfg, tiny_sdxl.config_dir).total_bytes
    checkpointed = vram.estimate_training_memory(cfg.replace(gradient_checkpointing=True), tiny_sdxl.config_dir)
    gpu = (full + checkpointed.total_bytes) // 2
    fixes = vram.fixes_to_fit(cfg, tiny_sdxl.config_dir, gpu)
    assert f"turn on gradient_checkpointing: about {checkpointed.total_bytes / vram.GIB:.1f} GiB" in fixes
    for fix in fixes:
        assert re.fullmatch(r".+: about \d+\.\d GiB", fix), fix
    assert vram.fixes_to_fit(cfg, tiny_sdxl.config_dir, full) == []
    # nothing alone is enough: all the changes together are named
    together = vram.fixes_to_fit(cfg, tiny_sdxl.config_dir, vram.CUDA_CONTEXT_BYTES + MIB)
    assert len(together) == 1 and together[0].startswith("all of turn on gradient_checkpointing, ")
    assert "(still does not fit" in together[0]


def test_a_second_estimate_is_fast(tiny_sdxl):
    cfg = config(max_resolution="512,512")
    vram.estimate_training_memory(cfg, tiny_sdxl.config_dir)
    start = time.perf_counter()
    vram.estimate_training_memory(cfg.replace(gradient_checkpointing=True, optimizer="Adafactor",
                                              lr_scheduler="constant"), tiny_sdxl.config_dir)
    vram.estimate_training_memory(cfg.replace(learning_rate=2e-4), tiny_sdxl.config_dir)
    assert time.perf_counter() - start < 2.0
