"""HTML for the Train panel's read-only parts (status, saved files, project, messages). Every text from
a file name, a config or the trainer is escaped."""

from __future__ import annotations

import time
from html import escape
from pathlib import Path

from lora_trainer.runs.follow import RunStatus, SavedLora

STATE_LABELS = {"idle": "Idle", "starting": "Starting", "running": "Running", "stopping": "Stopping", "stopped": "Stopped",
                "finished": "Finished", "failed": "Failed"}


def message(text: str, error: bool = False, refresh_cards: bool = False) -> str:
    """`refresh_cards`: the WebUI's LoRA cards changed (a new preview): javascript/lora_trainer_cards.js
    refreshes them once for this message."""
    if not text:
        return ""
    kind = "error" if error else "info"
    mark = f' data-refresh-cards="{time.time_ns()}"' if refresh_cards else ""
    return f'<div class="lora-trainer-message lora-trainer-{kind}"{mark}>{escape(text)}</div>'


def memory_line(summary: str | None, note: str = "", gpu_name: str | None = None, fixes: list[str] = ()) -> str:
    """The Train panel's memory estimate: the figure, the GPU it is for, and what would make it fit."""
    if summary is None:
        return f'<div class="lora-trainer-memory">GPU memory: {escape(note)}</div>'
    where = f" ({escape(gpu_name)})" if gpu_name else " (no CUDA GPU here: compare it with the card you train on)"
    parts = [f"<b>GPU memory</b>: {escape(summary)}{where}"]
    if fixes:
        items = "".join(f"<li>{escape(fix)}</li>" for fix in fixes)
        parts.append(f"<div>To fit, change one of:</div><ul>{items}</ul>")
    error = " lora-trainer-error" if fixes else ""
    return f'<div class="lora-trainer-memory{error}">{"".join(parts)}</div>'


def job_line(text: str, done: int, total: int, running: bool, error: bool = False) -> str:
    """A background job's line: while it runs, a progress bar (done of total) before its text."""
    line = message(text, error=error)
    if not running or not total or not line:
        return line
    bar = f'<progress class="lora-trainer-progress" max="{int(total)}" value="{min(int(done), int(total))}"></progress> '
    return line.replace(">", f">{bar}", 1)


def status(s: RunStatus) -> str:
    """The shown project's run; first, a run going on in another project (Start waits for it)."""
    parts = [f'<div class="lora-trainer-status lora-trainer-state-{s.state}">']
    if s.elsewhere:
        parts.append(f'<div class="lora-trainer-elsewhere"><b>Busy</b> &mdash; {escape(s.elsewhere)} '
                     "(one run at a time: Start waits until it ends; select that project to follow or "
                     "stop it)</div>")
    parts.append(f"<b>{STATE_LABELS.get(s.state, s.state)}</b> &mdash; {escape(s.message)}")
    if s.total_steps:
        parts.append(f'<br><progress max="{s.total_steps}" value="{s.step}" style="width:100%"></progress>')
    details = _details(s)
    if details:
        parts.append("<br>" + " &middot; ".join(escape(d) for d in details))
    if s.error:
        parts.append(f'<pre class="lora-trainer-error">{escape(s.error)}</pre>')
    if s.warnings:
        items = "".join(f"<li>{escape(w)}</li>" for w in s.warnings)
        parts.append(f'<details><summary>{len(s.warnings)} warning(s)</summary><ul>{items}</ul></details>')
    parts.append("</div>")
    return "".join(parts)


def _details(s: RunStatus) -> list[str]:
    details = []
    if s.project:
        details.append(f"project {s.project}")
    if s.loss is not None:
        details.append(f"loss {s.loss:.4f} (epoch average {s.average_loss:.4f})")
    if s.validation:
        epoch, loss = s.validation[-1]
        best = min(s.validation, key=lambda v: (v[1], v[0]))
        details.append(f"validation loss {loss:.4f} after epoch {epoch} (lowest {best[1]:.4f}, epoch {best[0]})")
    details += [f"lr {name} {rate:.2e}" for name, rate in s.learning_rates.items()]
    if s.state != "idle":
        details.append(f"elapsed {duration(s.elapsed_s)}")
    if s.eta_s is not None:
        details.append(f"about {duration(s.eta_s)} left")
    return details


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def saved_files(saved: list[SavedLora], problems: list[str] = (), empty: str = "No LoRA saved yet.",
                project: str = "") -> str:
    """LoRA files with their prompt names and a copy button each (javascript/lora_trainer.js),
    grouped under their output name; then any the host could not list (not hidden: the user would
    look for them in the WebUI in vain). In a block that names the project: a name new to it makes
    javascript/lora_trainer_cards.js refresh the WebUI's LoRA cards."""
    return f'<div class="lora-trainer-saved-list" data-project="{escape(project)}">{_saved_table(saved, problems, empty)}</div>'


def _saved_table(saved: list[SavedLora], problems: list[str], empty: str) -> str:
    trouble = "".join(f'<p class="lora-trainer-error">{escape(p)}</p>' for p in problems)
    if not saved:
        return f'<p class="lora-trainer-empty">{escape(empty)}</p>' + trouble
    rows, group = [], None
    for lora in saved:
        if lora.output_name and lora.output_name != group:
            group = lora.output_name
            rows.append(f'<tr class="lora-trainer-group"><th colspan="3">{escape(group)}</th></tr>')
        rows.append(_saved_row(lora))
    folders = ", ".join(escape(str(f)) for f in dict.fromkeys(s.path.parent for s in saved))
    return (f'<table class="lora-trainer-saved"><thead><tr><th>Saved</th><th>File</th>'
            f"<th>Use in a prompt</th></tr></thead><tbody>{''.join(rows)}</tbody></table><p>In {folders}</p>{trouble}")


_KINDS = {"epoch": "epoch {epoch}", "stop": "stopped at step {step}", "final": "final (epoch {epoch})"}


def _saved_row(lora: SavedLora) -> str:
    kind = _KINDS.get(lora.kind, lora.kind).format(epoch=lora.epoch, step=lora.step)
    if lora.kind == "final" and not lora.epoch:
        kind = "final"  # a file without our metadata
    prompt = escape(lora.prompt)
    copy = (f'<button type="button" class="lora-trainer-copy" data-copy="{prompt}" '
            f'title="Copy {prompt} to the clipboard">copy</button>')
    return f"<tr><td>{escape(kind)}</td><td>{escape(lora.path.name)}</td><td><code>{prompt}</code> {copy}</td></tr>"


def project_info(train_images: str, folders: dict, exists: bool, uncaptioned: dict | None = None) -> str:
    """Where the training images go and what is there now ({folder path: image count}), and the images
    without a caption ({folder path: [images]}), said before Start."""
    if not exists:
        return (f"New project: <b>Create project</b> (or Save config / Start) makes its folders. "
                f"Training images then go in <code>{escape(train_images)}</code>.")
    found = ", ".join(f"<code>{escape(str(folder))}</code> ({count} image(s))" for folder, count in folders.items())
    if not sum(folders.values()):
        return (f"No training images yet: put images and their .txt captions in "
                f"<code>{escape(train_images)}</code>.")
    return f"Training images: {found}." + _uncaptioned(uncaptioned or {})


def _uncaptioned(uncaptioned: dict) -> str:
    if not uncaptioned:
        return ""
    parts = []
    for folder, images in uncaptioned.items():
        names = ", ".join(escape(image.name) for image in images[:5]) + (f" and {len(images) - 5} more"
                                                                          if len(images) > 5 else "")
        concept = Path(folder).name.partition("_")[2] or Path(folder).name
        parts.append(f"{len(images)} image(s) in <code>{escape(Path(folder).name)}</code> have no caption ({names}): "
                     f"they would train with the caption <code>{escape(concept)}</code> alone")
    return (' <span class="lora-trainer-error">' + "; ".join(parts) +
            ". Caption them in the Captions tab first.</span>")
