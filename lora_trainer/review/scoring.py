"""Scoring a review grid's renders as they come (review/scores.py says what is measured), and saving
the scores with the grid and the run.

`GridScorer.load` finds what it can: the face models (review/identity.py) and the WD14 tagger (from
the hub cache or a folder; never downloaded unless asked). What it cannot find is named in
`measured` and that measure is left out; the rest is still scored. A live grid calls `score` after each
column: only the new cells are measured. No torch, no gradio.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from lora_trainer.captions.files import read_caption
from lora_trainer.captions.models import DEFAULT_MODEL, resolve_model
from lora_trainer.captions.tagger import Tagger
from lora_trainer.fsutil import atomic_path, write_text_atomic
from lora_trainer.images import list_images
from lora_trainer.project import Project
from lora_trainer.review.adherence import TagReader, check_tags, training_tags
from lora_trainer.review.candidates import epoch_losses_from_events, validation_losses_from_events
from lora_trainer.review.grid import save_png_with_text
from lora_trainer.review.identity import (
    DatasetFaces,
    FaceEmbedder,
    FaceModelsMissing,
    dataset_faces,
    find_face_models,
)
from lora_trainer.review.saved import SavedGrid
from lora_trainer.review.score_chart import score_chart
from lora_trainer.review.scores import (
    NOT_MEASURED,
    SCORES_CHUNK,
    CellKey,
    CellScore,
    GridScores,
    scores_json_text,
    summarise,
)
from lora_trainer.review.spec import GridSpec
from lora_trainer.runs import layout
from lora_trainer.runs.follow import read_events

FACE_CACHE = "face_embeddings.json"  # in the project's cache/


def scores_json_of(grid_png: Path) -> Path:
    """`<grid>.scores.json` beside the grid (`grid.png` -> `grid.scores.json`)."""
    return Path(grid_png).with_suffix(".scores.json")


def chart_of(grid_png: Path) -> Path:
    return Path(grid_png).with_suffix(".scores.png")


def training_images(project: Project) -> list[Path]:
    return [image for folder in project.training_folders() for image in list_images(folder)]


def run_losses(run_dir: Path | None) -> dict[int, tuple[float, str]]:
    """Each epoch's validation loss, else its training loss, from the run's events."""
    if run_dir is None:
        return {}
    events = read_events(layout.events_file(run_dir))
    validation = validation_losses_from_events(events)
    if validation:
        return {epoch: (loss, "validation") for epoch, loss in validation.items()}
    return {epoch: (loss, "training") for epoch, loss in epoch_losses_from_events(events).items()}


class GridScorer:
    def __init__(self, project: Project, faces: FaceEmbedder | None, tags: TagReader | None,
                 measured: dict[str, str], run_dir: Path | None = None):
        self.project, self.faces, self.tags, self.run_dir = project, faces, tags, run_dir
        self.measured = dict(measured)
        self.cells: dict[CellKey, CellScore] = {}
        self._dataset: DatasetFaces | None = None
        self._images = training_images(project)
        self._training = training_tags(read_caption(image) for image in self._images)

    @classmethod
    def load(cls, project: Project, run_dir: Path | None = None, tagger: str = DEFAULT_MODEL,
             face_models: str | Path | None = None, download: bool = False,
             cache_dir: str | Path | None = None) -> GridScorer:
        """A scorer with what can be found (see the module docstring); `cache_dir`: the hub cache the
        tagger is read from (the host's, as the Captions panel uses; None: huggingface-hub's default)."""
        measured: dict[str, str] = {}
        faces = tags = None
        try:
            faces = FaceEmbedder(find_face_models(face_models))
            measured["likeness"] = faces.name
        except FaceModelsMissing as e:
            measured["likeness"] = NOT_MEASURED + str(e)
        try:
            tags = TagReader(Tagger(resolve_model(tagger, cache_dir=cache_dir, local_files_only=not download)))
            measured["adherence"] = tags.tagger.describe()
        except (OSError, ValueError, RuntimeError) as e:  # ModelNotFoundError is an OSError
            measured["adherence"] = NOT_MEASURED + str(e)
        return cls(project, faces, tags, measured, run_dir)

    @property
    def dataset(self) -> DatasetFaces | None:
        """The training faces, computed (or read from the cache) on first use."""
        if self._dataset is None and self.faces is not None:
            self._dataset = dataset_faces(self._images, self.faces, self.project.cache / FACE_CACHE)
        return self._dataset

    def score(self, spec: GridSpec, cells: dict) -> GridScores:
        """Measure the rendered cells not measured yet (failed cells are left out), then the whole."""
        jobs = {(s, r, c): job for s, r, c, job in spec.cells()}
        new = [(key, image) for key, image in sorted(cells.items())
               if key not in self.cells and key in jobs and isinstance(image, Image.Image)]
        found = self.tags.read([image for _, image in new]) if self.tags is not None and new else [None] * len(new)
        for (key, image), tags in zip(new, found):
            self.cells[key] = self._cell(key, image, jobs[key].prompt, tags)
        dataset = self.dataset
        return summarise(spec, self.cells, run_losses(self.run_dir), self.measured,
                         len(dataset.embeddings) if dataset else 0, len(self._images))

    def _cell(self, key: CellKey, image: Image.Image, prompt: str, tags: set[str] | None) -> CellScore:
        faces, likeness = 0, None
        if self.faces is not None:
            found = self.faces.faces(image)
            faces, likeness = len(found), self.dataset.likeness(found)
        adherence, leaked, missed = None, (), ()
        if tags is not None:
            check = check_tags(tags, prompt, self.tags.known, self._training)
            adherence, leaked = check.adherence, check.leaked
            missed = tuple(t for t in check.prompted if t not in check.found)
        return CellScore(key, faces, likeness, adherence, leaked, missed)


def score_saved_grid(scorer: GridScorer, saved: SavedGrid) -> tuple[GridScores, Path]:
    """Score every cell of a grid saved before (read from its files) and save the scores with it and
    with the scorer's run. (The scores and the chart's path.)"""
    cells = {}
    for key, path in saved.cells.items():
        with Image.open(path) as image:
            cells[key] = image.convert("RGB")
    scores = scorer.score(saved.spec, cells)
    return scores, save_scores(scores, saved.grid, scorer.run_dir)


def save_scores(scores: GridScores, grid_png: Path, run_dir: Path | None = None, in_grid: bool = True) -> Path:
    """Write the scores beside the grid (`<grid>.scores.json`, the chart as `<grid>.scores.png`), into the
    grid PNG's text (`in_grid`; a grid saved with them already has them: `png_text`), and with the run;
    each file atomically. The chart's path."""
    grid_png = Path(grid_png)
    text = scores_json_text(scores)
    write_text_atomic(scores_json_of(grid_png), text)
    chart = chart_of(grid_png)
    with atomic_path(chart) as tmp:
        score_chart(scores).save(tmp, format="PNG")
    if in_grid:
        _add_png_text(grid_png, SCORES_CHUNK, text)
    if run_dir is not None:
        write_text_atomic(layout.scores_file(run_dir), text)
    return chart


def png_text(scores: GridScores) -> dict[str, str]:
    """The text chunk a grid PNG carries its scores in (for `save_grid`'s `extra_text`)."""
    return {SCORES_CHUNK: scores_json_text(scores)}


def _add_png_text(png: Path, key: str, value: str) -> None:
    """Rewrite `png` with the text chunk `key` set, its pixels and other text chunks kept."""
    with Image.open(png) as image:
        image.load()
        chunks = dict(getattr(image, "text", {}) or {})
        pixels = image.copy()
    chunks[key] = value
    save_png_with_text(pixels, png, chunks)
