"""One training run at a time in its own process, for the UI: start, follow, stop, resume, publish.

The trainer runs as `python -m lora_trainer train --config <project>/<name>.json` in a child process,
so an out-of-memory error or a crash ends that process and never the WebUI. Its console output goes
to `<project>/log/trainer.log`; its progress is read from the run's `events.jsonl` (see
`train/events.py`), which the trainer writes line by line. Every LoRA the run saves is handed to
`host.publish_lora` so the WebUI lists it while training goes on.

No gradio here: the UI (`lora_trainer/ui/`) calls these functions and shows the `RunStatus`.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.host import Host, subprocess_env
from lora_trainer.project import Project
from lora_trainer.train.stop import request_stop, stop_flag_path

ACTIVE_STATES = ("starting", "running", "stopping")
LOG_TAIL_LINES = 20
_LOG_TAIL_BYTES = 64 * 1024
_RUN_STAMP = re.compile(r"\d{14}")  # the trainer names run folders <output_name><YYYYmmddHHMMSS>


class RunnerError(RuntimeError):
    """What the user asked cannot be done now (a run is already going, nothing to resume, ...)."""


@dataclass(frozen=True)
class SavedLora:
    path: Path
    name: str  # the name a prompt uses, as the host published it
    kind: str  # "epoch", "stop" (saved when stopped) or "final" (<name>.safetensors)
    epoch: int
    step: int

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


# --- settings for a project ------------------------------------------------------------------------

def config_for_project(project: Project, settings: dict[str, Any], model: str) -> TrainConfig:
    """`settings` (TrainConfig field names) with the project's folders and the base model filled in;
    validated, so a wrong value raises ConfigError naming its key."""
    model = (model or "").strip()
    if not model:
        raise ConfigError("pretrained_model_name_or_path is empty: choose a base model "
                          "(an SDXL .safetensors checkpoint)")
    if Path(model).exists():
        model = str(Path(model).resolve())
    root = project.root.resolve()
    project = Project(root, project.name, project.repeats)
    return TrainConfig.from_dict({**settings, "pretrained_model_name_or_path": model,
                                  "train_data_dir": str(project.img), "output_dir": str(project.model),
                                  "logging_dir": str(project.log)})


def load_project_settings(project: Project) -> dict[str, Any]:
    """The project's saved settings (validated); ConfigError if the file is missing or wrong."""
    return TrainConfig.from_json(project.config_file).to_dict()


def tensorboard_command(project: Project) -> str:
    folder = str(project.log.resolve())
    return f'tensorboard --logdir "{folder}"' if re.search(r"[\s'\"]", folder) else f"tensorboard --logdir {folder}"


# --- following a run's events ----------------------------------------------------------------------

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
    stamp = time.strftime("%Y%m%d%H%M%S", time.localtime(int(launched_at)))
    found = []
    for events in Path(logging_dir).glob("*/events.jsonl"):
        name = events.parent.name
        suffix = name[len(output_name):]
        if name.startswith(output_name) and _RUN_STAMP.fullmatch(suffix) and suffix >= stamp:
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


# --- the runner ------------------------------------------------------------------------------------

@dataclass
class _Run:
    project: Project
    config: TrainConfig
    process: subprocess.Popen
    launched_at: float
    log_offset: int
    run_dir: Path | None = None  # known at once on resume; found when the trainer creates it otherwise
    follower: EventFollower | None = None
    returncode: int | None = None
    ended_at: float | None = None
    stop_requested: bool = False
    saved: list[SavedLora] = field(default_factory=list)
    handled: set[Path] = field(default_factory=set)  # saved files already handed to the host
    publish_problems: list[str] = field(default_factory=list)


class TrainRunner:
    """Starts and follows one training process at a time. Thread-safe: UI callbacks and the watcher
    thread (which publishes saved LoRAs even when no page is open) share it."""

    def __init__(self, host: Host, poll_interval: float = 1.0):
        self.host = host
        self.poll_interval = poll_interval
        self._lock = threading.RLock()
        self._run: _Run | None = None
        self._starting: str | None = None  # "project: output name" while the host frees its memory

    # --- commands ---
    def start(self, project: Project, config: TrainConfig, *, resume: bool = False) -> RunStatus:
        """Write the config into the project, free the host's GPU memory, and launch the trainer;
        RunnerError if a run is going or starting."""
        with self._lock:
            self._refresh()
            if self._starting or (self._run and self._run.returncode is None):
                busy = self._starting or f"{self._run.project.name}: {self._run.config.output_name}"
                raise RunnerError(f"a training run is already in progress ({busy}); "
                                  "stop it or wait until it ends")
            project.create()
            config.save_json(project.config_file)
            run_dir = self._resume_run_dir(config) if resume else None
            self._starting = f"{project.name}: {config.output_name}"
        try:
            # Outside the lock: the host may wait for its own work (Forge: a generation in progress),
            # and status() must keep answering meanwhile.
            self._free_host_memory()
            with self._lock:
                self._starting = None
                self._begin(project, config, resume, run_dir)
                return self._status()
        finally:
            self._starting = None

    def _free_host_memory(self) -> None:
        try:
            self.host.free_memory()
        except Exception as e:  # noqa: BLE001 - whatever the host raises, the user gets a message
            raise RunnerError(f"could not free {self.host.name}'s GPU memory before training: {e}") from e

    def _begin(self, project: Project, config: TrainConfig, resume: bool, run_dir: Path | None) -> None:
        previous, self._run = self._run, self._launch(project, config, resume, run_dir)
        if resume and previous and (previous.project.root, previous.config.output_name) == \
                (project.root, config.output_name):
            # A resumed run's saved files go on from the stopped one's.
            self._run.saved, self._run.handled = list(previous.saved), set(previous.handled)
            self._run.publish_problems = list(previous.publish_problems)
        threading.Thread(target=self._watch, args=(self._run,), daemon=True,
                         name="lora-trainer-run-watch").start()

    def stop(self) -> RunStatus:
        """Ask the run to finish its step, save the LoRA and its state, and exit."""
        with self._lock:
            self._refresh()
            run = self._run
            if self._starting:
                raise RunnerError("the trainer is still starting; press Stop again in a moment")
            if not run or run.returncode is not None:
                raise RunnerError("no training is running")
            request_stop(run.config.output_dir, run.config.output_name)
            run.stop_requested = True
            return self._status()

    def status(self) -> RunStatus:
        with self._lock:
            self._refresh()
            return self._status()

    def kill(self) -> None:
        """End the process at once, without saving (for shutdown and tests; Stop is the user's way)."""
        with self._lock:
            run = self._run
            if run and run.process.poll() is None:
                run.process.kill()
                run.process.wait()
                self._refresh()

    def command(self, config_file: Path, resume: bool) -> list[str]:
        command = self.host.trainer_command() + ["train", "--config", str(config_file)]
        if resume:
            command.append("--resume")
        config_dir = self.host.sdxl_config_dir()
        if config_dir:
            command += ["--model-config-dir", str(config_dir)]
        return command

    # --- launching ---
    def _launch(self, project: Project, config: TrainConfig, resume: bool, run_dir: Path | None) -> _Run:
        command = self.command(project.config_file.resolve(), resume)
        project.trainer_log.parent.mkdir(parents=True, exist_ok=True)
        with open(project.trainer_log, "ab") as log:
            offset = log.tell()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n=== {stamp} {'resume' if resume else 'start'}: {' '.join(command)}\n".encode())
            log.flush()
            launched_at = time.time()
            try:
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, env=subprocess_env())
            except OSError as e:
                raise RunnerError(f"cannot start the trainer ({command[0]}): {e.strerror or e}") from e
        run = _Run(project=project, config=config, process=process, launched_at=launched_at,
                   log_offset=offset, run_dir=run_dir)
        if run_dir:
            run.follower = EventFollower(run_dir / "events.jsonl")
        return run

    @staticmethod
    def _resume_run_dir(config: TrainConfig) -> Path:
        """The log folder of the stopped run (its curves continue there); RunnerError if none."""
        from lora_trainer.train.state import PROGRESS_FILE, state_dir_for  # torch: only when resuming

        state_dir = state_dir_for(config.output_dir, config.output_name)
        try:
            progress = json.loads((state_dir / PROGRESS_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise RunnerError(f"nothing to resume for {config.output_name!r}: {state_dir} holds no saved "
                              "state (a run writes it when it stops or saves an epoch); press Start") from e
        return Path(config.logging_dir) / progress["run_name"]

    def _watch(self, run: _Run) -> None:
        while True:
            with self._lock:
                if self._run is not run:
                    return
                self._refresh()
                if run.returncode is not None:
                    return
            try:
                run.process.wait(timeout=self.poll_interval)
            except subprocess.TimeoutExpired:
                pass

    # --- following ---
    def _refresh(self) -> None:
        run = self._run
        if run is None or (run.returncode is not None and run.ended_at is not None):
            return
        returncode = run.process.poll()  # before reading events: an ended process has written them all
        if run.follower is None:
            found = find_new_run_dir(Path(run.config.logging_dir), run.config.output_name, run.launched_at)
            if found:
                run.run_dir, run.follower = found, EventFollower(found / "events.jsonl")
        if run.follower:
            run.follower.poll()
        self._publish_new(run)
        if returncode is None:
            if run.stop_requested and not self._has_event(run, "stopped"):
                # The trainer clears a stale flag as it starts: a Stop pressed while it was still
                # loading must be asked again, or it would be lost.
                if not stop_flag_path(run.config.output_dir, run.config.output_name).exists():
                    request_stop(run.config.output_dir, run.config.output_name)
            return
        run.returncode, run.ended_at = returncode, time.time()
        stop_flag_path(run.config.output_dir, run.config.output_name).unlink(missing_ok=True)

    def _events_since_launch(self, run: _Run) -> list[dict[str, Any]]:
        if not run.follower:
            return []
        return [e for e in run.follower.events if e.get("time", 0) >= run.launched_at]

    def _has_event(self, run: _Run, kind: str) -> bool:
        return any(e["event"] == kind for e in self._events_since_launch(run))

    def _publish_new(self, run: _Run) -> None:
        for event in self._events_since_launch(run):
            if event["event"] not in ("saved", "finished") or Path(event["path"]) in run.handled:
                continue
            path = Path(event["path"])
            run.handled.add(path)
            kind = event.get("kind", "epoch") if event["event"] == "saved" else "final"
            epoch = event.get("epoch", event.get("epochs", 0))
            step = event.get("step", event.get("steps", 0))
            try:
                name = self.host.publish_lora(path)
            except Exception as e:  # noqa: BLE001 - a host problem must not stop following the run
                run.publish_problems.append(f"{path}: could not make it available to {self.host.name}: {e}")
                continue
            run.saved.append(SavedLora(path=path, name=name, kind=kind, epoch=epoch, step=step))

    # --- the status ---
    def _status(self) -> RunStatus:
        run = self._run
        if self._starting:
            return RunStatus(state="starting", project=self._starting.split(": ", 1)[0],
                             message=f"freeing {self.host.name}'s GPU memory before the trainer starts "
                             "(waits for a generation in progress)")
        if run is None:
            return RunStatus()
        events = self._events_since_launch(run)
        status = RunStatus(project=run.project.name, output_name=run.config.output_name,
                           saved=list(run.saved), log_file=run.project.trainer_log, run_dir=run.run_dir,
                           warnings=[e["message"] for e in events if e["event"] == "warning"],
                           publish_problems=list(run.publish_problems))
        _fill_progress(status, events, run.follower.events if run.follower else [])
        status.elapsed_s = (run.ended_at or time.time()) - run.launched_at
        tail = read_log_tail(run.project.trainer_log, run.log_offset)
        status.log_tail = "\n".join(tail)
        status.state, status.message, status.error = _outcome(run, events, tail, status)
        if not status.active:
            status.eta_s = None
        return status


def _fill_progress(status: RunStatus, events: list[dict], all_events: list[dict]) -> None:
    """Counters, loss and ETA from this launch's events; the loss curve from the whole run."""
    starts = [e for e in events if e["event"] == "start"]
    if starts:
        status.total_steps, status.epochs = starts[-1]["total_steps"], starts[-1]["epochs"]
    steps = [e for e in events if e["event"] == "step"]
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
    curve = {e["step"]: (e["loss"], e["average_loss"]) for e in all_events if e["event"] == "step"}
    status.losses = [(step, *curve[step]) for step in sorted(curve)]


def _outcome(run: _Run, events: list[dict], tail: list[str], status: RunStatus) -> tuple[str, str, str]:
    """(state, message, error) of the run."""
    kinds = {e["event"] for e in events}
    if run.returncode is None:
        state = "stopping" if run.stop_requested else "running"
        if "start" not in kinds:
            caching = [e for e in events if e["event"] == "caching" and e["total"]]
            doing = f"caching latents {caching[-1]['done']}/{caching[-1]['total']}" if caching else \
                "loading the model and checking the dataset"
            return state, f"{'stopping: ' if run.stop_requested else ''}{doing}", ""
        where = f"epoch {status.epoch}/{status.epochs}, step {status.step}/{status.total_steps}"
        return state, (f"stopping after this step ({where})" if run.stop_requested else where), ""
    if "stopped" in kinds:
        return "stopped", (f"stopped at step {status.step}/{status.total_steps}; "
                           "Resume continues from there"), ""
    if run.returncode == 0:
        return "finished", (f"finished: {status.epoch} epoch(s), {status.step} steps; the LoRA files are "
                            f"in {run.config.output_dir}"), ""
    error = _error_message(events, tail, run.returncode)
    return "failed", f"failed: {error}", error


def _error_message(events: list[dict], tail: list[str], returncode: int) -> str:
    errors = [e["message"] for e in events if e["event"] == "error"]
    if errors:
        return errors[-1]
    printed = [line[len("error: "):] for line in tail if line.startswith("error: ")]
    if printed:
        return printed[-1]
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        hint = " (out of system memory?)" if -returncode == getattr(signal, "SIGKILL", 9) else ""
        return f"the training process was killed by {name}{hint}"
    last = tail[-1] if tail else ""
    return f"the training process exited with code {returncode}" + (f": {last}" if last else "")
