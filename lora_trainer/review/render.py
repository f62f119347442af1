"""A grid rendered cell by cell through the host's `render(job)`: progress after each cell, a stop
between cells that keeps the finished ones, and a cell that fails (a LoRA the host cannot load) shown
as its error while the others render. No torch here: the host renders."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lora_trainer.review.spec import GridSpec, RenderError, RenderJob

CellKey = tuple[int, int, int]  # (seed index, row, column)
CellResult = Any  # a PIL image, or the error text of a cell that failed


class Renders(Protocol):
    def render(self, job: RenderJob) -> Any: ...


@dataclass
class GridResult:
    spec: GridSpec
    cells: dict[CellKey, CellResult] = field(default_factory=dict)
    stopped: bool = False
    cell_seconds: list[float] = field(default_factory=list)  # host.render's time, per rendered cell
    total_seconds: float = 0.0

    @property
    def errors(self) -> dict[CellKey, str]:
        return {key: value for key, value in self.cells.items() if isinstance(value, str)}

    @property
    def overhead_seconds(self) -> float:
        """Time spent outside host.render (checks, callbacks, bookkeeping)."""
        return max(0.0, self.total_seconds - sum(self.cell_seconds))

    @property
    def complete(self) -> bool:
        return not self.stopped and len(self.cells) == len(self.spec.cells())


OnCell = Callable[[int, int, CellKey, CellResult], None]


def describe_cell(spec: GridSpec, key: CellKey) -> str:
    s, r, c = key
    return f"seed {spec.seeds[s]}, row {spec.rows[r].label!r}, column {spec.columns[c].label!r}"


def render_grid(spec: GridSpec, host: Renders, *, on_cell: OnCell | None = None,
                stop: threading.Event | None = None) -> GridResult:
    """Render every cell of `spec` in `spec.cells()` order through `host.render`.

    `on_cell(done, total, key, result)` follows each cell. A set `stop` ends the grid before the next
    cell (`stopped`, finished cells kept). A RenderError becomes that cell's error text; any other
    exception ends the grid as a RenderError naming the cell."""
    started = time.perf_counter()
    result = GridResult(spec)
    cells = spec.cells()
    try:
        for done, (s, r, c, job) in enumerate(cells, start=1):
            if stop is not None and stop.is_set():
                result.stopped = True
                break
            key = (s, r, c)
            render_cell(result, key, job, host)
            if on_cell is not None:
                on_cell(done, len(cells), key, result.cells[key])
    finally:
        result.total_seconds = time.perf_counter() - started
    return result


def render_cell(result: GridResult, key: CellKey, job: RenderJob, host: Renders) -> CellResult:
    """Render one cell into `result.cells[key]` (its image, or its error text: a missing LoRA file or
    a RenderError); any other exception becomes a RenderError naming the cell (`result.spec`'s)."""
    missing = _missing_lora(job)
    if missing:
        result.cells[key] = missing
        return missing
    t0 = time.perf_counter()
    try:
        result.cells[key] = host.render(job)
    except RenderError as e:
        result.cells[key] = str(e) or type(e).__name__
    except Exception as e:
        raise RenderError(f"rendering failed at {describe_cell(result.spec, key)}: "
                          f"{type(e).__name__}: {e}") from e
    finally:
        result.cell_seconds.append(time.perf_counter() - t0)
    return result.cells[key]


def _missing_lora(job: RenderJob) -> str:
    if job.lora is None:
        return ""
    path = Path(job.lora.path)
    return "" if path.is_file() else f"LoRA file not found: {path}"
