"""A review grid rendered in a background thread, as the Review panel runs it: a fixed grid
(`render_grid`) or a live one (`LiveGrid`, its columns a training run's epochs as they are saved).
The grid is saved into the run's review folder as it grows (after each column of a live grid, at the
end of a fixed one, stopped or not), and `version` counts the saves, so every open page can show the
newest. No gradio."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_trainer.project import Project
from lora_trainer.review.grid import infotext, save_grid
from lora_trainer.review.live import LiveGrid
from lora_trainer.review.render import GridResult, Renders, render_grid
from lora_trainer.review.saved import GRID_NAME, SavedGrid, new_grid_folder
from lora_trainer.review.scores import GridScores
from lora_trainer.review.scoring import png_text, save_scores
from lora_trainer.review.spec import GridSpec


def progress_text(done: int, total: int, elapsed: float) -> str:
    if done == 0:
        return f"cell 0/{total}: starting (the first cell loads the model)"
    left = elapsed / done * (total - done)
    return f"cell {done}/{total}, about {left:.0f} s left"


def gallery_items(saved: SavedGrid, rendered: dict | None = None) -> list[tuple[Any, str]]:
    """The grid, then each rendered cell captioned with its generation parameters, as PIL images; the
    cells already in memory (`rendered`, a job's) are not read back from their files."""
    from PIL import Image

    items = []
    for key in saved.keys:
        image = (rendered or {}).get(key)
        if not isinstance(image, Image.Image):
            with Image.open(saved.grid if key is None else saved.cells[key]) as opened:
                image = opened.copy()
        items.append((image, "grid" if key is None else infotext(saved.job(key))))
    return items


@dataclass
class GridJob:
    number: int
    project: Project
    output_name: str
    spec: GridSpec | None = None  # a fixed grid's; a live grid's as it grows (None before its first column)
    live: LiveGrid | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    cells: dict = field(default_factory=dict)
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: bool = False
    stopped: bool = False
    error: str = ""
    saved: SavedGrid | None = None
    gallery: list = field(default_factory=list)
    version: int = 0  # how many times the grid was saved
    folder: Path | None = None
    result: GridResult | None = None  # the cells' render times (benchmarks)
    # Scoring (review/scoring.py): a thread of its own measures each cell while the next one renders
    # (the host renders on the GPU, scoring is CPU work); the scores are saved with each save of the
    # grid. The scorer is made in that thread, so loading its models never holds up a page.
    make_scorer: Callable[[], Any] | None = None
    run_dir: Path | None = None  # where the run keeps its copy of the scores
    scorer: Any = None
    scores: GridScores | None = None
    chart: Path | None = None
    score_error: str = ""
    score_seconds: float = 0.0  # time spent measuring (benchmarks)
    score_wait_seconds: float = 0.0  # of it, time the grid's saves waited for (benchmarks)
    _score_lock: threading.Lock = field(default_factory=threading.Lock)
    _score_wake: threading.Event = field(default_factory=threading.Event)
    _scoring: threading.Thread | None = None

    def __post_init__(self):
        if self.spec is not None:
            self.total = len(self.spec.cells())

    def start(self, host: Renders) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(host,), daemon=True, name="lora-trainer-review")
        thread.start()
        return thread

    def run(self, host: Renders) -> None:
        try:
            if self.live is not None:
                self._run_live()
            else:
                self.result = render_grid(self.spec, host, on_cell=self._on_cell, stop=self.stop)
                self.stopped = self.result.stopped
        except Exception as e:  # a RenderError naming the cell, or anything the host raised
            self.error = str(e) or type(e).__name__
        self._save()
        self.finished = True

    def _run_live(self) -> None:
        live = self.live
        live.stop, live.on_cell, live.on_column = self.stop, self._on_cell, self._on_column
        self.result = live.run()
        self.spec = live.spec
        self.stopped = self.stop.is_set() or bool(self.result and self.result.stopped)

    def _on_cell(self, done: int, total: int, key, result) -> None:
        self.cells[key] = result
        self.done, self.total = done, total
        if self.make_scorer is not None:
            self._score_wake.set()
            if self._scoring is None:
                self._scoring = threading.Thread(target=self._score_while_rendering, daemon=True,
                                                 name="lora-trainer-scoring")
                self._scoring.start()

    def _score_while_rendering(self) -> None:
        while not self.finished and not self.score_error:
            if self._score_wake.wait(0.5):
                self._score_wake.clear()
                self._measure()

    def _on_column(self, spec: GridSpec, cells: dict) -> None:
        self.spec = spec
        self._save()

    def _save(self) -> None:
        if self.spec is None or not self.cells:
            return
        scores = self._scores_now()
        try:
            self.folder = self.folder or new_grid_folder(self.project.review, self.output_name)
            files = save_grid(self.spec, dict(self.cells), self.folder, GRID_NAME,
                              png_text(scores) if scores is not None else None)
            saved = SavedGrid.from_files(self.spec, files)
            self.gallery = gallery_items(saved, self.cells)  # a live grid saves after every column
            self.saved = saved
        except Exception as e:
            self.error = (self.error + "; " if self.error else "") + f"could not save the grid: {e}"
            return
        if scores is not None:
            try:
                self.chart = save_scores(scores, files.grid, self.run_dir, in_grid=False)
            except Exception as e:  # a full disk: the grid stands without its scores
                self.score_error = f"scoring stopped: {e}"
        self.version += 1

    def _measure(self) -> None:
        """Measure the cells not measured yet (one thread at a time: each cell is measured once)."""
        if self.spec is None or self.make_scorer is None or self.score_error:
            return
        with self._score_lock:
            started = time.monotonic()
            try:
                if self.scorer is None:
                    self.scorer = self.make_scorer()
                self.scores = self.scorer.score(self.spec, dict(self.cells))
            except Exception as e:  # a model that fails on an image: the grid stands without scores
                self.score_error = f"scoring stopped: {e}"
            self.score_seconds += time.monotonic() - started

    def _scores_now(self) -> GridScores | None:
        """The scores of every cell rendered so far (the save waits for the cells not measured yet)."""
        if self.make_scorer is None:
            return None
        started = time.monotonic()
        self._measure()
        self.score_wait_seconds += time.monotonic() - started
        return None if self.score_error else self.scores

    def status(self) -> str:
        mode = f"{self.live.reason}; " if self.live is not None and self.live.reason and not self.finished else ""
        if not self.finished:
            if self.live is not None and self.live.mode == "queued":
                text = f"{self.done} cells rendered, waiting"
            else:
                text = progress_text(self.done, self.total, time.monotonic() - self.started)
            return mode + text + (" (stopping after this cell)" if self.stop.is_set() else "")
        parts = [f"cell {self.done}/{self.total}"]
        if self.stopped:
            parts.append("stopped")
        if self.error:
            parts.append(f"ended: {self.error}")
        if self.saved:
            parts.append(f"saved {self.saved.grid}")
        if self.score_error:
            parts.append(self.score_error)
        return ", ".join(parts)
