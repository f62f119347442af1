"""Epoch scores measured on a review grid's own renders, and the epoch they suggest.

Per cell: the faces found and their likeness to the training set's faces (review/identity.py), the
share of the prompt's tags the tagger finds (adherence) and the common training tags it finds without
being prompted (leakage, review/adherence.py). Per column (an epoch, or the no-LoRA baseline): their
means, "no face found" counted, and the epoch's validation loss (else its training loss) from the run.

The suggestion: the highest likeness among the epochs whose adherence has not yet fallen (more than
`ADHERENCE_DROP` below the best adherence of the epochs before), with the reason in words: past that
point the LoRA paints its character but stops following the prompt (the guide's over-training).

Scores are saved beside the grid (`<grid>.scores.json`, its chart `<grid>.scores.png`), in the grid PNG's text (`lora_trainer_scores`) and
with the run (`runs/layout.py` `scores_file`). No torch, no gradio.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from lora_trainer.review.spec import GridSpec
from lora_trainer.runs.layout import scores_file

SCORES_CHUNK = "lora_trainer_scores"
SCORES_VERSION = 1
ADHERENCE_DROP = 0.1  # adherence this far below the best before it has fallen
LIKENESS_TIE = 0.005  # likenesses this close are the same: the earlier epoch is picked
NOT_MEASURED = "not measured: "  # how `GridScores.measured` begins for a measure left out

CellKey = tuple[int, int, int]


@dataclass(frozen=True)
class CellScore:
    key: CellKey
    faces: int  # faces found
    likeness: float | None  # None: no face, or likeness not measured
    adherence: float | None  # None: the prompt has no tag the tagger knows, or not measured
    leaked: tuple[str, ...] = ()
    missed: tuple[str, ...] = ()  # prompted tags not found


@dataclass(frozen=True)
class ColumnScore:
    label: str
    epoch: int  # 0 for the baseline
    baseline: bool
    cells: int  # cells scored
    no_face: int  # of those, cells where no face was found
    likeness: float | None
    adherence: float | None
    leakage: float | None  # mean leaked tags per cell
    loss: float | None = None
    loss_kind: str = ""  # "validation" or "training"

    @property
    def name(self) -> str:
        return "no LoRA" if self.baseline else f"epoch {self.epoch}"


@dataclass(frozen=True)
class GridScores:
    columns: list[ColumnScore]
    cells: list[CellScore]
    pick: int | None  # the suggested epoch
    reason: str
    measured: dict[str, str] = field(default_factory=dict)  # "likeness"/"adherence": what measured it, or why not
    dataset_faces: int = 0  # training images with a face
    dataset_images: int = 0

    def column(self, epoch: int) -> ColumnScore | None:
        return next((c for c in self.columns if not c.baseline and c.epoch == epoch), None)


def is_measured(what: str) -> bool:
    return bool(what) and not what.startswith(NOT_MEASURED)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def column_scores(spec: GridSpec, cells: dict[CellKey, CellScore], losses: dict[int, tuple[float, str]] | None = None,
                  leakage_measured: bool = True) -> list[ColumnScore]:
    """Each column's means over its scored cells (columns without any are left out)."""
    out = []
    for c, column in enumerate(spec.columns):
        scored = [score for key, score in sorted(cells.items()) if key[2] == c]
        if not scored:
            continue
        baseline = column.lora is None
        loss, kind = (losses or {}).get(column.epoch, (None, "")) if not baseline else (None, "")
        out.append(ColumnScore(
            label=column.label, epoch=column.epoch, baseline=baseline, cells=len(scored),
            no_face=sum(1 for s in scored if s.faces == 0),
            likeness=_mean(s.likeness for s in scored), adherence=_mean(s.adherence for s in scored),
            leakage=_mean(len(s.leaked) for s in scored) if leakage_measured else None,
            loss=loss, loss_kind=kind))
    return out


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def suggest_epoch(columns: list[ColumnScore]) -> tuple[int | None, str]:
    """The suggested epoch and why (see the module docstring)."""
    epochs = sorted((c for c in columns if not c.baseline), key=lambda c: c.epoch)
    if not epochs:
        return None, "no epoch in the grid to score"
    eligible, fall = epochs, ""
    best: ColumnScore | None = None
    for i, column in enumerate(epochs):
        if column.adherence is None:
            continue
        if best is not None and column.adherence < best.adherence - ADHERENCE_DROP:
            eligible = epochs[:i]
            fall = (f"prompt adherence fell after them ({_f(best.adherence)} at epoch {best.epoch}, "
                    f"{_f(column.adherence)} at epoch {column.epoch})")
            break
        if best is None or column.adherence > best.adherence:
            best = column
    span = (f"epoch {eligible[0].epoch}" if len(eligible) == 1
            else f"epochs {eligible[0].epoch}-{eligible[-1].epoch}")
    faced = [c for c in eligible if c.likeness is not None]
    if faced:
        pick = faced[0]
        for column in faced[1:]:
            if column.likeness > pick.likeness + LIKENESS_TIE:
                pick = column
        why = f"epoch {pick.epoch}: the closest face (likeness {_f(pick.likeness)}) among {span}"
    else:
        adhering = [c for c in eligible if c.adherence is not None]
        if not adhering:
            return None, "nothing measured: no face found and no prompt tag the tagger knows"
        pick = max(adhering, key=lambda c: (c.adherence, -c.epoch))
        why = (f"epoch {pick.epoch}: no face found in the renders of {span}, so picked by prompt adherence "
               f"alone ({_f(pick.adherence)})")
    if fall:
        why += f"; {fall}"
    elif any(c.adherence is not None for c in epochs):
        why += "; prompt adherence held through the last epoch"
    baseline = next((c for c in columns if c.baseline), None)
    if baseline is not None and baseline.likeness is not None and pick.likeness is not None:
        why += f" (no LoRA: likeness {_f(baseline.likeness)})"
    return pick.epoch, why


def summarise(spec: GridSpec, cells: dict[CellKey, CellScore], losses=None, measured=None,
              dataset_faces: int = 0, dataset_images: int = 0) -> GridScores:
    measured = dict(measured or {})
    columns = column_scores(spec, cells, losses, leakage_measured=is_measured(measured.get("adherence", "")))
    pick, reason = suggest_epoch(columns)
    return GridScores(columns, [cells[k] for k in sorted(cells)], pick, reason, measured, dataset_faces,
                      dataset_images)


# --- words ---------------------------------------------------------------------------------------

def scores_table(scores: GridScores) -> str:
    """A Markdown table: one row per column of the grid."""
    kinds = {c.loss_kind for c in scores.columns if c.loss is not None}
    loss_head = f"{kinds.pop()} loss" if len(kinds) == 1 else "loss"
    lines = [f"| | likeness | no face | adherence | leaked tags | {loss_head} |", "|---|---|---|---|---|---|"]
    for c in scores.columns:
        name = f"**{c.name}**" if c.epoch == scores.pick and not c.baseline else c.name
        loss = "-" if c.loss is None else f"{c.loss:.4f}" + ("" if loss_head != "loss" else f" ({c.loss_kind})")
        lines.append(f"| {name} | {_f(c.likeness)} | {c.no_face}/{c.cells} | {_f(c.adherence)} | "
                     f"{_f(c.leakage)} | {loss} |")
    return "\n".join(lines)


def most_leaked(scores: GridScores, most: int = 5) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for cell in scores.cells:
        for tag in cell.leaked:
            counts[tag] = counts.get(tag, 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:most]


# --- files ---------------------------------------------------------------------------------------

def scores_to_json(scores: GridScores) -> dict:
    return {"version": SCORES_VERSION, "pick": scores.pick, "reason": scores.reason,
            "measured": scores.measured, "dataset_faces": scores.dataset_faces,
            "dataset_images": scores.dataset_images,
            "columns": [asdict(c) for c in scores.columns],
            "cells": [{**asdict(c), "key": list(c.key)} for c in scores.cells]}


def scores_from_json(data: dict) -> GridScores:
    """The GridScores `scores_to_json` wrote; ValueError naming what is wrong otherwise."""
    try:
        if data.get("version") != SCORES_VERSION:
            raise ValueError(f"unknown scores version {data.get('version')!r}")
        columns = [ColumnScore(**c) for c in data["columns"]]
        cells = [CellScore(**{**c, "key": tuple(c["key"]), "leaked": tuple(c["leaked"]),
                              "missed": tuple(c["missed"])}) for c in data["cells"]]
        pick = data["pick"]
        return GridScores(columns, cells, None if pick is None else int(pick), str(data["reason"]),
                          dict(data.get("measured") or {}), int(data.get("dataset_faces", 0)),
                          int(data.get("dataset_images", 0)))
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"not epoch scores: {e!r}") from e


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def scores_json_text(scores: GridScores) -> str:
    data = scores_to_json(scores)
    data["columns"] = [{k: _finite(v) for k, v in c.items()} for c in data["columns"]]
    return json.dumps(data, ensure_ascii=False)


def run_scores(run_dir: Path | None) -> GridScores | None:
    """The scores kept with a run (its newest scored grid's), or None (none, or not readable)."""
    if run_dir is None:
        return None
    try:
        return load_scores(scores_file(run_dir))
    except (OSError, ValueError):
        return None


def load_scores(path: str | Path) -> GridScores | None:
    """Scores from a scores.json or a grid PNG's text; None when it holds none; ValueError when damaged."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        with Image.open(path) as image:
            image.load()
            text = dict(getattr(image, "text", {}) or image.info).get(SCORES_CHUNK)
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
    if text is None:
        return None
    try:
        return scores_from_json(json.loads(text))
    except ValueError as e:
        raise ValueError(f"{path}: damaged epoch scores: {e}") from e
