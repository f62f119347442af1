"""Stop requests: a flag file (works on every OS and from another process or the UI) or Ctrl-C.

The loop checks `requested()` after each optimizer step, finishes that step, saves the LoRA and the
full training state, and exits cleanly; a second Ctrl-C falls back to Python's default (abort).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from lora_trainer.runs.layout import RunFiles, request_stop

__all__ = ["StopSignal", "request_stop", "stop_flag_path"]


def stop_flag_path(output_dir: str | Path, output_name: str) -> Path:
    return RunFiles(output_dir, output_name).stop_flag


class StopSignal:
    def __init__(self, flag_file: str | Path, handle_sigint: bool = True):
        self.flag_file = Path(flag_file)
        self._sigint = False
        self._previous_handler = None
        if handle_sigint and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame):
        self._sigint = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C aborts

    def requested(self) -> bool:
        return self._sigint or self.flag_file.exists()

    def clear(self) -> None:
        self._sigint = False
        self.flag_file.unlink(missing_ok=True)

    def close(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None
