"""The grids the Review saved for a run, read back: `<project>/review/<output_name>/<stamp>/grid.png`
with its cells in `grid/` beside it. A page opened tomorrow shows the last grid again, and each of its
cells can still be sent to txt2img or made a LoRA's preview. No gradio, no torch."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from lora_trainer.review.grid import GridFiles, cell_file_name, load_grid_spec
from lora_trainer.review.render import CellKey
from lora_trainer.review.spec import GridSpec, RenderJob

GRID_NAME = "grid"  # <stamp>/grid.png and <stamp>/grid/ (its cells)
STAMP = "%Y%m%d-%H%M%S"


@dataclass(frozen=True)
class SavedGrid:
    grid: Path
    spec: GridSpec
    cells: dict[CellKey, Path]  # the rendered cells on disk (a failed or unrendered cell has none)

    @property
    def output_name(self) -> str:
        """The run the grid is of: `<review>/<output_name>/<stamp>/grid.png`."""
        return self.grid.parent.parent.name

    def job(self, key: CellKey) -> RenderJob:
        return {(s, r, c): job for s, r, c, job in self.spec.cells()}[key]

    @property
    def keys(self) -> list[CellKey | None]:
        """What a gallery of this grid shows, in order: the grid (None), then each cell."""
        return [None, *sorted(self.cells)]

    @classmethod
    def from_files(cls, spec: GridSpec, files: GridFiles) -> SavedGrid:
        return cls(files.grid, spec, dict(files.cells))


def new_grid_folder(review_dir: Path, output_name: str, now: float | None = None) -> Path:
    """A folder for a new grid of `output_name`, named by the time (`-2`, `-3` when taken); not made."""
    base = Path(review_dir) / output_name / time.strftime(STAMP, time.localtime(now))
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def saved_grids(review_dir: Path, output_name: str) -> list[Path]:
    """The grid PNGs saved for `output_name`, the newest first."""
    folder = Path(review_dir) / output_name
    if not output_name or not folder.is_dir():
        return []
    grids = [p / f"{GRID_NAME}.png" for p in folder.iterdir() if (p / f"{GRID_NAME}.png").is_file()]
    return sorted(grids, key=lambda p: (p.stat().st_mtime, p.parent.name), reverse=True)


def load_saved_grid(grid: Path) -> SavedGrid:
    """The grid's spec (from its PNG) and the cells found beside it; ValueError names a damaged grid."""
    spec = load_grid_spec(grid)
    cells_dir = Path(grid).with_suffix("")
    cells = {}
    for s, r, c, _job in spec.cells():
        path = cells_dir / cell_file_name(s, r, c)
        if path.is_file():
            cells[(s, r, c)] = path
    return SavedGrid(Path(grid), spec, cells)


def last_saved_grid(review_dir: Path, output_name: str) -> SavedGrid | None:
    """The newest readable grid of `output_name`, or None."""
    for grid in saved_grids(review_dir, output_name):
        try:
            return load_saved_grid(grid)
        except (OSError, ValueError):
            continue
    return None
