"""A live review grid: the columns are a run's epochs, each rendered as the training saves it.

`LiveGrid` follows a run through three callables: `saved_columns()` (the epoch columns saved so far),
`running()` (the training still goes on) and `room()` (whether a render fits beside the training now,
`decide_room`). A saved epoch renders at once when there is room ("live"); else it waits ("queued")
until there is, or until the training ends, when every column left renders. Columns grow to the right,
so the keys of finished cells stay those of `GridSpec.cells()` of the grid that grows. No torch and no
gradio at import.
"""

from __future__ import annotations

import json
import math
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lora_trainer.review.render import CellKey, CellResult, GridResult, Renders, render_cell
from lora_trainer.review.spec import Column, GridSpec, LoraRef, RenderSettings, Row

GIB = 1024 ** 3
# Free memory kept beyond a render's estimate, for the training's own peaks while it renders.
ROOM_MARGIN_BYTES = 1 * GIB
# What a 1024x1024 SDXL render needs beyond its weights: U-Net activations for a CFG batch of two
# latents of 128x128 (attention included) and the VAE decoding the image, in fp16.
ACTIVATIONS_1024_BYTES = 2 * GIB
# An SDXL checkpoint's fp16 weights (2.6 G U-Net + 0.8 G text encoders + 0.08 G VAE parameters, 2 bytes
# each, about 6.5 GiB) plus ACTIVATIONS_1024_BYTES: the estimate when the checkpoint cannot be read.
DEFAULT_SDXL_NEED_BYTES = 9 * GIB
_MAX_HEADER = 100_000_000

LIVE, QUEUED, ENDED = "live", "queued", "ended"  # LiveGrid.mode


@dataclass(frozen=True)
class RenderRoom:
    live: bool  # a render fits now beside the training
    reason: str  # a sentence for the user


def decide_room(free_bytes: int | None, need_bytes: int, device: str) -> RenderRoom:
    """Live only when `device`'s free memory is known and holds a render (`need_bytes`) plus
    ROOM_MARGIN_BYTES; else queued (the columns wait for the training to end)."""
    need = f"a render needs about {_gib(need_bytes)}"
    later = "the columns render when the training ends or is stopped"
    if free_bytes is None:
        return RenderRoom(False, f"queued: free memory on {device} unknown, {need}; {later}")
    where = f"{_gib(free_bytes)} free on {device}, {need}"
    if free_bytes >= need_bytes + ROOM_MARGIN_BYTES:
        return RenderRoom(True, f"live: {where}")
    return RenderRoom(False, f"queued: {where}; {later}")


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def render_need_bytes(checkpoint_path: str | Path) -> int:
    """About what a 1024 px render of `checkpoint_path` takes on its device: its weights as fp16
    (parameters x 2 bytes, counted from the safetensors headers; the file size for any other file, or
    a diffusers folder's weight files) + ACTIVATIONS_1024_BYTES. DEFAULT_SDXL_NEED_BYTES when there is
    no such file."""
    path = Path(checkpoint_path)
    if path.is_dir():
        files = [p for p in path.rglob("*.safetensors") if p.is_file()]
    else:
        files = [path] if path.is_file() else []
    if not files:
        return DEFAULT_SDXL_NEED_BYTES
    return sum(_fp16_bytes(p) for p in files) + ACTIVATIONS_1024_BYTES


def _fp16_bytes(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > _MAX_HEADER:
                raise ValueError("not a safetensors header")
            header = json.loads(f.read(length))
        return sum(2 * math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    except (OSError, ValueError, struct.error, KeyError, TypeError, AttributeError):
        return path.stat().st_size


def free_render_memory() -> tuple[int | None, str]:
    """(bytes free, device) where a standalone render runs: the first CUDA GPU, else this machine's RAM."""
    import torch

    if torch.cuda.is_available():
        try:
            return torch.cuda.mem_get_info(0)[0], "cuda:0"
        except RuntimeError:
            return None, "cuda:0"
    import psutil

    return psutil.virtual_memory().available, "cpu"


# --- a run's epochs as columns -------------------------------------------------------------------

def run_epoch_columns(model_dir: str | Path, output_name: str,
                      name_of: Callable[[Path], str] | None = None) -> list[Column]:
    """The epoch files `output_name` has saved in `model_dir` so far, as columns in epoch order;
    `name_of(path)` is the name the host lists a file under (Forge publishes it), the stem by default."""
    from lora_trainer.runs.layout import EPOCH
    from lora_trainer.runs.lora_files import project_lora_files

    files = [f for f in project_lora_files(Path(model_dir)) if f.output_name == output_name and f.kind == EPOCH]
    name_of = name_of or (lambda path: path.stem)
    return [Column(f"epoch {f.epoch}", LoraRef(f.path, name_of(f.path)), epoch=f.epoch, step=f.step)
            for f in sorted(files, key=lambda f: (f.epoch, f.step))]


def epoch_columns_source(model_dir: str | Path, output_name: str,
                         name_of: Callable[[Path], str] | None = None) -> Callable[[], list[Column]]:
    """`saved_columns` for a LiveGrid: `run_epoch_columns`, with `name_of` called once per file."""
    names: dict[Path, str] = {}

    def named(path: Path) -> str:
        if path not in names:
            names[path] = name_of(path) if name_of else path.stem
        return names[path]

    return lambda: run_epoch_columns(model_dir, output_name, named)


# --- the grid that grows -------------------------------------------------------------------------

OnLiveCell = Callable[[int, int, CellKey, CellResult], None]  # (done, total so far, key, cell)
OnColumn = Callable[[GridSpec, dict], None]  # (the grid so far, its cells), after each finished column
OnMode = Callable[[str, str], None]  # (mode, reason), when the mode changes


class LiveGrid:
    """A grid whose columns are a run's epochs, rendered as they are saved (see the module's doc).

    `mode` and `reason` say what it does now: LIVE (rendering beside the training), QUEUED (waiting
    for room or for the training to end) or ENDED (the training ended: rendering what is left); ""
    before anything was to render; `on_mode(mode, reason)` follows each change of mode. `run()`
    returns the grid (None when no column was started)."""

    def __init__(self, *, rows: list[Row], seeds: list[int], settings: RenderSettings, baseline: bool,
                 saved_columns: Callable[[], list[Column]], running: Callable[[], bool],
                 room: Callable[[], RenderRoom], host: Renders, stop: threading.Event | None = None,
                 on_cell: OnLiveCell | None = None, on_column: OnColumn | None = None,
                 on_mode: OnMode | None = None, poll_s: float = 2.0, sleep: Callable[[float], None] | None = None):
        if not rows or not seeds:
            raise ValueError("a grid needs at least one row and one seed")
        self.rows, self.seeds, self.settings = list(rows), list(seeds), settings
        self.saved_columns, self.running, self.room, self.host = saved_columns, running, room, host
        self.stop = stop or threading.Event()
        self.on_cell, self.on_column, self.on_mode, self.poll_s = on_cell, on_column, on_mode, poll_s
        self.sleep = sleep or self.stop.wait
        self.mode, self.reason = "", ""
        self.columns: list[Column] = []  # started (rendered, or rendering), left to right
        self.queued: list[Column] = [Column("no LoRA", None)] if baseline else []
        self._seen: set[Path] = set()
        self.result: GridResult | None = None
        self._done = 0

    @property
    def spec(self) -> GridSpec | None:
        return GridSpec(list(self.columns), self.rows, self.seeds, self.settings) if self.columns else None

    def run(self) -> GridResult | None:
        """Render until the training has ended and every saved column is in, or until `stop`."""
        while not self.stop.is_set():
            running = self.running()  # before listing: a file saved just before the end is listed
            self._take_new_columns()
            if self.queued and (not running or self._has_room()):
                if not running:
                    self._set_mode(ENDED, "ended: the training is over; rendering the columns left")
                self._render_column(self.queued.pop(0))
            elif not running:
                break
            else:
                self.sleep(self.poll_s)
        if self.result is not None and self.stop.is_set():
            self.result.stopped = True
        return self.result

    def _take_new_columns(self) -> None:
        for column in self.saved_columns():
            path = Path(column.lora.path).resolve() if column.lora is not None else None
            if path is not None and path not in self._seen:
                self._seen.add(path)
                self.queued.append(column)

    def _has_room(self) -> bool:
        room = self.room()
        self._set_mode(LIVE if room.live else QUEUED, room.reason)
        return room.live

    def _set_mode(self, mode: str, reason: str) -> None:
        changed = mode != self.mode
        self.mode, self.reason = mode, reason
        if changed and self.on_mode is not None:
            self.on_mode(mode, reason)

    def _render_column(self, column: Column) -> None:
        self.columns.append(column)
        spec = self.spec
        if self.result is None:
            self.result = GridResult(spec)
        self.result.spec = spec
        c = len(self.columns) - 1
        total = len(self.rows) * len(self.seeds) * (len(self.columns) + len(self.queued))
        started = time.perf_counter()
        try:
            for s, r, _c, job in (cell for cell in spec.cells() if cell[2] == c):
                if self.stop.is_set():
                    return
                value = render_cell(self.result, (s, r, c), job, self.host)
                self._done += 1
                if self.on_cell is not None:
                    self.on_cell(self._done, total, (s, r, c), value)
        finally:
            self.result.total_seconds += time.perf_counter() - started
        if self.on_column is not None:
            self.on_column(spec, self.result.cells)
