"""Reading a training process from outside: its events.jsonl as it grows, the tail of its console
log, and the `RunStatus` the UI shows, made from both.

The trainer writes one JSON object per line into `<logging_dir>/<run name>/events.jsonl` (its kinds
and fields: `runs/layout.py`); the runner (`runs/runner.py`) follows it with `EventFollower` and turns what it
read into a `RunStatus` with `fill_progress` and `outcome`. A run no runner follows (it ended before
the UI restarted, or ran headless) is read back from its files by `last_run_status`. No gradio, no
subprocess here.
"""

from __future__ import annotations

import functools
import json
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_trainer.project import Project
from lora_trainer.runs import layout
from lora_trainer.runs.layout import CACHING, ERROR, FINISHED, START, STEP, STOPPED, RunFiles
from lora_trainer.runs.trainer_record import EXIT_UNKNOWN, RecordedProcess

ACTIVE_STATES = ("starting", "running", "stopping")
TERMINAL_EVENTS = (STOPPED, FINISHED, ERROR)  # the last event of a launch that ended by itself
LOG_TAIL_LINES = 20
_LOG_TAIL_BYTES = 64 * 1024
# The line the runner writes into trainer.log before each launch; what follows is that launch's output.
_LOG_HEADER_STAMP = "%Y-%m-%d %H:%M:%S"
_LOG_HEADER = re.compile(r"^=== (?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?:start|resume): .*$", re.MULTILINE)
# A tqdm bar as the trainer draws it: "name:  25%|██▌       | 8/32 [00:11<00:33,  1.4s/step, loss=1.1]"
_PROGRESS_BAR = re.compile(r"\d+%\|[^|\n]*\| *[\d.]+[kMGT]?/[\d.]+[kMGT]? \[[^\]\n]*\]")


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
    validation: list[tuple[int, float]] = field(default_factory=list)  # (epoch, loss on held-out images)
    warnings: list[str] = field(default_factory=list)  # the trainer's (captions missing, ...)
    publish_problems: list[str] = field(default_factory=list)  # saved files the host could not take
    error: str = ""
    log_tail: str = ""
    log_file: Path | None = None
    run_dir: Path | None = None
    elsewhere: str = ""  # a run going on in another project ("training in project B: epoch 2/4, ...")

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
    return max(found, key=lambda p: layout.run_folder_order(p.name, output_name)) if found else None


def log_header(resume: bool, command: list[str], now: float | None = None) -> str:
    """The line the runner writes into trainer.log before a launch (`last_run_status` finds the last
    launch's output by it)."""
    stamp = time.strftime(_LOG_HEADER_STAMP, time.localtime(time.time() if now is None else now))
    return f"\n=== {stamp} {'resume' if resume else 'start'}: {' '.join(command)}\n"


def read_log_tail(path: Path, offset: int, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last lines written to the log after `offset`, as a terminal would show them (`screen_lines`)."""
    text = _read_tail(path, offset)
    return screen_lines(text)[-lines:] if text else []


def _read_tail(path: Path, offset: int = 0) -> str:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(offset, size - _LOG_TAIL_BYTES))
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def screen_lines(text: str) -> list[str]:
    """A console log's lines as a terminal shows them: of a line a progress bar redrew with \\r, its
    last drawing only; a line printed right after a redraw (no newline between, as `print` does
    while tqdm's bar is on screen) on a line of its own after that bar. Blank lines are left out."""
    shown = []
    for line in text.split("\n"):
        drawings = [part for part in line.split("\r") if part.strip()]
        if not drawings:
            continue
        last = drawings[-1].rstrip()
        bar = _PROGRESS_BAR.search(last)
        if bar and last[bar.end():].strip():
            shown += [last[:bar.end()], last[bar.end():].strip()]
        else:
            shown.append(last)
    return shown


def last_log_block(path: Path) -> tuple[float | None, list[str]]:
    """(the time in the header of the last launch in trainer.log, that launch's last lines); the time is
    None when no header is in the log's tail (then the lines are the tail's)."""
    text = _read_tail(path)
    headers = list(_LOG_HEADER.finditer(text))
    if not headers:
        return None, screen_lines(text)[-LOG_TAIL_LINES:]
    last = headers[-1]
    try:
        started = time.mktime(time.strptime(last["stamp"], _LOG_HEADER_STAMP))
    except ValueError:
        started = None
    return started, screen_lines(text[last.end():])[-LOG_TAIL_LINES:]


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of a finished or growing events.jsonl (a line still being written is left out)."""
    try:
        stat = Path(path).stat()
    except OSError:
        return []
    return list(_parsed_events(str(path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=16)
def _parsed_events(path: str, _mtime_ns: int, _size: int) -> tuple[dict[str, Any], ...]:
    """Cached per file version: the UI reads a project's last run every second."""
    follower = EventFollower(Path(path))
    follower.poll()
    return tuple(follower.events)


def last_launch(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events of the last launch in a run's events (a resumed run appends to its stopped one's):
    from its "launch" event, or (a run written before that event existed) those after the terminal
    event (stopped, finished, error) that ended the launch before it."""
    launches = [i for i, e in enumerate(events) if e.get("event") == layout.LAUNCH]
    if launches:
        return events[launches[-1]:]
    ends = [i for i, e in enumerate(events) if e.get("event") in TERMINAL_EVENTS]
    if ends and ends[-1] == len(events) - 1:
        ends.pop()  # the last launch's own end
    return events[ends[-1] + 1:] if ends else list(events)


def newest_run_dir(logging_dir: Path) -> Path | None:
    """The run folder (one with an events.jsonl) written last in `logging_dir`."""
    found = []
    for events in Path(logging_dir).glob(f"*/{layout.EVENTS_FILE}"):
        try:
            found.append((events.stat().st_mtime, events.parent.name, events.parent))
        except OSError:
            continue
    return max(found)[2] if found else None


def live_launch(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The "launch" event of a launch that has not ended and whose process still runs (a trainer
    started from the command line, or by another UI), else None."""
    launch = next((e for e in events if e.get("event") == layout.LAUNCH), None)
    if launch is None or any(e["event"] in TERMINAL_EVENTS for e in events):
        return None
    if not launch["process_started"] or not RecordedProcess.find(launch["pid"], launch["process_started"]):
        return None
    return launch


def outside_run(project: Project) -> dict[str, Any] | None:
    """The "launch" event of a trainer that runs in `project` and that no runner of ours follows."""
    run_dir = newest_run_dir(project.log)
    return live_launch(last_launch(read_events(layout.events_file(run_dir)))) if run_dir else None


def last_run_status(project: Project) -> RunStatus:
    """The project's last run as its files tell it, for a run no runner follows (it ended before the UI
    restarted, or ran headless): stopped, finished or failed, with its counters, loss curve and the
    end of its console output (`log/trainer.log`); idle when the project has no run. The run is the
    newest run folder in log/ (its events.jsonl), or a launch in trainer.log after it that wrote no
    events (a trainer that failed while loading)."""
    run_dir = newest_run_dir(project.log)
    launched, tail = last_log_block(project.trainer_log)
    if run_dir is None and not tail:
        return RunStatus(project=project.name, message="no training started in this project yet")
    every = read_events(layout.events_file(run_dir)) if run_dir else []
    events = last_launch(every)
    first = events[0]["time"] if events else None
    if first is not None and tail:
        if launched is not None and launched > events[-1]["time"] + 1:  # a later launch that wrote no events
            run_dir, every, events, first = None, [], [], None
        elif (launched is not None and launched > first + 1) or _modified(project.trainer_log) < first:
            # The trainer prints as it writes events: a log that went quiet before the launch's first
            # event is another launch's output (this one ran headless).
            tail = []
    status = RunStatus(project=project.name, log_file=project.trainer_log, run_dir=run_dir,
                       log_tail="\n".join(tail), output_name=_output_name(run_dir, every),
                       warnings=[e["message"] for e in events if e["event"] == layout.WARNING])
    fill_progress(status, events, every)
    if events:  # from the launch (when its header is known) or its first event to its last event
        status.elapsed_s = events[-1]["time"] - (launched if launched is not None and tail else first)
    running = live_launch(events)
    if running:  # started outside this UI and still going: its counters, and where it runs
        stop_requested = RunFiles(running["output_dir"], running["output_name"]).stop_flag.exists()
        status.state, message, _ = outcome(status, events, [], returncode=None, stop_requested=stop_requested,
                                           output_dir=running["output_dir"])
        status.message = f"running outside this UI (process {running['pid']}): {message}"
        status.elapsed_s = time.time() - events[0]["time"]
        return status
    status.state, status.message, status.error = outcome(
        status, events, tail, returncode=EXIT_UNKNOWN, stop_requested=False,
        output_dir=str(project.model.resolve()),
        unknown_end="it ended without a word (its process was killed, or the computer stopped)")
    status.eta_s = None
    return status


def _modified(path: Path) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


def _output_name(run_dir: Path | None, events: list[dict[str, Any]]) -> str:
    """The run's output name: its launch says it; a run from before that event, the file names its
    saved LoRAs have (matched with its folder name)."""
    for event in reversed(events):
        if event["event"] == layout.LAUNCH:
            return event["output_name"]
    for event in reversed(events):
        if event["event"] in (layout.SAVED, FINISHED):
            name = layout.parse_lora_stem(Path(event["path"]).stem)[0]
            if run_dir is None or layout.run_folder_stamp(run_dir.name, name):
                return name
    return ""


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
    held_out = {e["epoch"]: e["loss"] for e in all_events if e["event"] == layout.VALIDATION}
    status.validation = sorted(held_out.items())


def outcome(status: RunStatus, events: list[dict], tail: list[str], *, returncode: int | None,
            stop_requested: bool, output_dir: str, unknown_end: str = "") -> tuple[str, str, str]:
    """(state, message, error) of a run whose process ended with `returncode` (None: still running;
    EXIT_UNKNOWN: ended, but not our child, so its exit code is unknown; `unknown_end` then says
    what that means when neither its events nor its output tell why)."""
    kinds = {e["event"] for e in events}
    if returncode is None:
        return _progress(status, events, kinds, stop_requested)
    if STOPPED in kinds:
        return "stopped", (f"stopped at step {status.step}/{status.total_steps}; "
                           "Resume continues from there"), ""
    if returncode == 0 or (returncode == EXIT_UNKNOWN and FINISHED in kinds):
        return "finished", (f"finished: {status.epoch} epoch(s), {status.step} steps; the LoRA files are "
                            f"in {output_dir}"), ""
    error = _error_message(events, tail, returncode, unknown_end)
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


def _error_message(events: list[dict], tail: list[str], returncode: int, unknown_end: str = "") -> str:
    errors = [e["message"] for e in events if e["event"] == ERROR]
    if errors:
        return errors[-1]
    printed = [line[len("error: "):] for line in tail if line.startswith("error: ")]
    if printed:
        return printed[-1]
    last = tail[-1] if tail else ""
    if returncode == EXIT_UNKNOWN:
        why = unknown_end or ("the training process ended without saying why (it was started before the UI "
                              "restarted, so its exit code is unknown)")
        return why + (f"; its last output: {last}" if last else "")
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        hint = " (out of system memory?)" if -returncode == getattr(signal, "SIGKILL", 9) else ""
        return f"the training process was killed by {name}{hint}"
    return f"the training process exited with code {returncode}" + (f": {last}" if last else "")
