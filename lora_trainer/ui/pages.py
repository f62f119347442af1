"""What the panels keep per open page, and the project a page names.

A gradio timer call sends no inputs (gradio 4.40's page warns for every one that does), so a panel
keeps what each open page shows (its project, the grid it holds, ...) by the page's session; the
newest MAX_PAGES are kept."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

import gradio as gr

from lora_trainer.host import Host
from lora_trainer.project import Project, open_project

MAX_PAGES = 1000
State = TypeVar("State")


class PageStates(Generic[State]):
    def __init__(self, make: Callable[[], State]):
        self._make = make
        self._states: OrderedDict[str, State] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, request: gr.Request | None) -> State:
        """The state of the page that made this call (a new page gets a new one)."""
        session = getattr(request, "session_hash", None) or ""
        with self._lock:
            state = self._states.get(session)
            if state is None:
                state = self._states[session] = self._make()
                while len(self._states) > MAX_PAGES:
                    self._states.popitem(last=False)
            self._states.move_to_end(session)
            return state


def chosen_project(host: Host, name: str | None) -> Project:
    """The project a picker names; ValueError when none is chosen or the name is not a project's."""
    name = (name or "").strip()
    if not name:
        raise ValueError("choose a project")
    return open_project(host.workspace(), name)
