"""The GPU memory a run would need, asked of `python -m lora_trainer memory` in its own process.

The estimate builds SDXL's models without weights and traces its blocks (train/vram.py): seconds of
torch and diffusers work that has no place in the WebUI's process (the standalone UI does not even
import torch). Answers are kept per settings, so a page load or an unchanged form costs nothing.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from lora_trainer.host import subprocess_env

TIMEOUT_S = 300  # the first estimate of a full-size SDXL on a busy 2-core machine takes ~30 s
KEPT_ANSWERS = 64
# Settings that change what a run learns or where it writes, never what it holds on the GPU: a form that
# changes only these (epochs, a name, a learning rate) keeps its answer instead of asking again.
NOT_MEMORY = frozenset({
    "output_dir", "logging_dir", "output_name", "training_comment", "seed", "learning_rate", "unet_lr",
    "text_encoder_lr", "loraplus_lr_ratio", "lr_scheduler", "lr_warmup", "lr_warmup_steps",
    "lr_scheduler_num_cycles", "lr_scheduler_power", "max_grad_norm", "max_train_epochs", "max_train_steps",
    "save_every_n_epochs", "save_precision", "noise_offset", "multires_noise_iterations",
    "multires_noise_discount", "min_snr_gamma", "debiased_estimation_loss", "loss_type", "huber_schedule",
    "huber_c", "keep_tokens", "caption_dropout_rate", "caption_dropout_every_n_epochs", "flip_aug",
    "validation_seed", "validate_every_n_epochs", "ema_update_every", "ema_save",
})


@dataclass(frozen=True)
class MemoryReport:
    summary: str | None  # "about 9.9 GiB peak (U-Net weights 4.8, ...); fits in 24.0 GiB", None on error
    total_bytes: int | None = None
    gpu_name: str | None = None  # None: no CUDA GPU here (and no --gpu-gib)
    gpu_bytes: int | None = None
    fixes: list[str] = field(default_factory=list)  # single changes that make it fit ("<change>: about N GiB")
    error: str | None = None


class MemoryEstimator:
    """Runs `memory --json` for a config, one at a time, and remembers the answers."""

    def __init__(self, python_command: list[str], gpu_gib: float | None = None):
        self.python_command = list(python_command)  # the host's `python -m lora_trainer`
        self.gpu_gib = gpu_gib  # judge against a GPU of this size instead of this machine's
        self._answers: OrderedDict[str, MemoryReport] = OrderedDict()
        self._lock = threading.Lock()

    def estimate(self, settings: dict, model_config_dir: str | Path | None = None) -> MemoryReport:
        command = [*self.python_command, "memory", "--json", "--config", "-"]
        if model_config_dir:
            command += ["--model-config-dir", str(model_config_dir)]
        if self.gpu_gib is not None:
            command += ["--gpu-gib", str(self.gpu_gib)]
        stdin = json.dumps(settings, sort_keys=True)
        key = json.dumps([command, {k: v for k, v in settings.items() if k not in NOT_MEMORY}], sort_keys=True)
        with self._lock:  # one estimate at a time: each is a few seconds of both cores
            if key in self._answers:
                self._answers.move_to_end(key)
                return self._answers[key]
            report = _ask(command, stdin)
            if report.summary is not None:  # not a failure that may pass (a config folder found later)
                self._answers[key] = report
                while len(self._answers) > KEPT_ANSWERS:
                    self._answers.popitem(last=False)
            return report


def _ask(command: list[str], stdin: str) -> MemoryReport:
    try:
        done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=TIMEOUT_S,
                              env=subprocess_env())
    except subprocess.TimeoutExpired:
        return MemoryReport(None, error=f"the estimate took over {TIMEOUT_S} s and was stopped")
    except OSError as e:
        return MemoryReport(None, error=f"could not start {command[0]}: {e}")
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return MemoryReport(None, error=f"the estimate failed: {last}")
    return MemoryReport(answer["summary"], answer["total_bytes"], answer["gpu_name"], answer["gpu_bytes"],
                        list(answer["fixes"]), answer["error"])
