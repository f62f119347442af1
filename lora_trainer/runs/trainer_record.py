"""The trainer process a UI started, written down in its project (`log/trainer.pid.json`), so that a
UI that restarts while the training goes on finds it again: it follows the run, can stop it, and
refuses a second start on the same files.

A record names the process by its pid and its start time (psutil, on every OS), so a later process
that happens to get the same pid is never taken for the trainer. A record whose process is gone is
stale: reading it deletes it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from lora_trainer.fsutil import write_json_atomic

# What `RecordedProcess.poll()` answers once the process has ended: it is not our child, so its exit
# status cannot be read; the run's events tell how it ended.
EXIT_UNKNOWN = -(2 ** 31)
# Start times are read from the OS clock-tick counters; the same process always gives the same value,
# a process that got the pid later gives a later one.
_START_TIME_TOLERANCE_S = 1.0


@dataclass(frozen=True)
class TrainerRecord:
    pid: int
    started: float  # the process's start time (psutil.Process.create_time)
    project_root: str
    project_name: str
    repeats: int
    config_file: str
    config: dict[str, Any]  # the settings the run started with (the project's config file may change)
    launched_at: float  # time.time() just before the launch; the run's events are at or after it
    log_offset: int  # where this run's output begins in the project's trainer.log
    run_dir: str | None = None  # the run's log folder when known at launch (resume)


def process_start_time(pid: int) -> float | None:
    """The start time of process `pid`, or None if there is no such process."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def write_record(path: Path, record: TrainerRecord) -> None:
    write_json_atomic(path, asdict(record))


def read_record(path: Path) -> TrainerRecord | None:
    """The record in `path`; None if there is none or it cannot be read."""
    try:
        return TrainerRecord(**json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def remove_record(path: Path, pid: int) -> None:
    """Delete the record if it names process `pid` (a newer run's record is left alone)."""
    record = read_record(path)
    if record is None or record.pid == pid:
        with contextlib.suppress(OSError):
            Path(path).unlink()


def live_trainer(path: Path) -> tuple[TrainerRecord, RecordedProcess] | None:
    """The recorded trainer and its process, if it still runs; a stale record is deleted."""
    if not Path(path).is_file():
        return None
    record = read_record(path)
    process = RecordedProcess.find(record.pid, record.started) if record else None
    if process is None:
        remove_record(path, record.pid if record else -1)
        return None
    return record, process


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class RecordedProcess:
    """A trainer that an earlier UI process started, with the part of `subprocess.Popen` the runner
    uses (pid, poll, wait, kill). Not our child: `poll()` gives EXIT_UNKNOWN once it has ended."""

    def __init__(self, process: psutil.Process):
        self._process = process
        self.pid = process.pid
        self.returncode: int | None = None

    @classmethod
    def find(cls, pid: int, started: float) -> RecordedProcess | None:
        """The running process `pid` if it is the one that started at `started`, else None."""
        try:
            process = psutil.Process(pid)
            if abs(process.create_time() - started) > _START_TIME_TOLERANCE_S:
                return None  # the pid now belongs to another process
        except psutil.Error:
            return None
        return cls(process) if _alive(process) else None

    def poll(self) -> int | None:
        if self.returncode is None and not _alive(self._process):
            self.returncode = EXIT_UNKNOWN
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            self._process.wait(timeout)
        except psutil.TimeoutExpired as e:
            if self.poll() is None:  # a zombie never goes away while its parent lives: it has ended
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout) from e
        except psutil.Error:
            pass
        return self.poll()

    def kill(self) -> None:
        with contextlib.suppress(psutil.Error):
            self._process.kill()
