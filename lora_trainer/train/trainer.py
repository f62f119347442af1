"""The training run, top to bottom: prepare (data, model, caches, LoRA, optimizer), then the loop
noise -> predict -> loss -> step -> log -> save, with stop and resume.

Run it headless with `python -m lora_trainer train --config my.json`, under
`accelerate launch --num_processes N` for several GPUs (only rank 0 writes files), or call
`train(config)` from the UI.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from diffusers.models.attention_processor import AttnProcessor
from diffusers.training_utils import compute_snr
from tqdm.auto import tqdm

from lora_trainer.config import TrainConfig
from lora_trainer.config.settings import SELF_SCHEDULING_OPTIMIZERS
from lora_trainer.fsutil import LockHeld, OutputError, atomic_path, release_lock, write_json_atomic
from lora_trainer.runs import layout
from lora_trainer.runs.layout import RunFiles
from lora_trainer.runs.resume import changed_dataset_message, list_changes
from lora_trainer.runs.trainer_record import process_start_time
from lora_trainer.train import state as saved
from lora_trainer.train.batches import TrainingBatches
from lora_trainer.train.cache import LatentError
from lora_trainer.train.ema import LoraEMA
from lora_trainer.train.events import EventCallback, EventLog
from lora_trainer.train.export import lora_metadata, save_lora
from lora_trainer.train.fp8 import store_frozen_weights_in_fp8
from lora_trainer.train.loss import elementwise_loss, huber_c, make_noise, timestep_weights
from lora_trainer.train.loss_masks import masked_mean
from lora_trainer.train.model import load_sdxl
from lora_trainer.train.monitor import Monitor
from lora_trainer.train.network import (
    UNET_CONV_TARGETS,
    add_network,
    collect_network_tensors,
    network_metadata,
)
from lora_trainer.train.optim import adafactor_sets_own_lr, build_optimizer, build_scheduler
from lora_trainer.train.sgm_names import TEXT_ENCODER_LORA_TARGETS, UNET_LORA_TARGETS, UNetLayout
from lora_trainer.train.stop import StopSignal
from lora_trainer.train.validation import Validator

# Settings a resumed run must share with the run that wrote the state.
RESUME_MUST_MATCH = ("network_dim", "network_alpha", "network_train_unet_only", "text_encoder_lr",
                     "train_batch_size", "gradient_accumulation_steps", "seed", "optimizer",
                     "lr_scheduler", "train_data_dir", "output_name", "loraplus_lr_ratio", "validation_split",
                     "validation_data_dir", "validation_seed", "LoRA_type", "conv_dim", "conv_alpha", "dora_wd",
                     "factor")


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says why and what to try. Nothing written is lost."""


@dataclass
class TrainResult:
    saved_files: list[Path] = field(default_factory=list)
    final_file: Path | None = None
    state_dir: Path | None = None
    stopped: bool = False
    epochs_done: int = 0
    global_step: int = 0
    run_dir: Path | None = None
    epoch_losses: list[float] = field(default_factory=list)
    validation_losses: dict[int, float] = field(default_factory=dict)  # epoch -> loss on held-out images
    ema_files: list[Path] = field(default_factory=list)  # EMA weights saved alongside (ema_save "alongside")


def train(cfg: TrainConfig, *, resume_from: str | Path | None = None, model_config_dir: str | None = None,
          on_event: EventCallback | None = None, stop: StopSignal | None = None,
          resume_changed: bool = False) -> TrainResult:
    """`resume_changed`: resume even if the training images or captions changed since the state was
    saved (the changes are named in a warning); without it such a resume is refused."""
    # The first text encoder's last layer feeds nothing (SDXL uses its penultimate state), so its
    # LoRA gets no gradient; multi-process training must be told that this is expected.
    ddp_options = DistributedDataParallelKwargs(find_unused_parameters=cfg.train_text_encoder)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, kwargs_handlers=[ddp_options],
                              gradient_accumulation_steps=cfg.gradient_accumulation_steps)
    is_main = accelerator.is_main_process
    output_dir, logging_dir = Path(cfg.output_dir), Path(cfg.logging_dir)
    files = RunFiles(output_dir, cfg.output_name)
    lock = None
    if is_main:
        too_long = layout.check_name_lengths(output_dir, cfg.output_name, logging_dir)
        if too_long:
            raise TrainingError(f"{too_long}. Nothing was started.")
        _check_writable(output_dir, logging_dir)
        lock = _take_output_lock(cfg)  # before anything of this output is touched
    try:
        return _train_locked(cfg, accelerator, files, resume_from=resume_from, model_config_dir=model_config_dir,
                             on_event=on_event, stop=stop, resume_changed=resume_changed)
    finally:
        if lock is not None:
            release_lock(files.lock, lock)


def _take_output_lock(cfg: TrainConfig) -> dict:
    """One run at a time writes an output name's files: a second one is refused, naming the first."""
    pid = os.getpid()
    try:
        return layout.take_output_lock(cfg.output_dir, cfg.output_name, pid, process_start_time(pid))
    except LockHeld as e:
        raise TrainingError(layout.lock_refusal(cfg.output_dir, cfg.output_name, e.owner)) from None
    except OutputError as e:
        raise TrainingError(f"cannot write to {cfg.output_dir}: {e.strerror or e}. Choose another output "
                            "folder or free disk space.") from e


def _remove_leftovers(files: RunFiles) -> None:
    """What a killed run of this name left half-written: its temporary files and state folders. A state
    swap cut between its two renames has only `-state.old`: that whole previous state is put back."""
    for path in files.leftovers():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    if files.state_old.is_dir():
        if files.state_dir.exists():
            shutil.rmtree(files.state_old, ignore_errors=True)
        else:
            files.state_old.rename(files.state_dir)
    if files.state_tmp.is_dir():
        shutil.rmtree(files.state_tmp, ignore_errors=True)


def _train_locked(cfg: TrainConfig, accelerator: Accelerator, files: RunFiles, *, resume_from, model_config_dir,
                  on_event, stop, resume_changed: bool) -> TrainResult:
    is_main = accelerator.is_main_process
    logging_dir = Path(cfg.logging_dir)
    if is_main:
        _remove_leftovers(files)
    stop = stop or StopSignal(files.stop_flag)
    if is_main:
        stop.clear()  # a flag left from an earlier run must not stop this one at step 1
    resumed = saved.load_state(resume_from, accelerator.process_index) if resume_from else None
    dataset = saved.dataset_record(cfg.train_data_dir, cfg.caption_extension)
    changes = []
    if resumed:
        _check_resume_fits(cfg, resumed.config, resume_from)
        changes = saved.dataset_changes(resumed.dataset, dataset) if resumed.dataset is not None else []
        if changes and not resume_changed:
            raise saved.ResumeError(_dataset_changed_message(resume_from, changes, cfg.train_data_dir))
    started = time.time()
    if resumed:
        progress, run_dir = resumed.progress, logging_dir / resumed.progress.run_name
    else:
        run_dir = (layout.claim_run_folder(logging_dir, cfg.output_name, started) if is_main
                   else logging_dir / layout.run_folder_name(cfg.output_name, started))
        progress = saved.Progress(run_name=run_dir.name, started_at=started)
    events = EventLog(layout.events_file(run_dir) if is_main else None, on_event if is_main else None)
    events.emit(layout.LAUNCH, output_dir=str(files.output_dir.resolve()), output_name=cfg.output_name,
                pid=os.getpid(), process_started=process_start_time(os.getpid()), resumed=resumed is not None)
    if changes:
        events.emit(layout.WARNING, message=f"resumed with a changed dataset (--resume-changed), so the run "
                    f"will differ from one that never stopped: {list_changes(changes)}")
    saved_files: list[Path] = []
    try:
        return _run(cfg, accelerator, events, stop, progress, resumed, run_dir, model_config_dir,
                    dataset=dataset, saved_files=saved_files)
    except torch.cuda.OutOfMemoryError as e:
        raise _fail(events, "out_of_memory", (
            f"out of GPU memory ({e}). Try: train_batch_size 1, gradient_checkpointing on, "
            f"a lower network_dim (now {cfg.network_dim}), mixed_precision bf16 with full_bf16 "
            "(fp16 with full_fp16 and Adafactor on a GPU without bf16), or network_train_unet_only "
            "(frozen text encoders: their outputs are cached and the encoders leave the GPU); "
            "close other programs using the GPU.")) from e
    except OutputError as e:
        raise _fail(events, "output", _output_message(cfg, e, saved_files)) from e
    except LatentError as e:  # NaN latents (e.g. from a half VAE) or an image that changed: it names the image
        raise _fail(events, "training", str(e)) from e
    except TrainingError as e:
        events.emit(layout.ERROR, kind="training", message=str(e))
        raise
    finally:
        events.close()
        stop.close()


def _dataset_changed_message(state_dir, changes: list[str], train_data_dir: str) -> str:
    return f"cannot resume from {state_dir} ({train_data_dir}): " + changed_dataset_message(
        changes, "resume anyway with --resume-changed (the changes are then named in a warning)")


def _run(cfg: TrainConfig, accelerator: Accelerator, events: EventLog, stop: StopSignal,
         progress: saved.Progress, resumed: saved.SavedState | None, run_dir: Path,
         model_config_dir: str | None, *, dataset: dict, saved_files: list[Path]) -> TrainResult:
    device, is_main = accelerator.device, accelerator.is_main_process
    torch.manual_seed(cfg.seed)

    # --- data, model, caches -------------------------------------------------------------------
    # As stored (fp16 for most files): exact, and half the RAM of float32 until the casts below.
    model = load_sdxl(cfg.pretrained_model_name_or_path, config_dir=model_config_dir, vae=cfg.vae,
                      device="cpu", dtype=None)
    _set_attention(model.unet, cfg, events)
    batches = TrainingBatches.prepare(cfg, model, accelerator, events)
    weight_dtype = _weight_dtype(cfg)
    train_te = cfg.train_text_encoder
    # The U-Net reaches the GPU only once its network is attached, its frozen weights are in their
    # final dtype (fp8_base) and the captions are encoded: the text encoders and the U-Net are never
    # on the card together unless the encoders train (train/vram.py's set-up peak).
    model.unet.requires_grad_(False).to(weight_dtype)
    for te in (model.text_encoder_1, model.text_encoder_2):
        te.requires_grad_(False).to(device, weight_dtype if train_te else torch.float32)

    # --- LoRA ----------------------------------------------------------------------------------
    trained = {"unet": model.unet}
    add_network(model.unet, cfg, UNET_LORA_TARGETS, UNET_CONV_TARGETS)
    if train_te:
        trained.update(te1=model.text_encoder_1, te2=model.text_encoder_2)
        add_network(model.text_encoder_1, cfg, TEXT_ENCODER_LORA_TARGETS)
        add_network(model.text_encoder_2, cfg, TEXT_ENCODER_LORA_TARGETS)
    lora_dtype = _lora_dtype(cfg)
    if cfg.full_fp16:
        _let_scaler_unscale_fp16(accelerator)
    for m in trained.values():
        for p in m.parameters():
            if p.requires_grad:
                p.data = p.data.to(lora_dtype)
    if cfg.fp8_base:
        store_frozen_weights_in_fp8(model.unet)
    batches.build_text_cache(model, train_te)
    model.unet.to(device)  # no dtype: float8 weights, adapters and norms keep theirs
    if cfg.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
        if train_te:
            model.text_encoder_1.gradient_checkpointing_enable()
            model.text_encoder_2.gradient_checkpointing_enable()
    validator = Validator(cfg, batches, model.noise_scheduler) if batches.validation else None

    # --- optimizer, schedule -------------------------------------------------------------------
    steps_per_epoch = math.ceil(batches.batches_per_epoch / cfg.gradient_accumulation_steps)
    epochs = cfg.max_train_epochs
    total_steps = steps_per_epoch * epochs
    if cfg.max_train_steps:
        total_steps = min(total_steps, cfg.max_train_steps)
    groups = param_groups(cfg, trained)
    self_scheduling = cfg.optimizer in SELF_SCHEDULING_OPTIMIZERS
    warmup = cfg.warmup_steps(total_steps)
    optimizer = build_optimizer(cfg.optimizer, groups, cfg.learning_rate, cfg.optimizer_kwargs,
                                warmup_steps=warmup if self_scheduling else 0)
    scheduler = build_scheduler("constant" if self_scheduling else cfg.lr_scheduler, optimizer,
                                warmup_steps=0 if self_scheduling else warmup,
                                total_steps=total_steps, num_cycles=cfg.lr_scheduler_num_cycles,
                                power=cfg.lr_scheduler_power, initial_lr=cfg.learning_rate)
    prepared = accelerator.prepare(*trained.values(), optimizer)
    wrapped = dict(zip(trained, prepared[:-1]))
    optimizer = prepared[-1]

    noise_rng = torch.Generator(device=device).manual_seed(cfg.seed + accelerator.process_index)
    caption_rng = random.Random(cfg.seed + accelerator.process_index)
    if resumed:
        _restore(resumed, trained, optimizer, scheduler, noise_rng, caption_rng)
    ema = _ema(cfg, trained, resumed, events)

    monitor = Monitor(run_dir if is_main else None, events, progress)
    events.emit(layout.START, total_steps=total_steps, epochs=epochs, steps_per_epoch=steps_per_epoch,
                images=batches.num_images, samples_per_epoch=batches.num_samples,
                resumed_at_step=progress.global_step if resumed else None, run_dir=str(run_dir),
                processes=accelerator.num_processes, device=str(device),
                validation_images=len(validator) if validator else 0)
    run_files = RunFiles(cfg.output_dir, cfg.output_name)
    result = TrainResult(global_step=progress.global_step, epochs_done=progress.epoch, run_dir=run_dir,
                         state_dir=run_files.state_dir, saved_files=saved_files)
    trained_encoders = [wrapped["te1"], wrapped["te2"]] if train_te else None
    bar = tqdm(total=total_steps, initial=progress.global_step, disable=not is_main, unit="step",
               desc=cfg.output_name, dynamic_ncols=True)

    def averaged_weights():
        """schedule-free AdamW trains one sequence of weights and keeps their average for use."""
        return _optimizer_eval_mode(optimizer) if self_scheduling else contextlib.nullcontext()

    def save_everything(kind: str, path: Path) -> None:
        with averaged_weights():
            _save_everything(kind, path)

    def _save_everything(kind: str, path: Path) -> None:
        checksums = _rank_checksums(trained, accelerator)
        averaged = ema.swapped_in() if ema and cfg.ema_save == "instead" else contextlib.nullcontext()
        with averaged:
            path = _save_lora_file(cfg, accelerator, trained, batches, progress, path)
        if ema and cfg.ema_save == "alongside" and kind == layout.EPOCH:
            with ema.swapped_in():
                ema_path = _save_lora_file(cfg, accelerator, trained, batches, progress,
                                           run_files.ema_epoch_lora(progress.epoch), output_name=run_files.ema_name)
            if ema_path:
                result.ema_files.append(ema_path)
                events.emit(layout.SAVED, kind=kind, path=str(ema_path), epoch=progress.epoch,
                            step=progress.global_step, rank_checksums=checksums)
        _save_state(cfg, accelerator, trained, optimizer, scheduler, progress, noise_rng, caption_rng, dataset,
                    ema.state_dict() if ema else None)
        if path:
            result.saved_files.append(path)
            events.emit(layout.SAVED, kind=kind, path=str(path), epoch=progress.epoch, step=progress.global_step,
                        rank_checksums=checksums)

    # --- the loop ------------------------------------------------------------------------------
    noise_scheduler = model.noise_scheduler
    if self_scheduling:
        optimizer.train()
    for epoch in range(progress.epoch, epochs):
        for m in wrapped.values():
            m.train()
        epoch_batches = batches.for_epoch(epoch, accelerator.process_index, accelerator.num_processes)
        for batch_index in range(progress.batch_in_epoch, len(epoch_batches)):
            if progress.global_step >= total_steps:
                break
            batch = batches.load(epoch_batches[batch_index], caption_rng, device, epoch)
            with accelerator.accumulate(*wrapped.values()):
                prompt_embeds, pooled = batches.embed(batch.captions, model, trained_encoders)
                loss = _diffusion_loss(wrapped["unet"], noise_scheduler, batch.latents, prompt_embeds,
                                       pooled, batch.time_ids, noise_rng, cfg, weight_dtype, batch.weights)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.max_grad_norm)
                optimizer.step()  # accelerate's wrapper skips it between accumulation boundaries
                if accelerator.sync_gradients:
                    scheduler.step()  # the schedule counts optimizer steps, not micro-batches
                optimizer.zero_grad(set_to_none=True)
            progress.batch_in_epoch = batch_index + 1
            step_loss = accelerator.reduce(loss.detach().float(), reduction="mean").item()
            if not math.isfinite(step_loss):
                raise TrainingError(_nan_message(cfg, progress, result))
            if not accelerator.sync_gradients:
                continue
            progress.global_step += 1
            if ema:
                ema.update(progress.global_step)
            monitor.step(progress.global_step, epoch + 1, step_loss, _learning_rates(scheduler, optimizer))
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", epoch=epoch + 1)
            if _stop_requested(stop, accelerator):
                save_everything(layout.STOP, run_files.stop_lora(progress.global_step))
                events.emit(layout.STOPPED, step=progress.global_step, epoch=epoch + 1,
                            resume_with=str(result.state_dir))
                result.stopped = True
                if is_main:
                    stop.clear()  # consumed: `--resume` must not stop again at once
                result.global_step, result.epochs_done = progress.global_step, progress.epoch
                bar.close()
                monitor.close()
                return result
        progress.epoch, progress.batch_in_epoch = epoch + 1, 0
        result.epoch_losses.append(monitor.end_epoch(progress.epoch))
        last = progress.epoch == epochs or progress.global_step >= total_steps
        if validator and (last or progress.epoch % cfg.validate_every_n_epochs == 0):
            encoders = [trained["te1"], trained["te2"]] if train_te else None  # unwrapped: no DDP hooks
            with averaged_weights():
                loss = validator.loss(trained["unet"], model, encoders, accelerator, weight_dtype)
            result.validation_losses[progress.epoch] = loss
            monitor.validation(progress.epoch, loss, len(validator))
        if last or progress.epoch % cfg.save_every_n_epochs == 0:
            save_everything(layout.EPOCH, run_files.epoch_lora(progress.epoch))
        if last:
            break
    bar.close()
    monitor.close()
    result.global_step, result.epochs_done = progress.global_step, progress.epoch
    if is_main and result.saved_files:
        result.final_file = _save_final_copy(cfg, result.saved_files[-1])
        events.emit(layout.FINISHED, path=str(result.final_file), epoch=progress.epoch, step=progress.global_step)
    if is_main:
        stop.clear()
    return result


# --- one training step ---------------------------------------------------------------------------

def _diffusion_loss(unet, noise_scheduler, latents, prompt_embeds, pooled, time_ids, rng, cfg: TrainConfig,
                    weight_dtype, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Noise the latents at random timesteps, predict the noise, and return the loss (train/loss.py:
    squared error or pseudo-Huber, weighted by timestep as the settings ask, and by the subject's mask
    with masked_loss: `weights` [B, 1, h, w])."""
    noise = make_noise(latents, rng, offset=cfg.noise_offset, multires_iterations=cfg.multires_noise_iterations,
                       multires_discount=cfg.multires_noise_discount)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                              generator=rng, device=latents.device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    prediction = unet(noisy.to(weight_dtype), timesteps, prompt_embeds.to(weight_dtype),
                      added_cond_kwargs={"text_embeds": pooled.to(weight_dtype),
                                         "time_ids": time_ids.to(weight_dtype)}).sample
    v_prediction = noise_scheduler.config.prediction_type == "v_prediction"
    target = noise_scheduler.get_velocity(latents, noise, timesteps) if v_prediction else noise
    c = huber_c(noise_scheduler, timesteps, cfg.huber_c, cfg.huber_schedule) if cfg.loss_type != "l2" else None
    loss = masked_mean(elementwise_loss(prediction, target, cfg.loss_type, c), weights)
    if cfg.min_snr_gamma or cfg.debiased_estimation_loss:
        loss = loss * timestep_weights(compute_snr(noise_scheduler, timesteps), v_prediction=v_prediction,
                                       min_snr_gamma=cfg.min_snr_gamma, debiased=cfg.debiased_estimation_loss)
    return loss.mean()


# --- set-up helpers ------------------------------------------------------------------------------

def param_groups(cfg: TrainConfig, trained: dict[str, torch.nn.Module]) -> list[dict]:
    """The optimizer's groups, each named ("unet", "textencoder"): the U-Net's LoRA weights at unet_lr,
    the text encoders' at text_encoder_lr; with LoRA+ (loraplus_lr_ratio) the up weights (peft's lora_B)
    in their own group ("unet_up", "textencoder_up") at that many times the rate."""
    parts = [("unet", [trained["unet"]], cfg.unet_learning_rate)]
    if "te1" in trained:
        parts.append(("textencoder", [trained["te1"], trained["te2"]], cfg.text_encoder_learning_rate))
    groups = []
    for name, models, lr in parts:
        named = [(n, p) for m in models for n, p in m.named_parameters() if p.requires_grad]
        if not cfg.loraplus_lr_ratio:
            groups.append({"params": [p for _, p in named], "lr": lr, "name": name})
            continue
        groups.append({"params": [p for n, p in named if ".lora_B." not in n], "lr": lr, "name": name})
        groups.append({"params": [p for n, p in named if ".lora_B." in n], "lr": lr * cfg.loraplus_lr_ratio,
                       "name": f"{name}_up"})
    return groups


def _weight_dtype(cfg: TrainConfig) -> torch.dtype:
    """Frozen base weights in the mixed-precision dtype save memory; LoRA weights stay fp32
    unless full_bf16 / full_fp16 asks otherwise (`_lora_dtype`)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.mixed_precision, torch.float32)


def _lora_dtype(cfg: TrainConfig) -> torch.dtype:
    """The trained LoRA weights' dtype, hence their gradients' and (for most optimizers) the optimizer
    state's: fp32, or bf16 / fp16 with full_bf16 / full_fp16 (less memory, coarser updates)."""
    if cfg.full_bf16:
        return torch.bfloat16
    if cfg.full_fp16:
        return torch.float16
    return torch.float32


def _let_scaler_unscale_fp16(accelerator: Accelerator) -> None:
    """full_fp16 (as kohya's): the fp16 gradient scaler refuses to unscale fp16 gradients, since it
    expects fp32 master weights; told to allow them, it unscales them in place and still skips the steps
    whose gradients overflowed. Without a scaler (fp16 on a CPU) there is nothing to change."""
    scaler = accelerator.scaler
    if scaler is None:
        return
    unscale = getattr(scaler, "_unscale_grads_", None)
    if unscale is None:
        raise TrainingError("full_fp16 is not supported with this torch version's gradient scaler: "
                            "set full_fp16 = False (LoRA weights in fp32)")

    def unscale_fp16_too(optimizer, inv_scale, found_inf, allow_fp16):
        return unscale(optimizer, inv_scale, found_inf, True)

    scaler._unscale_grads_ = unscale_fp16_too


def _set_attention(unet, cfg: TrainConfig, events: EventLog) -> None:
    """diffusers uses PyTorch's scaled-dot-product attention (SDPA) by default; "none" asks for the
    plain matmul attention (what the guide's Apple settings use)."""
    if cfg.xformers == "none":
        unet.set_attn_processor(AttnProcessor())
    elif cfg.xformers == "xformers":
        events.emit(layout.WARNING, message="xformers requested: using PyTorch's scaled-dot-product attention "
                    "(SDPA), which has the same memory profile and needs no extra package")


def _check_writable(*folders: Path) -> None:
    """Fail before hours of work, not at the first save."""
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".write-test-{os.getpid()}"  # two runs starting at once never share it
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as e:
            raise TrainingError(f"cannot write to {folder}: {e.strerror or e}. Choose another output "
                                "folder or free disk space.") from e


def _check_resume_fits(cfg: TrainConfig, saved_config: dict, state_dir) -> None:
    current, defaults = cfg.to_dict(), TrainConfig().to_dict()
    # a key the saved config lacks (a state from before the setting existed) had its default
    differ = [k for k in RESUME_MUST_MATCH if saved_config.get(k, defaults[k]) != current[k]]
    if differ:
        details = ", ".join(f"{k}: {saved_config.get(k)!r} -> {current[k]!r}" for k in differ)
        raise TrainingError(f"cannot resume from {state_dir}: these settings differ from the stopped "
                            f"run ({details}); set them back or start a new run")


def _restore(resumed: saved.SavedState, trained: dict, optimizer, scheduler, noise_rng, caption_rng) -> None:
    params = _named_trainable(trained)
    missing = set(params) - set(resumed.trainable)
    if missing:
        raise TrainingError(f"saved state lacks {len(missing)} LoRA weights (e.g. {sorted(missing)[0]}); "
                            "it belongs to a different network")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(resumed.trainable[name].to(param.dtype))
    optimizer.load_state_dict(resumed.optimizer)
    scheduler.load_state_dict(resumed.scheduler)
    saved.restore_rng(resumed.rng, noise_rng, caption_rng)


def _ema(cfg: TrainConfig, trained: dict, resumed: saved.SavedState | None, events: EventLog) -> LoraEMA | None:
    """The EMA of the LoRA weights when ema_decay asks for one; a resumed run continues its own."""
    if not cfg.ema_decay:
        return None
    ema = LoraEMA(_named_trainable(trained), cfg.ema_decay, cfg.ema_update_every)
    if resumed is not None and resumed.ema is not None:
        ema.load_state_dict(resumed.ema)
    elif resumed is not None:
        events.emit(layout.WARNING, message="the state being resumed has no EMA of the weights (ema_decay was 0 "
                                            "when it was saved): the EMA starts from the resumed weights")
    return ema


def _named_trainable(trained: dict) -> dict[str, torch.nn.Parameter]:
    return {f"{component}/{name}": p for component, m in trained.items()
            for name, p in m.named_parameters() if p.requires_grad}


@contextlib.contextmanager
def _optimizer_eval_mode(optimizer):
    optimizer.eval()
    try:
        yield
    finally:
        optimizer.train()


def _stop_requested(stop: StopSignal, accelerator: Accelerator) -> bool:
    """Every rank must stop at the same step: the flag is reduced across processes."""
    flag = torch.tensor(1.0 if stop.requested() else 0.0, device=accelerator.device)
    return accelerator.reduce(flag, reduction="sum").item() > 0


def _learning_rates(scheduler, optimizer) -> dict[str, float]:
    """Each param group's current rate by its name ("unet", "textencoder", and LoRA+'s "..._up")."""
    if adafactor_sets_own_lr(optimizer):
        rates = scheduler.get_lr()
    else:
        rates = scheduler.get_last_lr()
    # a state saved before the groups had names loads without them: the order was unet, textencoder
    fallback = ("unet", "textencoder")
    names = [group.get("name") or (fallback[i] if i < 2 else f"group{i}") for i, group in enumerate(optimizer.param_groups)]
    return {name: float(rate) for name, rate in zip(names, rates)}


# --- saving --------------------------------------------------------------------------------------

def _save_lora_file(cfg: TrainConfig, accelerator: Accelerator, trained: dict, batches: TrainingBatches,
                    progress: saved.Progress, path: Path, output_name: str | None = None) -> Path | None:
    if not accelerator.is_main_process:
        return None
    tensors = collect_network_tensors(trained, UNetLayout.from_config(trained["unet"].config))
    metadata = lora_metadata(
        output_name=output_name or cfg.output_name, network_dim=cfg.network_dim, network_alpha=cfg.network_alpha,
        epoch=progress.epoch, steps=progress.global_step, num_train_images=batches.num_samples,
        resolution=cfg.resolution, learning_rate=cfg.learning_rate, unet_lr=cfg.unet_learning_rate,
        text_encoder_lr=cfg.text_encoder_learning_rate if cfg.train_text_encoder else None,
        optimizer=cfg.optimizer, lr_scheduler=cfg.lr_scheduler, model_name=batches.model_name,
        training_started_at=progress.started_at, tag_frequency=batches.tag_frequency,
        bucket_info=batches.bucket_info,
        extra={"seed": cfg.seed, "num_epochs": cfg.max_train_epochs, "batch_size_per_device": cfg.train_batch_size,
               "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
               "mixed_precision": cfg.mixed_precision, "full_bf16": cfg.full_bf16, "full_fp16": cfg.full_fp16,
               "noise_offset": cfg.noise_offset, "min_snr_gamma": cfg.min_snr_gamma,
               "ema_decay": cfg.ema_decay, "ema_update_every": cfg.ema_update_every,
               "max_token_length": cfg.max_token_length, "no_half_vae": cfg.sdxl_no_half_vae,
               "caption_extension": cfg.caption_extension, "training_comment": cfg.training_comment,
               "num_processes": accelerator.num_processes, "fp8_base": cfg.fp8_base})
    metadata.update(network_metadata(cfg))
    save_lora(path, tensors, metadata, cfg.save_precision)
    write_json_atomic(RunFiles(cfg.output_dir, cfg.output_name).config, cfg.to_dict())
    return path


def _rank_checksums(trained: dict, accelerator: Accelerator) -> list[float]:
    """Every rank must hold the same LoRA (DDP averages the gradients); a divergence would make the
    saved file depend on which rank wrote it, so it stops the run instead."""
    local = torch.stack([p.detach().double().sum() for p in _named_trainable(trained).values()]).sum()
    checksums = accelerator.gather(local.reshape(1).to(accelerator.device)).tolist()
    if any(abs(c - checksums[0]) > 1e-6 * max(1.0, abs(checksums[0])) for c in checksums):
        raise TrainingError(f"the processes' LoRA weights differ (checksums {checksums}); "
                            "this is a bug in the distributed set-up, please report it")
    return checksums


def _save_state(cfg: TrainConfig, accelerator: Accelerator, trained: dict, optimizer, scheduler,
                progress: saved.Progress, noise_rng, caption_rng, dataset: dict | None = None,
                ema: dict | None = None) -> None:
    files = RunFiles(cfg.output_dir, cfg.output_name)
    final_dir, tmp_dir = files.state_dir, files.state_tmp
    try:
        if accelerator.is_main_process:
            saved.write_main_state(tmp_dir, trainable=_named_trainable(trained), optimizer=optimizer,
                                   scheduler=scheduler, progress=progress, config=cfg.to_dict(), dataset=dataset,
                                   ema=ema)
        accelerator.wait_for_everyone()
        saved.write_rank_rng(tmp_dir, accelerator.process_index, saved.capture_rng(noise_rng, caption_rng))
    except OSError as e:
        shutil.rmtree(tmp_dir, ignore_errors=True)  # give the space back; the previous state is untouched
        raise OutputError(e.errno, f"cannot write the training state {e.filename or tmp_dir}: "
                                   f"{e.strerror or e}") from e
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        saved.commit_state(tmp_dir, final_dir)
    accelerator.wait_for_everyone()


def _save_final_copy(cfg: TrainConfig, last_epoch_file: Path) -> Path:
    """The last epoch also as `<name>.safetensors`; epoch files themselves are never overwritten."""
    final = RunFiles(cfg.output_dir, cfg.output_name).final_lora
    with atomic_path(final) as tmp:
        shutil.copyfile(last_epoch_file, tmp)
    return final


def _output_message(cfg: TrainConfig, error: OutputError, saved_files: list[Path] = ()) -> str:
    state_dir = RunFiles(cfg.output_dir, cfg.output_name).state_dir
    if error.errno == errno.ENOSPC:
        cause = "the disk is full"
    elif error.errno == errno.ENAMETOOLONG:
        cause = f"output_name {cfg.output_name!r} is too long for this folder"
    else:
        cause = "the folder cannot be written"
    kept = (f"The files saved before this one are intact (the last: {Path(saved_files[-1]).name})"
            if saved_files else "No LoRA file of this run had been saved yet")
    resume = (f"; free some space, then continue from the last saved state with --resume ({state_dir})"
              if (state_dir / saved.STATE_FILE).is_file() else "")
    return f"{error.strerror} ({cause}). {kept}{resume}."


def _nan_message(cfg: TrainConfig, progress: saved.Progress, result: TrainResult) -> str:
    last = result.saved_files[-1] if result.saved_files else None
    kept = f"the last good file is {last}" if last else "no epoch had finished, so no file was saved"
    # Latents are checked when they are cached, so a half VAE (sdxl_no_half_vae false) cannot cause this.
    tries = [f"a lower learning rate (now {cfg.unet_learning_rate})"]
    if cfg.mixed_precision == "fp16":
        tries.append("mixed_precision bf16 instead of fp16 if the GPU has it")
    if cfg.full_fp16:
        tries.append("full_fp16 = False (LoRA weights in fp32)")
    if not cfg.max_grad_norm:
        tries.append("max_grad_norm 1.0 (gradient clipping is off)")
    return (f"the loss became NaN/inf at step {progress.global_step + 1} (epoch {progress.epoch + 1}); "
            f"training stopped and {kept}. Try {', or '.join(tries)}.")


def _fail(events: EventLog, kind: str, message: str) -> TrainingError:
    events.emit(layout.ERROR, kind=kind, message=message)
    return TrainingError(message)
