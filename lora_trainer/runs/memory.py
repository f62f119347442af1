"""The GPU memory a run would need, asked of a `python -m lora_trainer memory --serve` process.

The estimate builds SDXL's models without weights and traces its blocks (train/vram.py): seconds of
torch and diffusers work that has no place in the WebUI's process (the standalone UI does not even
import torch). One worker process answers them, so its imports (~5 s) are paid once; it ends after
IDLE_S unused, or with the WebUI (its stdin closes). Answers are kept per settings, so a page load or an
unchanged form costs nothing.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

from lora_trainer.host import subprocess_env

TIMEOUT_S = 300  # the first estimate of a full-size SDXL on a busy 2-core machine takes ~30 s
KEPT_ANSWERS = 64
IDLE_S = 300.0  # an unused worker ends: it holds torch and diffusers (~0.5 GB)
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
    """Asks the worker for the estimate of a config, one at a time, and remembers the answers."""

    def __init__(self, python_command: list[str], gpu_gib: float | None = None):
        self.python_command = list(python_command)  # the host's `python -m lora_trainer`
        self.gpu_gib = gpu_gib  # judge against a GPU of this size instead of this machine's
        self.worker = EstimateWorker([*self.python_command, "memory", "--serve"])
        self._answers: OrderedDict[str, MemoryReport] = OrderedDict()
        self._lock = threading.Lock()

    def estimate(self, settings: dict, model_config_dir: str | Path | None = None) -> MemoryReport:
        request = {"settings": settings, "gpu_gib": self.gpu_gib,
                   "model_config_dir": str(model_config_dir) if model_config_dir else None}
        key = json.dumps({**request, "settings": {k: v for k, v in settings.items() if k not in NOT_MEMORY}},
                         sort_keys=True)
        with self._lock:  # one estimate at a time: each is a few seconds of both cores
            if key in self._answers:
                self._answers.move_to_end(key)
                return self._answers[key]
            report = self.worker.ask(json.dumps(request, sort_keys=True))
            if report.summary is not None:  # not a failure that may pass (a config folder found later)
                self._answers[key] = report
                while len(self._answers) > KEPT_ANSWERS:
                    self._answers.popitem(last=False)
            return report


class EstimateWorker:
    """One `memory --serve` process: started by the first question, a request line in and a report line
    out, ended after `idle_s` without a question; one that died or hung is replaced at the next."""

    def __init__(self, command: list[str], idle_s: float = IDLE_S, timeout_s: float = TIMEOUT_S):
        self.command = command
        self.idle_s = idle_s
        self.timeout_s = timeout_s
        self.process: subprocess.Popen | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=20)
        self._idle: threading.Timer | None = None
        self._lock = threading.Lock()

    def ask(self, request: str) -> MemoryReport:
        with self._lock:
            if self._idle is not None:
                self._idle.cancel()
            try:
                report = self._ask(request)
            finally:
                self._idle = threading.Timer(self.idle_s, self.close)
                self._idle.daemon = True
                self._idle.start()
            return report

    def _ask(self, request: str) -> MemoryReport:
        try:
            process = self._running()
            process.stdin.write(request + "\n")
            process.stdin.flush()
        except OSError as e:  # not started, or gone before the question (a broken pipe)
            self._end()
            return MemoryReport(None, error=f"could not run {self.command[0]}: {e}")
        try:
            line = self._lines.get(timeout=self.timeout_s)
        except queue.Empty:
            self._end(kill=True)
            return MemoryReport(None, error=f"the estimate took over {self.timeout_s:g} s and was stopped")
        if line is None:  # the worker ended instead of answering
            code = self._end()
            last = self._stderr[-1] if self._stderr else f"exit code {code}"
            return MemoryReport(None, error=f"the estimate failed: {last}")
        try:
            answer = json.loads(line)
        except json.JSONDecodeError:
            self._end()
            return MemoryReport(None, error=f"the estimate failed: {line.strip()[:200]}")
        return MemoryReport(answer["summary"], answer["total_bytes"], answer["gpu_name"], answer["gpu_bytes"],
                            list(answer["fixes"]), answer["error"])

    def _running(self) -> subprocess.Popen:
        if self.process is not None and self.process.poll() is None:
            return self.process
        self._lines = queue.Queue()  # a new process's answers only
        self._stderr.clear()
        self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, bufsize=1, env=subprocess_env())
        threading.Thread(target=_read_answers, args=(self.process.stdout, self._lines), daemon=True).start()
        threading.Thread(target=_read_stderr, args=(self.process.stderr, self._stderr), daemon=True).start()
        return self.process

    def close(self) -> None:
        """End the worker (the next question starts another)."""
        with self._lock:
            self._end()

    def _end(self, kill: bool = False) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        try:
            if kill:
                raise subprocess.TimeoutExpired(self.command, 0)
            process.stdin.close()  # a worker between questions ends on its own
            return process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            return process.wait()


def _read_answers(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)  # the worker ended


def _read_stderr(stream, last: deque) -> None:
    for line in stream:  # read all of it: a full pipe would stop the worker
        last.append(line.rstrip("\n"))
