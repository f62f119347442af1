"""Optimizer and learning-rate schedule from the config's kohya_ss names."""

from __future__ import annotations

import importlib.util

import torch
from diffusers.optimization import get_scheduler
from transformers.optimization import Adafactor, AdafactorSchedule


class OptimizerUnavailable(RuntimeError):
    """The chosen optimizer needs a package that is not installed."""


def _needs(module: str, optimizer: str, pip_name: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise OptimizerUnavailable(
            f"optimizer {optimizer} needs the '{pip_name}' package, which is not installed: "
            f"`pip install {pip_name}` (in the WebUI's Python environment when training in the WebUI), "
            "or choose AdamW or Adafactor"
        )


def build_optimizer(name: str, param_groups: list[dict], lr: float, kwargs: dict,
                    warmup_steps: int = 0) -> torch.optim.Optimizer:
    """`param_groups` carry their own "lr" (U-Net and text encoders differ); `lr` is the default.
    `warmup_steps` reaches only an optimizer that schedules itself (schedule-free AdamW)."""
    if name == "AdamW":
        return torch.optim.AdamW(param_groups, lr=lr, **kwargs)
    if name == "Adafactor":
        # transformers' defaults, as kohya uses them: relative_step=True means Adafactor picks its own
        # lr (the configured one is ignored); "relative_step=False" in optimizer_args gives a fixed lr.
        options = {"scale_parameter": True, "relative_step": True, "warmup_init": False, **kwargs}
        if options["relative_step"]:
            for group in param_groups:
                group["lr"] = None
        return Adafactor(param_groups, lr=None if options["relative_step"] else lr, **options)
    if name == "AdamW8bit":
        _needs("bitsandbytes", name, "bitsandbytes")
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(param_groups, lr=lr, **kwargs)
    if name == "Prodigy":
        _needs("prodigyopt", name, "prodigyopt")
        from prodigyopt import Prodigy

        return Prodigy(param_groups, lr=lr, **kwargs)
    if name == "AdamWScheduleFree":
        _needs("schedulefree", name, "schedulefree")
        from schedulefree import AdamWScheduleFree

        # It trains on one sequence of weights and evaluates (and saves) their average: the trainer
        # switches it with train() / eval(); no schedule on top (the config asks for "constant").
        return AdamWScheduleFree(param_groups, lr=lr, warmup_steps=warmup_steps, **kwargs)
    raise ValueError(f"unknown optimizer {name!r}")


def adafactor_sets_own_lr(optimizer: torch.optim.Optimizer) -> bool:
    return isinstance(optimizer, Adafactor) and bool(optimizer.defaults["relative_step"])


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int,
                    num_cycles: int, power: float, initial_lr: float) -> torch.optim.lr_scheduler.LRScheduler:
    if name == "adafactor" and adafactor_sets_own_lr(optimizer):
        # Adafactor schedules itself; this proxy only reports its lr for logging.
        return AdafactorSchedule(optimizer, initial_lr=initial_lr)
    if name == "adafactor":  # a fixed-lr Adafactor: nothing to schedule
        name = "constant"
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps,
                         num_cycles=num_cycles, power=power)
