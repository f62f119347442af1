"""Reading a training process from outside: its events.jsonl as it grows, the tail of its console
log, and the `RunStatus` the UI shows, made from both.

The trainer writes one JSON object per line into `<logging_dir>/<run name>/events.jsonl` (its kinds
and fields: `runs/layout.py`); the runner (`runs/runner.py`) follows it with `EventFollower` and turns what it
read into a `RunStatus` with `fill_progress` and `outcome`. No gradio, no subprocess here.
"""

from __future__ import annotations

import json
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_trainer.runs import layout
from lora_trainer.runs.layout import CACHING, ERROR, FINISHED, START, STEP, STOPPED
from lora_trainer.runs.trainer_record import EXIT_UNKNOWN

ACTIVE_STATES = ("starting", "running", "stopping")
LOG_TAIL_LINES = 20
_LOG_TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class SavedLora:
    path: Path
    name: str  # the name a prompt uses, as the host published it
    kind: str  # layout.EPOCH, layout.STOP (saved when stopped) or layout.FINAL (<name>.safetensors)
    epoch: int
    step: int
    output_name: str = ""  # the run's output name (files are grouped by it)

    @property
    def prompt(self) -> str:
        return f"<lora:{self.name}:1>"


@dataclass
class RunStatus:
    state: str = "idle"  # idle, starting, running, stopping, stopped, finished, failed
    message: str = "no training started yet"
    project: str = ""
    output_name: str = ""
    epoch: int = 0  # the epoch being trained (1-based), or the last one when the run ended
    epochs: int = 0
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    average_loss: float | None = None
    learning_rates: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    eta_s: float | None = None
    saved: list[SavedLora] = field(default_factory=list)
    losses: list[tuple[int, float, float]] = field(default_factory=list)  # (step, loss, average), whole run
    warnings: list[str] = field(default_factory=list)  # the trainer's (captions missing, ...)
    publish_problems: list[str] = field(default_factory=list)  # saved files the host could not take
    error: str = ""
    log_tail: str = ""
    log_file: Path | None = None
    run_dir: Path | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


class EventFollower:
    """Reads an events.jsonl as it grows; a line still being written waits for the next poll."""

    def __init__(self, path: Path):
        self.path = path
        self.events: list[dict[str, Any]] = []
        self._position = 0
        self._partial = b""

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._position)
                data = f.read()
        except FileNotFoundError:
            return
        self._position += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            try:
                self.events.append(json.loads(line))
            except json.JSONDecodeError:
                continue


def find_new_run_dir(logging_dir: Path, output_name: str, launched_at: float) -> Path | None:
    """The run folder a trainer started at or after `launched_at` created (the newest if several)."""
    launched = layout.run_folder_stamp(layout.run_folder_name(output_name, launched_at), output_name)
    found = []
    for events in Path(logging_dir).glob(f"*/{layout.EVENTS_FILE}"):
        stamp = layout.run_folder_stamp(events.parent.name, output_name)
        if stamp and stamp >= launched:
            found.append(events.parent)
    return max(found, key=lambda p: p.name) if found else None


def read_log_tail(path: Path, offset: int, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last lines written to the log after `offset`; progress-bar redraws (\\r) count as lines."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(offset, size - _LOG_TAIL_BYTES))
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return [line.rstrip() for line in re.split(r"[\r\n]+", text) if line.strip()][-lines:]


def fill_progress(status: RunStatus, events: list[dict], all_events: list[dict]) -> None:
    """Counters, loss and ETA from this launch's events; the loss curve from the whole run."""
    starts = [e for e in events if e["event"] == START]
    if starts:
        status.total_steps, status.epochs = starts[-1]["total_steps"], starts[-1]["epochs"]
    steps = [e for e in events if e["event"] == STEP]
    if steps:
        last = steps[-1]
        status.step, status.epoch = last["step"], last["epoch"]
        status.loss, status.average_loss = last["loss"], last["average_loss"]
        status.learning_rates = dict(last.get("lr", {}))
    elif starts and starts[-1].get("resumed_at_step"):
        status.step = starts[-1]["resumed_at_step"]
    if len(steps) >= 2 and steps[-1]["time"] > steps[0]["time"]:
        rate = (steps[-1]["step"] - steps[0]["step"]) / (steps[-1]["time"] - steps[0]["time"])
        status.eta_s = max(status.total_steps - status.step, 0) / rate if rate > 0 else None
    curve = {e["step"]: (e["loss"], e["average_loss"]) for e in all_events if e["event"] == STEP}
    status.losses = [(step, *curve[step]) for step in sorted(curve)]


def outcome(status: RunStatus, events: list[dict], tail: list[str], *, returncode: int | None,
            stop_requested: bool, output_dir: str) -> tuple[str, str, str]:
    """(state, message, error) of a run whose process ended with `returncode` (None: still running;
    EXIT_UNKNOWN: ended, but not our child, so its exit code is unknown)."""
    kinds = {e["event"] for e in events}
    if returncode is None:
        return _progress(status, events, kinds, stop_requested)
    if STOPPED in kinds:
        return "stopped", (f"stopped at step {status.step}/{status.total_steps}; "
                           "Resume continues from there"), ""
    if returncode == 0 or (returncode == EXIT_UNKNOWN and FINISHED in kinds):
        return "finished", (f"finished: {status.epoch} epoch(s), {status.step} steps; the LoRA files are "
                            f"in {output_dir}"), ""
    error = _error_message(events, tail, returncode)
    return "failed", f"failed: {error}", error


def _progress(status: RunStatus, events: list[dict], kinds: set[str], stop_requested: bool) -> tuple[str, str, str]:
    state = "stopping" if stop_requested else "running"
    if START not in kinds:
        caching = [e for e in events if e["event"] == CACHING and e["total"]]
        doing = f"caching latents {caching[-1]['done']}/{caching[-1]['total']}" if caching else \
            "loading the model and checking the dataset"
        return state, f"{'stopping: ' if stop_requested else ''}{doing}", ""
    where = f"epoch {status.epoch}/{status.epochs}, step {status.step}/{status.total_steps}"
    return state, (f"stopping after this step ({where})" if stop_requested else where), ""


def _error_message(events: list[dict], tail: list[str], returncode: int) -> str:
    errors = [e["message"] for e in events if e["event"] == ERROR]
    if errors:
        return errors[-1]
    printed = [line[len("error: "):] for line in tail if line.startswith("error: ")]
    if printed:
        return printed[-1]
    last = tail[-1] if tail else ""
    if returncode == EXIT_UNKNOWN:
        return ("the training process ended without saying why (it was started before the UI restarted, "
                "so its exit code is unknown)" + (f"; its last output: {last}" if last else ""))
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        hint = " (out of system memory?)" if -returncode == getattr(signal, "SIGKILL", 9) else ""
        return f"the training process was killed by {name}{hint}"
    return f"the training process exited with code {returncode}" + (f": {last}" if last else "")
