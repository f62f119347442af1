"""A project's runs side by side: per output name its settings, epochs, loss, chosen epoch and rating,
the epoch its last scored grid suggests (with that epoch's likeness and adherence), which settings
differ between the runs, the guide's advice for the next run, and what changed in the training folder
since a run.

A run is an output name with a saved config (`<model>/<output_name>.json`) or LoRA files in model/;
its loss, notes and chosen epoch come from its newest run folder (`<log>/<output_name><stamp>[-N]`).
No torch and no gradio.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_trainer.config.settings import ConfigError, TrainConfig
from lora_trainer.project import Project
from lora_trainer.review.candidates import epoch_losses_from_events
from lora_trainer.review.notes import NotesError, chosen_epoch, load_notes
from lora_trainer.review.scores import ColumnScore, GridScores, load_scores
from lora_trainer.runs import layout
from lora_trainer.runs.follow import read_events
from lora_trainer.runs.layout import RunFiles
from lora_trainer.runs.lora_files import project_lora_files
from lora_trainer.runs.resume import DATASET_FILE, dataset_changes, dataset_record

# Settings that differ for every run by design (names and where its files go): never "a difference".
PER_RUN_KEYS = frozenset({"output_name", "output_dir", "logging_dir"})
EPOCH_MARGIN = 2  # epochs added after the chosen (or best-loss) one for the next run
RANK_FACTORS = (0.75, 0.5)  # the guide: "take 3/4 or 1/2 of the network rank (including alpha)"
NO_RECORD = "no record"


@dataclass(frozen=True)
class RunSummary:
    output_name: str
    settings: dict[str, Any]  # the saved TrainConfig's dict ({} when the run has no saved config)
    epochs: list[int]  # epochs saved as LoRA files
    final_loss: float | None  # the last epoch's mean loss
    best_loss: float | None
    best_epoch: int | None
    chosen_epoch: int | None
    rating: int | None  # the chosen epoch's
    note: str  # the chosen epoch's (or why the notes cannot be read)
    run_dir: Path | None  # its newest run folder (events and review.json)
    state_dir: Path  # `<model>/<output_name>-state`: its dataset record when it has one
    train_data_dir: Path  # the project's training folder (img/)
    modified: float = 0.0  # its newest file's modification time
    problems: list[str] = field(default_factory=list)
    scores: GridScores | None = None  # its last scored review grid's epoch scores

    @property
    def scored(self) -> ColumnScore | None:
        """The suggested epoch's scores (likeness, adherence, leakage), when a grid was scored."""
        return self.scores.column(self.scores.pick) if self.scores and self.scores.pick is not None else None


def _newest_run_dir(log_dir: Path, output_name: str) -> Path | None:
    if not Path(log_dir).is_dir():
        return None
    found = []
    for folder in Path(log_dir).iterdir():
        order = layout.run_folder_order(folder.name, output_name)
        if order is not None and layout.events_file(folder).is_file():
            found.append((order, folder))
    return max(found)[1] if found else None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _saved_configs(model_dir: Path) -> dict[str, tuple[dict[str, Any] | None, float, str]]:
    """{output name: (settings or None, modified, problem)} of the `<output_name>.json` files in model/."""
    out = {}
    if not Path(model_dir).is_dir():
        return out
    for path in sorted(Path(model_dir).glob("*.json")):
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            out[path.stem] = (TrainConfig.from_json(path).to_dict(), _mtime(path), "")
        except (ConfigError, OSError, ValueError, TypeError) as e:
            out[path.stem] = (None, _mtime(path), f"settings not readable: {e}")
    return out


def _summary(project: Project, name: str, settings: dict | None, epochs: list[int], modified: float,
             problems: list[str]) -> RunSummary:
    run_dir = _newest_run_dir(project.log, name)
    losses = epoch_losses_from_events(read_events(layout.events_file(run_dir))) if run_dir else {}
    final = losses[max(losses)] if losses else None
    best_epoch = min(losses, key=lambda e: (losses[e], e)) if losses else None
    chosen, rating, note = None, None, ""
    if run_dir is not None:
        try:
            notes = load_notes(run_dir)
            chosen = chosen_epoch(notes)
            if chosen is not None:
                rating, note = notes[chosen].rating, notes[chosen].note
        except NotesError as e:
            problems = [*problems, str(e)]
        modified = max(modified, _mtime(layout.events_file(run_dir)))
    scores = None
    if run_dir is not None:
        try:
            scores = load_scores(layout.scores_file(run_dir))
        except (OSError, ValueError) as e:
            problems = [*problems, str(e)]
    best = losses.get(best_epoch) if losses else None
    state_dir = RunFiles(project.model, name).state_dir
    return RunSummary(name, settings or {}, epochs, final, best, best_epoch, chosen, rating, note, run_dir,
                      state_dir, project.img, modified, problems, scores)


def project_runs(project: Project) -> list[RunSummary]:
    """One summary per output name that has a saved config or LoRA files in model/, newest first (a
    run whose `<output_name>.json` cannot be read says so in its `problems`)."""
    configs = _saved_configs(project.model)
    files: dict[str, list] = {}
    for lora in project_lora_files(project.model) if project.model.is_dir() else []:
        files.setdefault(lora.output_name, []).append(lora)
    runs = []
    for name in dict.fromkeys([*files, *configs]):
        settings, modified, problem = configs.get(name, (None, 0.0, ""))
        group = files.get(name, [])
        if settings is None and not group:
            continue  # another JSON file in model/, not a run's settings
        modified = max([modified, *(f.modified for f in group)])
        epochs = sorted({f.epoch for f in group if f.epoch})
        runs.append(_summary(project, name, settings, epochs, modified, [problem] if problem else []))
    return sorted(runs, key=lambda r: (r.modified, r.output_name), reverse=True)


def differing_settings(runs: list[RunSummary]) -> list[str]:
    """The settings whose values differ between the runs (in TrainConfig's order; the per-run names and
    folders left out). Runs without a saved config take no part."""
    known = [r.settings for r in runs if r.settings]
    if len(known) < 2:
        return []
    keys = list(dict.fromkeys(k for s in known for k in s))
    return [k for k in keys if k not in PER_RUN_KEYS
            and len({json.dumps(s.get(k), sort_keys=True) for s in known}) > 1]


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def next_run_settings(run: RunSummary, rank_factor: float = RANK_FACTORS[0]) -> tuple[dict[str, Any], list[str]]:
    """The guide's next step for a run: fewer epochs (the chosen epoch, else the best-loss one, plus
    EPOCH_MARGIN) and rank and alpha times `rank_factor` (3/4, or 1/2 when asked). Returns the new
    settings and one reason per changed setting."""
    if rank_factor not in RANK_FACTORS:
        raise ValueError(f"rank_factor is 3/4 or 1/2 (the guide's next step), not {rank_factor!r}")
    if not run.settings:
        raise ValueError(f"run {run.output_name!r} has no saved settings ({run.output_name}.json in model/)")
    settings = dict(run.settings)
    reasons = []
    if run.chosen_epoch is not None:
        base, why = run.chosen_epoch, "the chosen epoch"
    elif run.scores is not None and run.scores.pick is not None:
        base, why = run.scores.pick, "the epoch the grid's scores suggest"
    else:
        base, why = run.best_epoch, "the epoch with the lowest loss"
    current = settings.get("max_train_epochs", TrainConfig.max_train_epochs)
    if base is not None:
        epochs = base + EPOCH_MARGIN
        if epochs < current:
            settings["max_train_epochs"] = epochs
            reasons.append(f"max_train_epochs {current} -> {epochs}: {why} was {base}, plus {EPOCH_MARGIN} "
                           "to spare (a shorter run)")
        if settings.get("max_train_steps"):
            reasons.append(f"max_train_steps {settings['max_train_steps']} -> 0: the epochs decide the length")
            settings["max_train_steps"] = 0
    fraction = "3/4" if rank_factor == RANK_FACTORS[0] else "1/2"
    dim = settings.get("network_dim", TrainConfig.network_dim)
    new_dim = max(1, round(dim * rank_factor))
    if new_dim != dim:
        settings["network_dim"] = new_dim
        reasons.append(f"network_dim {dim} -> {new_dim}: {fraction} of the rank")
    alpha = settings.get("network_alpha", TrainConfig.network_alpha)
    new_alpha = float(alpha) * rank_factor
    if new_alpha != alpha:
        settings["network_alpha"] = new_alpha
        reasons.append(f"network_alpha {_number(alpha)} -> {_number(new_alpha)}: {fraction} of the alpha, "
                       "with the rank")
    TrainConfig.from_dict(settings)  # still valid
    return settings, reasons


def dataset_changes_since(run: RunSummary) -> tuple[list[str], str]:
    """(what changed in the training folder since the run's dataset record was saved, a note): the note
    is NO_RECORD when the run's state folder has no record (then the list is empty), else ""."""
    record = Path(run.state_dir) / DATASET_FILE
    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [], NO_RECORD
    if not isinstance(saved, dict):
        return [], NO_RECORD
    extension = run.settings.get("caption_extension", TrainConfig.caption_extension)
    return dataset_changes(saved, dataset_record(run.train_data_dir, extension)), ""
