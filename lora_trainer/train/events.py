"""A JSON-lines event stream (one object per line) that a UI or script can follow while training runs.

The kinds and their fields are declared in `runs/layout.py` (EVENT_FIELDS), which the UI reads by; an
event that does not match its declaration is refused here, so the two sides cannot drift apart.
Every line carries "event" and "time"; writes are flushed at once so `tail -f` and the UI see them live.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lora_trainer.runs.layout import check_event

EventCallback = Callable[[dict[str, Any]], None]


class EventLog:
    def __init__(self, path: str | Path | None = None, callback: EventCallback | None = None):
        self.path = Path(path) if path else None
        self.callback = callback
        self._file = None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        check_event(event, fields)
        record = {"event": event, "time": round(time.time(), 3), **fields}
        if self._file:
            try:
                self._file.write(json.dumps(record) + "\n")
                self._file.flush()
            except OSError:  # e.g. the disk filled up: the run's own error must still reach the caller
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None
        if self.callback:
            self.callback(record)
        return record

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """All complete events in a stream (a line still being written is skipped)."""
    events = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
