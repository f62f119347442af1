"""End-to-end training on the tiny SDXL model: files, keys, metadata, logs, learning, stop/resume and
failures. CPU only, no network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.models.attention_processor import AttnProcessor
from diffusers.training_utils import compute_snr
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.config.presets import load_preset
from lora_trainer.train import batches as batches_module
from lora_trainer.train import trainer as trainer_module
from lora_trainer.train.events import EventLog, read_events
from lora_trainer.train.model import load_sdxl
from lora_trainer.train.sgm_names import TEXT_ENCODER_LORA_TARGETS, UNET_LORA_TARGETS, lora_target_names
from lora_trainer.train.stop import request_stop
from lora_trainer.train.trainer import TrainingError, train

pytestmark = pytest.mark.slow


def tiny_config(tiny_sdxl, img_root: Path, out: Path, **changes):
    settings = {"network_train_unet_only": True, **changes}
    return load_preset("CPU smoke test", pretrained_model_name_or_path=str(tiny_sdxl.single_file),
                       train_data_dir=str(img_root), output_dir=str(out / "model"),
                       logging_dir=str(out / "log"), output_name="myLoRA", **settings)


def run(cfg, tiny_sdxl, **kwargs):
    return train(cfg, model_config_dir=str(tiny_sdxl.config_dir), **kwargs)


def test_two_epochs_write_kohya_files_logs_and_events(tiny_sdxl, character_dataset, tmp_path):
    cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path)
    result = run(cfg, tiny_sdxl)

    model_dir = tmp_path / "model"
    assert [p.name for p in result.saved_files] == ["myLoRA-000001.safetensors", "myLoRA-000002.safetensors"]
    assert result.final_file == model_dir / "myLoRA.safetensors"
    assert load_file(result.final_file).keys() == load_file(result.saved_files[-1]).keys()
    assert json.loads((model_dir / "myLoRA.json").read_text())["network_dim"] == 4
    assert not list(model_dir.glob("*.tmp")), "no temporary file may be left behind"
    assert result.global_step == 16 and result.epochs_done == 2  # 8 images x 1 repeat / batch 1

    # keys: every U-Net transformer target, kohya names, alpha as set (2.0 with rank 4)
    tensors = load_file(result.final_file)
    unet = load_sdxl(str(tiny_sdxl.single_file), config_dir=str(tiny_sdxl.config_dir)).unet
    expected_modules = len(lora_target_names(unet, UNET_LORA_TARGETS))
    stems = {k.rsplit(".", 2)[0] if k.endswith("weight") else k.rsplit(".", 1)[0] for k in tensors}
    assert len(stems) == expected_modules and all(s.startswith("lora_unet_") for s in stems)
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in tensors
    assert "lora_unet_middle_block_1_proj_in.lora_up.weight" in tensors
    down = tensors["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight"]
    assert down.shape[0] == 4 and down.dtype == torch.float16
    assert tensors["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.alpha"].item() == 2.0
    up = tensors["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight"]
    assert up.abs().sum() > 0, "lora_up starts at zero: non-zero means it trained"

    # metadata Forge uses to classify and show the LoRA
    with safe_open(str(result.saved_files[0]), "pt") as f:
        meta = f.metadata()
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["ss_network_module"] == "networks.lora"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"], meta["ss_epoch"]) == ("4", "2.0", "1")
    assert meta["ss_steps"] == "8" and meta["ss_num_train_images"] == "8"
    assert json.loads(meta["ss_tag_frequency"])["1_myLoRA"]["myLoRA"] == 8
    assert json.loads(meta["ss_bucket_info"])["buckets"]
    assert len(meta["sshs_model_hash"]) == 64 and len(meta["sshs_legacy_hash"]) == 8
    assert all(isinstance(v, str) for v in meta.values())

    # TensorBoard scalars under kohya's names, in log/<name><timestamp>/
    run_dir = result.run_dir
    assert run_dir.parent == tmp_path / "log" and run_dir.name.startswith("myLoRA")
    scalars = EventAccumulator(str(run_dir)).Reload().Tags()["scalars"]
    assert {"loss/current", "loss/average", "loss/epoch", "lr/unet"} <= set(scalars)
    steps = [e.step for e in EventAccumulator(str(run_dir)).Reload().Scalars("loss/current")]
    assert steps == list(range(1, 17))

    events = read_events(run_dir / "events.jsonl")
    kinds = [e["event"] for e in events]
    assert kinds[0] != "error" and "start" in kinds and kinds[-1] == "finished"
    assert kinds.count("step") == 16 and kinds.count("epoch") == 2 and kinds.count("saved") == 2


def test_text_encoder_training_adds_every_te_module(tiny_sdxl, character_dataset, tmp_path):
    cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path, max_train_epochs=1, text_encoder_lr=1e-3,
                      network_train_unet_only=False)
    assert cfg.train_text_encoder
    tensors = load_file(run(cfg, tiny_sdxl).final_file)
    model = load_sdxl(str(tiny_sdxl.single_file), config_dir=str(tiny_sdxl.config_dir))
    for prefix, encoder in (("lora_te1_", model.text_encoder_1), ("lora_te2_", model.text_encoder_2)):
        names = lora_target_names(encoder, TEXT_ENCODER_LORA_TARGETS)
        got = {k.split(".")[0] for k in tensors if k.startswith(prefix)}
        assert len(got) == len(names) > 0
        assert f"{prefix}text_model_encoder_layers_0_self_attn_q_proj" in got
        assert f"{prefix}text_model_encoder_layers_0_mlp_fc2" in got


def test_latents_are_cached_across_runs(tiny_sdxl, character_dataset, tmp_path):
    first = tiny_config(tiny_sdxl, character_dataset, tmp_path / "a", max_train_epochs=1)
    run(first, tiny_sdxl)
    second = tiny_config(tiny_sdxl, character_dataset, tmp_path / "b", max_train_epochs=1)
    result = run(second, tiny_sdxl)
    latents = next(e for e in read_events(result.run_dir / "events.jsonl") if e["event"] == "latents")
    assert (latents["encoded"], latents["reused"]) == (0, 8)


@pytest.mark.parametrize("ema", [{}, {"ema_decay": 0.8, "ema_update_every": 2}, {"dora_wd": True},
                                 {"LoRA_type": "LyCORIS/LoHa", "conv_dim": 2},
                                 {"optimizer": "AdamWScheduleFree", "lr_scheduler": "constant_with_warmup",
                                  "lr_warmup_steps": 2}],
                         ids=["plain", "ema", "dora", "loha-conv", "schedule-free"])
def test_stop_then_resume_matches_an_uninterrupted_run(tiny_sdxl, character_dataset, tmp_path, ema):
    common = {"max_train_epochs": 2, "save_precision": "float", "train_batch_size": 2, **ema}
    straight = run(tiny_config(tiny_sdxl, character_dataset, tmp_path / "straight", **common), tiny_sdxl)

    cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path / "stopped", **common)

    def stop_at_step_3(event):
        if event["event"] == "step" and event["step"] == 3:  # mid-epoch: 4 steps per epoch
            request_stop(cfg.output_dir, cfg.output_name)

    stopped = run(cfg, tiny_sdxl, on_event=stop_at_step_3)
    assert stopped.stopped and stopped.global_step == 3
    assert [p.name for p in stopped.saved_files] == ["myLoRA-step00000003.safetensors"]
    assert (stopped.state_dir / "state.pt").is_file()

    resumed = run(cfg, tiny_sdxl, resume_from=stopped.state_dir)
    assert not resumed.stopped and resumed.global_step == 8
    a, b = load_file(straight.final_file), load_file(resumed.final_file)
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, f"resumed weights differ from the uninterrupted run by {worst}"
    steps = [e.step for e in EventAccumulator(str(resumed.run_dir)).Reload().Scalars("loss/current")]
    assert steps == list(range(1, 9)), "TensorBoard continues the same curve without duplicates"


def test_resume_refuses_a_changed_network(tiny_sdxl, character_dataset, tmp_path):
    cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path, max_train_epochs=1)
    result = run(cfg, tiny_sdxl)
    with pytest.raises(TrainingError, match="network_dim: 4 -> 8"):
        run(cfg.replace(network_dim=8), tiny_sdxl, resume_from=result.state_dir)


def test_nan_loss_stops_and_keeps_the_last_good_epoch(tiny_sdxl, character_dataset, tmp_path, monkeypatch):
    real_loss = trainer_module._diffusion_loss
    calls = {"n": 0}

    def loss_that_explodes_in_epoch_2(*args, **kwargs):
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 11 else loss

    monkeypatch.setattr(trainer_module, "_diffusion_loss", loss_that_explodes_in_epoch_2)
    cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path)
    with pytest.raises(TrainingError, match=r"NaN.*step 11.*myLoRA-000001\.safetensors"):
        run(cfg, tiny_sdxl)
    assert sorted(p.name for p in (tmp_path / "model").glob("*.safetensors")) == ["myLoRA-000001.safetensors"]
    events = read_events(next((tmp_path / "log").iterdir()) / "events.jsonl")
    assert events[-1]["event"] == "error" and "NaN" in events[-1]["message"]


def test_out_of_memory_suggests_what_to_change(tiny_sdxl, character_dataset, tmp_path, monkeypatch):
    def no_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer_module, "_diffusion_loss", no_memory)
    with pytest.raises(TrainingError, match="train_batch_size 1.*gradient_checkpointing.*network_dim"):
        run(tiny_config(tiny_sdxl, character_dataset, tmp_path), tiny_sdxl)


def test_unwritable_output_fails_before_any_work(tiny_sdxl, character_dataset, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path).replace(output_dir=str(blocker / "model"))
    with pytest.raises(TrainingError, match="cannot write to .*not-a-folder"):
        run(cfg, tiny_sdxl)


def test_ctrl_c_saves_and_exits_cleanly(tiny_sdxl, character_dataset, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path, max_train_epochs=50)
    cfg.save_json(tmp_path / "run.json")
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "lora_trainer", "train", "--config", str(tmp_path / "run.json"),
         "--model-config-dir", str(tiny_sdxl.config_dir)],
        env={**os.environ, "PYTHONPATH": str(root)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "log").glob("*/events.jsonl")):
        time.sleep(0.2)
    events_file = next((tmp_path / "log").glob("*/events.jsonl"))
    while time.time() < deadline and '"event": "step"' not in events_file.read_text():
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output[-2000:]
    assert "resume with" in output
    kinds = [e["event"] for e in read_events(events_file)]
    assert kinds[-1] == "stopped"
    assert list((tmp_path / "model").glob("myLoRA-step*.safetensors"))
    assert (tmp_path / "model" / "myLoRA-state" / "state.pt").is_file()


class Watch:
    """What a run did inside: the model it loaded, the captions and flips the loop used, the text-encoder
    calls made once the loop had started, and the prompt lengths the U-Net was given."""

    def __init__(self, monkeypatch):
        self.model = None
        self.loop_started = False
        self.encoder_calls_in_loop = 0
        self.captions: list[str] = []
        self.flips: list[bool] = []
        self.prompt_lengths: set[int] = set()
        real_load, real_embed = trainer_module.load_sdxl, batches_module.TrainingBatches.embed
        real_get = batches_module.LatentCache.get

        def load_sdxl(*args, **kwargs):
            self.model = real_load(*args, **kwargs)
            for encoder in (self.model.text_encoder_1, self.model.text_encoder_2):
                encoder.register_forward_hook(self._encoder_called)
            self.model.unet.register_forward_pre_hook(
                lambda module, args: self.prompt_lengths.add(args[2].shape[1]))
            return self.model

        def embed(batches, captions, *args, **kwargs):
            self.captions += captions
            return real_embed(batches, captions, *args, **kwargs)

        def get(cache, path, geometry, flipped=False):
            if self.loop_started:
                self.flips.append(flipped)
            return real_get(cache, path, geometry, flipped)

        monkeypatch.setattr(trainer_module, "load_sdxl", load_sdxl)
        monkeypatch.setattr(batches_module.TrainingBatches, "embed", embed)
        monkeypatch.setattr(batches_module.LatentCache, "get", get)

    def _encoder_called(self, module, args, output):
        if self.loop_started:
            self.encoder_calls_in_loop += 1

    def on_event(self, event):
        if event["event"] == "start":
            self.loop_started = True


def test_eight_options_together_each_do_what_they_say(tiny_sdxl, character_dataset, tmp_path, monkeypatch):
    watch = Watch(monkeypatch)
    cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path, max_train_epochs=2, xformers="none",
                      gradient_checkpointing=True, gradient_accumulation_steps=2, min_snr_gamma=5.0,
                      noise_offset=0.05, flip_aug=True, shuffle_caption=True, keep_tokens=1)
    result = run(cfg, tiny_sdxl, on_event=watch.on_event)
    assert all(v.isfinite().all() for v in load_file(result.final_file).values())
    # gradient_accumulation_steps 2: 8 batches per epoch, one optimizer step every two
    assert result.global_step == 8
    # xformers "none": plain attention everywhere; gradient_checkpointing: on in the U-Net
    assert {type(p) for p in watch.model.unet.attn_processors.values()} == {AttnProcessor}
    assert watch.model.unet.is_gradient_checkpointing
    # flip_aug: both the mirrored and the plain latents are cached and trained on
    latents = next(e for e in read_events(result.run_dir / "events.jsonl") if e["event"] == "latents")
    assert latents["encoded"] == 16
    assert len(watch.flips) == 16 and 0 < sum(watch.flips) < 16
    # shuffle_caption with keep_tokens 1: the trigger word stays first, the other tags change order
    originals = {p.read_text().strip() for p in character_dataset.glob("*/*.txt")}
    assert len(watch.captions) == 16 and all(c.startswith("myLoRA, ") for c in watch.captions)
    assert all(sorted(c.split(", ")) in [sorted(o.split(", ")) for o in originals] for c in watch.captions)
    assert sum(c not in originals for c in watch.captions) >= 12
    # noise_offset and min_snr_gamma: see the _diffusion_loss tests below


@pytest.fixture(scope="module")
def tiny_unet(tiny_sdxl):
    return load_sdxl(str(tiny_sdxl.single_file), config_dir=str(tiny_sdxl.config_dir)).unet


class ZeroUNet(torch.nn.Module):
    """Predicts zero noise, so the loss is the mean square of the target noise."""

    def forward(self, noisy, timesteps, prompt_embeds, added_cond_kwargs):
        return type("Out", (), {"sample": torch.zeros_like(noisy)})


def _loss(unet, cfg, seed=0, latents=None, scheduler=None):
    latents = torch.zeros(16, 4, 8, 8) if latents is None else latents
    scheduler = scheduler or DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    rng = torch.Generator().manual_seed(seed)
    batch = len(latents)
    return trainer_module._diffusion_loss(unet, scheduler, latents, torch.zeros(batch, 77, 80),
                                          torch.zeros(batch, 48), torch.zeros(batch, 6), rng, cfg, torch.float32)


def test_noise_offset_shifts_each_channel_of_the_noise():
    plain, offset = TrainConfig(), TrainConfig(noise_offset=0.5)
    rng = torch.Generator().manual_seed(0)
    noise = torch.randn(16, 4, 8, 8, generator=rng)
    shift = torch.randn(16, 4, 1, 1, generator=rng)
    torch.testing.assert_close(_loss(ZeroUNet(), plain), noise.square().mean())
    torch.testing.assert_close(_loss(ZeroUNet(), offset), (noise + 0.5 * shift).square().mean())


def test_min_snr_gamma_weights_the_loss_by_min_snr_over_snr():
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    rng = torch.Generator().manual_seed(0)
    per_sample = torch.randn(16, 4, 8, 8, generator=rng).square().mean(dim=(1, 2, 3))
    timesteps = torch.randint(0, 1000, (16,), generator=rng)
    snr = compute_snr(scheduler, timesteps)
    weighted = _loss(ZeroUNet(), TrainConfig(min_snr_gamma=5.0), scheduler=scheduler)
    torch.testing.assert_close(weighted, (per_sample * torch.clamp(snr, max=5.0) / snr).mean())
    assert abs(weighted - _loss(ZeroUNet(), TrainConfig(), scheduler=scheduler)) > 0.01


def test_gradient_checkpointing_and_plain_attention_give_the_same_loss_and_gradients(tiny_unet):
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    weight = tiny_unet.conv_in.weight

    def loss_and_grad(checkpointing: bool, attention: str):
        trainer_module._set_attention(tiny_unet, TrainConfig(xformers=attention), EventLog())
        tiny_unet.train()
        if checkpointing:
            tiny_unet.enable_gradient_checkpointing()
        else:
            tiny_unet.disable_gradient_checkpointing()
        weight.requires_grad_(True)
        weight.grad = None
        loss = _loss(tiny_unet, TrainConfig(), latents=latents)
        loss.backward()
        return loss.detach(), weight.grad.clone()

    try:
        reference = loss_and_grad(False, "sdpa")
        for variant in (loss_and_grad(True, "sdpa"), loss_and_grad(False, "none")):
            torch.testing.assert_close(variant[0], reference[0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(variant[1], reference[1], rtol=1e-3, atol=1e-5)
        assert reference[1].abs().sum() > 0
    finally:
        tiny_unet.disable_gradient_checkpointing()
        tiny_unet.requires_grad_(False).eval()


def _write_long_captions(img_root: Path) -> None:
    """001.txt: 100 tokens (cut at 75 by 25); 002.txt: 160 tokens (cut at 150 by 10)."""
    folder = img_root / "1_myLoRA"
    (folder / "001.txt").write_text("myLoRA " + " ".join(["red"] * 99) + "\n")
    (folder / "002.txt").write_text("myLoRA " + " ".join(["hair"] * 159) + "\n")


@pytest.mark.parametrize("cache_setting", [False, True])
def test_frozen_text_encoders_are_not_called_in_the_loop(tiny_sdxl, character_dataset, tmp_path, monkeypatch,
                                                         cache_setting):
    """The text-encoder outputs are cached whenever the encoders are frozen; sdxl_cache_text_encoder_outputs
    (kohya's name) asks for what happens anyway. Also: long captions at max_token_length 150, end to end."""
    _write_long_captions(character_dataset)
    watch = Watch(monkeypatch)
    cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path, max_train_epochs=1, max_token_length=150,
                      sdxl_cache_text_encoder_outputs=cache_setting)
    result = run(cfg, tiny_sdxl, on_event=watch.on_event)
    assert watch.loop_started and len(watch.captions) == 8
    assert watch.encoder_calls_in_loop == 0
    # Captions of more than 75 tokens reach the U-Net as two chunks; the one over 150 is cut and reported.
    assert watch.prompt_lengths == {77, 154}
    events = read_events(result.run_dir / "events.jsonl")
    buckets = next(e for e in events if e["event"] == "buckets")
    assert buckets["truncated_captions"] == [["1_myLoRA/002.txt", 10]]
    assert "captions longer than 150 tokens: 1 (cut):\n  1_myLoRA/002.txt (+10 tokens)" in buckets["report"]
    warning = next(e["message"] for e in events if e["event"] == "warning" and "max_token_length" in e["message"])
    assert "1_myLoRA/002.txt (+10)" in warning and "max_token_length to 225" in warning


def test_caption_cut_at_75_tokens_is_reported(tiny_sdxl, character_dataset, tmp_path, capsys):
    from lora_trainer.train.cli import print_event

    _write_long_captions(character_dataset)
    cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path, max_token_length=75, max_train_steps=1)
    result = run(cfg, tiny_sdxl, on_event=print_event)
    buckets = next(e for e in read_events(result.run_dir / "events.jsonl") if e["event"] == "buckets")
    assert buckets["truncated_captions"] == [["1_myLoRA/002.txt", 85], ["1_myLoRA/001.txt", 25]]
    printed = capsys.readouterr()
    assert ("captions longer than 75 tokens: 2 (cut):\n  1_myLoRA/002.txt (+85 tokens)\n"
            "  1_myLoRA/001.txt (+25 tokens)") in printed.out
    assert "warning: 2 caption(s) are longer than max_token_length 75" in printed.err


def test_text_encoder_cache_setting_is_refused_while_the_encoders_train():
    with pytest.raises(ConfigError, match="cannot be used while the text encoders are trained"):
        TrainConfig(sdxl_cache_text_encoder_outputs=True, network_train_unet_only=False)
    with pytest.raises(ConfigError, match="cannot be used with shuffle_caption"):
        TrainConfig(sdxl_cache_text_encoder_outputs=True, network_train_unet_only=True, shuffle_caption=True)


def _full_disk_for(monkeypatch, module, name_part: str) -> None:
    """Make `module`'s writes of files whose name contains `name_part` hit a full disk: they go to
    /dev/full, where the kernel answers ENOSPC exactly as on a disk that has filled up."""
    real_open = open

    def open_on_full_disk(path, mode="r", *args, **kwargs):
        if "w" in mode and name_part in Path(path).name:
            return real_open("/dev/full", "wb" if "b" in mode else "w")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(module, "open", open_on_full_disk, raising=False)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to simulate a full disk")
def test_disk_full_while_saving_an_epoch_keeps_earlier_files_and_resumes(tiny_sdxl, character_dataset,
                                                                         tmp_path, monkeypatch):
    from lora_trainer import fsutil

    cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path, max_train_epochs=2)
    _full_disk_for(monkeypatch, fsutil, "myLoRA-000002")
    with pytest.raises(TrainingError, match=r"myLoRA-000002\.safetensors: No space left on device.*"
                                            r"disk is full.*--resume"):
        run(cfg, tiny_sdxl)
    model_dir = tmp_path / "model"
    first_epoch = (model_dir / "myLoRA-000001.safetensors").read_bytes()
    assert sorted(p.name for p in model_dir.iterdir()) == ["myLoRA-000001.safetensors", "myLoRA-state",
                                                          "myLoRA.json"], "no half-written file is left"
    events = read_events(next((tmp_path / "log").iterdir()) / "events.jsonl")
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "output"

    monkeypatch.undo()  # space freed
    resumed = run(cfg, tiny_sdxl, resume_from=model_dir / "myLoRA-state")
    assert resumed.epochs_done == 2 and resumed.final_file.name == "myLoRA.safetensors"
    assert (model_dir / "myLoRA-000001.safetensors").read_bytes() == first_epoch
    assert load_file(model_dir / "myLoRA-000002.safetensors").keys() == load_file(
        model_dir / "myLoRA-000001.safetensors").keys()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to simulate a full disk")
def test_disk_full_while_saving_the_state_keeps_the_previous_state(tiny_sdxl, character_dataset, tmp_path,
                                                                    monkeypatch):
    from lora_trainer.train import state as state_module

    cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path, max_train_epochs=2)
    calls = {"n": 0}
    real_write = state_module.write_main_state

    def second_save_on_full_disk(tmp_dir, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            _full_disk_for(monkeypatch, state_module, "state.pt")
        return real_write(tmp_dir, **kwargs)

    monkeypatch.setattr(state_module, "write_main_state", second_save_on_full_disk)
    with pytest.raises(TrainingError, match=r"cannot write the training state.*No space left on device"):
        run(cfg, tiny_sdxl)
    state_dir = tmp_path / "model" / "myLoRA-state"
    assert json.loads((state_dir / "progress.json").read_text())["epoch"] == 1, "epoch 1's state is kept"
    assert not (tmp_path / "model" / "myLoRA-state.tmp").exists(), "the partial state is removed"


# --- noise and loss options (train/loss.py) --------------------------------------------------------------

def test_multires_noise_adds_coarse_noise_at_unit_variance():
    from lora_trainer.train.loss import make_noise

    latents = torch.zeros(8, 4, 64, 64)
    plain = make_noise(latents, torch.Generator().manual_seed(0))
    pyramid = make_noise(latents, torch.Generator().manual_seed(0), multires_iterations=6, multires_discount=0.8)
    torch.testing.assert_close(pyramid.std(dim=(1, 2, 3)), torch.ones(8), rtol=1e-4, atol=1e-4)
    # coarse noise: neighbouring pixels move together, and each channel's mean strays far from 0
    def neighbour_correlation(n):
        return torch.corrcoef(torch.stack([n[..., :-1].flatten(), n[..., 1:].flatten()]))[0, 1].item()
    assert neighbour_correlation(plain) < 0.05 < 0.3 < neighbour_correlation(pyramid)
    assert pyramid.mean(dim=(2, 3)).abs().mean() > 5 * plain.mean(dim=(2, 3)).abs().mean()
    # 0 iterations: the plain noise, draw for draw
    torch.testing.assert_close(make_noise(latents, torch.Generator().manual_seed(0), multires_iterations=0), plain)


def test_pseudo_huber_is_squared_for_small_errors_and_linear_for_large_ones():
    from lora_trainer.train.loss import elementwise_loss

    target = torch.zeros(2, 1, 1, 3)
    prediction = torch.tensor([0.001, 1.0, 100.0]).expand(2, 1, 1, 3)
    c = torch.tensor([0.1, 0.1])
    l2 = elementwise_loss(prediction, target, "l2")
    huber = elementwise_loss(prediction, target, "huber", c)
    smooth = elementwise_loss(prediction, target, "smooth_l1", c)
    torch.testing.assert_close(l2[0, 0, 0], torch.tensor([1e-6, 1.0, 1e4]))
    torch.testing.assert_close(huber[0, 0, 0, 0], l2[0, 0, 0, 0], rtol=1e-3, atol=1e-9)  # d << c: d^2
    torch.testing.assert_close(huber[0, 0, 0, 2], torch.tensor(2 * 0.1 * (100 - 0.1)), rtol=1e-4, atol=0)  # 2c|d|
    torch.testing.assert_close(smooth, huber / 0.1)
    with pytest.raises(ValueError, match="loss_type"):
        elementwise_loss(prediction, target, "l1", c)


def test_huber_c_schedules_follow_the_timestep():
    from lora_trainer.train.loss import huber_c

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    t = torch.tensor([0, 500, 999])
    torch.testing.assert_close(huber_c(scheduler, t, 0.1, "constant"), torch.full((3,), 0.1))
    exponential = huber_c(scheduler, t, 0.1, "exponential")
    assert exponential[0] == 1.0 and abs(exponential[2] - 0.1) < 0.01 and exponential[0] > exponential[1] > exponential[2]
    snr = huber_c(scheduler, t, 0.1, "snr")
    assert 0.9 < snr[0] <= 1.0 and snr[0] > snr[1] > snr[2] >= 0.1  # little noise: near 1; much noise: near c


def test_the_huber_loss_and_debiased_weights_change_the_step_loss_as_their_formulas_say():
    from lora_trainer.train.loss import huber_c

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    rng = torch.Generator().manual_seed(0)
    noise = torch.randn(16, 4, 8, 8, generator=rng)
    timesteps = torch.randint(0, 1000, (16,), generator=rng)
    snr = compute_snr(scheduler, timesteps)
    # ZeroUNet predicts 0: the error is the noise itself
    c = huber_c(scheduler, timesteps, 0.1, "snr").view(-1, 1, 1, 1)
    huber = (2 * c * (torch.sqrt(noise.square() + c.square()) - c)).mean(dim=(1, 2, 3))
    torch.testing.assert_close(_loss(ZeroUNet(), TrainConfig(loss_type="huber"), scheduler=scheduler), huber.mean())
    debiased = noise.square().mean(dim=(1, 2, 3)) / torch.sqrt(torch.clamp(snr, max=1000))
    torch.testing.assert_close(_loss(ZeroUNet(), TrainConfig(debiased_estimation_loss=True), scheduler=scheduler),
                               debiased.mean())
    assert abs(_loss(ZeroUNet(), TrainConfig(), scheduler=scheduler) - debiased.mean()) > 0.1


def test_the_loss_and_caption_options_are_checked():
    with pytest.raises(ConfigError, match="loss_type = 'l1': must be one of"):
        TrainConfig(loss_type="l1")
    with pytest.raises(ConfigError, match="caption_dropout_rate = 1.5"):
        TrainConfig(caption_dropout_rate=1.5)
    with pytest.raises(ConfigError, match="caption_tag_dropout_rate > 0"):
        TrainConfig(caption_tag_dropout_rate=0.1, sdxl_cache_text_encoder_outputs=True, network_train_unet_only=True)
    with pytest.raises(ConfigError, match="huber_c = 0.0"):
        TrainConfig(huber_c=0.0)


def test_caption_dropout_in_a_run_empties_the_nth_epochs_captions_and_drops_tags(
        tiny_sdxl, character_dataset, tmp_path, monkeypatch):
    watch = Watch(monkeypatch)
    cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path, max_train_epochs=2, keep_tokens=1,
                      caption_dropout_every_n_epochs=2, caption_tag_dropout_rate=0.5, loss_type="smooth_l1",
                      multires_noise_iterations=4, debiased_estimation_loss=True)
    result = run(cfg, tiny_sdxl, on_event=watch.on_event)
    assert all(v.isfinite().all() for v in load_file(result.final_file).values())
    first, second = watch.captions[:len(watch.captions) // 2], watch.captions[len(watch.captions) // 2:]
    originals = {p.read_text().strip() for p in character_dataset.glob("*/*.txt")}
    assert all(c.startswith("myLoRA") for c in first) and sum(c not in originals for c in first) >= len(first) // 2
    assert second and all(c == "" for c in second)  # epoch 2 of caption_dropout_every_n_epochs 2


def test_validation_holds_images_out_and_the_same_weights_give_the_same_loss(
        tiny_sdxl, character_dataset, tmp_path, monkeypatch):
    from lora_trainer.train import validation as validation_module
    from lora_trainer.train.data import hold_out, scan_training_folder

    started, trained_paths, pairs = [], [], []
    real_get, real_loss = batches_module.LatentCache.get, validation_module.Validator.loss

    def get(cache, path, geometry, flipped=False):
        if started:
            trained_paths.append(Path(path))
        return real_get(cache, path, geometry, flipped)

    def loss_twice(self, *args):
        pairs.append((real_loss(self, *args), real_loss(self, *args)))
        return pairs[-1][0]

    monkeypatch.setattr(batches_module.LatentCache, "get", get)
    monkeypatch.setattr(validation_module.Validator, "loss", loss_twice)
    cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path, max_train_epochs=2, validation_split=2)
    result = run(cfg, tiny_sdxl, on_event=lambda e: started.append(1) if e["event"] == "start" else None)

    held = {item.path for item in hold_out(scan_training_folder(character_dataset).items, 2, cfg.seed)[1]}
    assert len(held) == 2 and trained_paths and not held & set(trained_paths)  # never in a training batch
    assert len(set(trained_paths)) == 6
    assert len(pairs) == 2 and all(a == b and a > 0 for a, b in pairs)  # same weights, same loss
    assert pairs[0][0] != pairs[1][0]  # the weights changed between the epochs
    events = read_events(result.run_dir / "events.jsonl")
    start = next(e for e in events if e["event"] == "start")
    assert (start["images"], start["validation_images"]) == (6, 2)
    validations = [e for e in events if e["event"] == "validation"]
    assert [(e["epoch"], e["images"]) for e in validations] == [(1, 2), (2, 2)]
    assert result.validation_losses == {1: pairs[0][0], 2: pairs[1][0]}
    scalars = EventAccumulator(str(result.run_dir)).Reload().Scalars("loss/validation")
    assert [(s.step, round(s.value, 5)) for s in scalars] == [(1, round(pairs[0][0], 5)), (2, round(pairs[1][0], 5))]


def test_a_validation_folder_is_checked_before_the_run(tmp_path):
    from lora_trainer.config.settings import check_paths

    cfg = TrainConfig(validation_data_dir=str(tmp_path / "held"))
    assert any("validation_data_dir" in p and "no such folder" in p for p in check_paths(cfg))
    with pytest.raises(ConfigError, match="not both"):
        TrainConfig(validation_split=0.1, validation_data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="validation_split = 2.5"):
        TrainConfig(validation_split=2.5)



def test_the_ema_follows_its_formula():
    from lora_trainer.train.ema import LoraEMA

    weight = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    ema = LoraEMA({"w": weight}, decay=0.5, every=2)
    expected = torch.tensor([1.0, 2.0])
    for step, value in enumerate([3.0, 5.0, 7.0, 9.0], start=1):
        weight.data.fill_(value)
        assert ema.update(step) == (step % 2 == 0)
        if step % 2 == 0:
            expected = 0.5 * expected + 0.5 * value
    torch.testing.assert_close(ema.shadow["w"], expected)  # [1,2] -> (x+5)/2 -> (y+9)/2
    with ema.swapped_in():
        torch.testing.assert_close(weight.data, expected)
    assert weight.data.tolist() == [9.0, 9.0]  # the trained weights back, bit for bit
    with pytest.raises(ValueError, match="lacks 1 weight"):
        ema.load_state_dict({})


def test_ema_alongside_saves_the_average_as_its_own_files(tiny_sdxl, character_dataset, tmp_path, monkeypatch):
    from lora_trainer.train import ema as ema_module
    from lora_trainer.train.sgm_names import UNetLayout, kohya_lora_name

    watch = Watch(monkeypatch)
    start, folded = {}, []  # the weights the EMA started from, and those it folded in at each update
    real_init, real_update = ema_module.LoraEMA.__init__, ema_module.LoraEMA.update

    def init(self, params, decay, every=1):
        real_init(self, params, decay, every)
        start.update({n: t.clone() for n, t in self.shadow.items()})

    def update(self, step):
        folded.append({n: p.detach().float().clone() for n, p in self.params.items()})
        return real_update(self, step)

    monkeypatch.setattr(ema_module.LoraEMA, "__init__", init)
    monkeypatch.setattr(ema_module.LoraEMA, "update", update)
    cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path, max_train_epochs=2, save_precision="float",
                      ema_decay=0.9, ema_save="alongside")
    result = run(cfg, tiny_sdxl, on_event=watch.on_event)
    assert [p.name for p in result.ema_files] == ["myLoRA_ema-000001.safetensors", "myLoRA_ema-000002.safetensors"]
    assert result.final_file.read_bytes() == result.saved_files[-1].read_bytes()  # the final copy: the raw weights
    raw, averaged = load_file(result.saved_files[-1]), load_file(result.ema_files[-1])
    assert raw.keys() == averaged.keys() and len(folded) == 16
    name = next(n for n in start if n.startswith("unet/") and n.endswith("lora_B.default.weight"))
    module = name.split("/", 1)[1].removesuffix(".lora_B.default.weight")
    key = f"{kohya_lora_name('unet', module, UNetLayout.from_config(watch.model.unet.config))}.lora_up.weight"
    shadow = start[name]
    for weights in folded:
        shadow = 0.9 * shadow + 0.1 * weights[name]
    torch.testing.assert_close(averaged[key], shadow)  # the formula, step by step
    torch.testing.assert_close(raw[key], folded[-1][name])
    assert (averaged[key] - raw[key]).abs().max() > 1e-6
    with safe_open(str(result.ema_files[-1]), "pt") as f:
        assert f.metadata()["ss_output_name"] == "myLoRA_ema"
    saved = [e["path"] for e in read_events(result.run_dir / "events.jsonl") if e["event"] == "saved"]
    assert str(result.ema_files[0]) in saved and str(result.saved_files[0]) in saved


def test_loraplus_puts_the_up_weights_in_their_own_faster_group(tiny_sdxl, character_dataset, tmp_path, monkeypatch):
    from lora_trainer.train.trainer import param_groups

    unet = torch.nn.Module()
    unet.lora_A = torch.nn.Module()
    unet.block = torch.nn.Module()
    down, up, frozen = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    frozen.requires_grad_(False)
    unet.block.register_parameter("w", frozen)
    holder = torch.nn.ModuleDict({"lora_A": torch.nn.ParameterDict({"default": down}),
                                  "lora_B": torch.nn.ParameterDict({"default": up})})
    unet.add_module("attn", holder)
    plain = param_groups(TrainConfig(learning_rate=1e-4), {"unet": unet})
    assert [(g["name"], g["lr"], len(g["params"])) for g in plain] == [("unet", 1e-4, 2)]
    plus = param_groups(TrainConfig(learning_rate=1e-4, loraplus_lr_ratio=16), {"unet": unet})
    assert [(g["name"], g["lr"]) for g in plus] == [("unet", 1e-4), ("unet_up", 1.6e-3)]
    assert plus[0]["params"] == [down] and plus[1]["params"] == [up]
    # a real run: the up weights' rate is logged as its own curve
    cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path, max_train_epochs=1, loraplus_lr_ratio=16)
    steps = []
    result = run(cfg, tiny_sdxl, on_event=lambda e: steps.append(e) if e["event"] == "step" else None)
    assert steps[0]["lr"]["unet_up"] == pytest.approx(16 * steps[0]["lr"]["unet"])
    tags = EventAccumulator(str(result.run_dir)).Reload().Tags()["scalars"]
    assert "lr/unet_up" in tags and "lr/unet" in tags


# --- masked loss (train/loss_masks.py) ---------------------------------------------------------------------

class PointUNet(torch.nn.Module):
    """Predicts scale x the noisy latent, cell by cell: a cell's loss depends on that cell only."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, noisy, timesteps, prompt_embeds, added_cond_kwargs):
        return type("Out", (), {"sample": noisy * self.scale})


def test_masked_loss_learns_the_subject_cells_and_not_the_background():
    weights = torch.zeros(1, 1, 8, 8)
    weights[..., :4] = 1.0  # the subject: the left half of the latent grid
    cfg = TrainConfig(masked_loss=True)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)

    def gradient(latents):
        unet = PointUNet()
        rng = torch.Generator().manual_seed(0)
        loss = trainer_module._diffusion_loss(unet, scheduler, latents, torch.zeros(1, 77, 80), torch.zeros(1, 48),
                                              torch.zeros(1, 6), rng, cfg, torch.float32, weights)
        loss.backward()
        return unet.scale.grad.item()

    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    background, subject = latents.clone(), latents.clone()
    background[..., 4:] += 3.0
    subject[..., :4] += 3.0
    assert gradient(background) == pytest.approx(gradient(latents), abs=1e-7)  # the background is not learned
    assert abs(gradient(subject) - gradient(latents)) > 1e-3  # the subject is


def test_loss_masks_follow_the_geometry_and_name_images_without_one(tmp_path):
    from lora_trainer.train.buckets import Bucketer
    from lora_trainer.train.loss_masks import LossMasks

    masks = tmp_path / "masks"
    masks.mkdir()
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))  # the left half is the subject
    mask.save(masks / "a.png")
    image = tmp_path / "a.png"
    Image.new("RGB", (64, 64)).save(image)
    geometry = Bucketer((64, 64), enable_bucket=False).assign((64, 64))
    loss_masks = LossMasks(masks, alpha=False, background=0.25)
    plain = loss_masks.weights(image, geometry, False)
    assert plain.shape == (1, 8, 8)
    assert plain[0, :, :4].eq(1).all() and plain[0, :, 4:].eq(0.25).all()
    torch.testing.assert_close(loss_masks.weights(image, geometry, True), plain.flip(-1))  # follows the flip
    none = tmp_path / "b.png"
    Image.new("RGB", (64, 64)).save(none)
    assert loss_masks.weights(none, geometry, False).eq(1).all() and loss_masks.missing == [none]
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    rgba.paste((9, 9, 9, 255), (32, 0, 64, 64))  # opaque on the right
    rgba.save(tmp_path / "c.png")
    alpha = LossMasks(None, alpha=True).weights(tmp_path / "c.png", geometry, False)
    assert alpha[0, :, 4:].eq(1).all() and alpha[0, :, :4].eq(0).all()


def test_a_masked_run_uses_the_dataset_steps_masks_and_names_the_images_without_one(
        tiny_sdxl, character_dataset, tmp_path):
    masks = character_dataset.parent / "masks"
    masks.mkdir()
    images = sorted((character_dataset / "1_myLoRA").glob("*.png"))
    for image in images[:5]:
        Image.new("L", (64, 64), 255).save(masks / image.name)
    cfg = tiny_config(tiny_sdxl, character_dataset, tmp_path, max_train_epochs=1, masked_loss=True)
    result = run(cfg, tiny_sdxl)
    assert all(v.isfinite().all() for v in load_file(result.final_file).values())
    warnings = [e["message"] for e in read_events(result.run_dir / "events.jsonl") if e["event"] == "warning"]
    masked = next(w for w in warnings if w.startswith("masked loss"))
    assert "3 image(s) have no mask in" in masked and all(image.name in masked for image in images[5:])
