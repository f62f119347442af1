"""The full training state for stop and resume: LoRA weights (fp32), optimizer, scheduler, RNGs and
counters. Written to a temporary folder and renamed into place, so a crash while saving leaves the
previous state intact.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from lora_trainer.fsutil import OutputError
from lora_trainer.runs.layout import PROGRESS_FILE, RunFiles
from lora_trainer.runs.resume import DATASET_FILE, dataset_changes, dataset_record  # noqa: F401 - re-exported

STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"


@dataclass
class Progress:
    epoch: int = 0  # epochs fully done
    batch_in_epoch: int = 0  # batches of the current epoch done (this rank's share)
    global_step: int = 0  # optimizer steps done
    run_name: str = ""  # TensorBoard run folder, reused on resume so curves continue
    started_at: float = 0.0
    epoch_loss_sum: float = 0.0  # this epoch's losses so far, so a resumed epoch averages right
    epoch_loss_count: int = 0


def state_dir_for(output_dir: str | Path, output_name: str) -> Path:
    return RunFiles(output_dir, output_name).state_dir


def rng_file(rank: int) -> str:
    return f"rng-rank{rank}.pt"


def capture_rng(generator: torch.Generator, caption_rng: random.Random) -> dict:
    return {"generator": generator.get_state(), "caption": caption_rng.getstate(),
            "torch": torch.get_rng_state()}


def restore_rng(saved: dict, generator: torch.Generator, caption_rng: random.Random) -> None:
    generator.set_state(saved["generator"])
    caption_rng.setstate(saved["caption"])
    torch.set_rng_state(saved["torch"])


def write_main_state(tmp_dir: Path, *, trainable: dict[str, torch.Tensor], optimizer, scheduler,
                     progress: Progress, config: dict, dataset: dict | None = None,
                     ema: dict[str, torch.Tensor] | None = None) -> None:
    """Rank 0's part: weights, optimizer and scheduler (and the EMA) are identical on every rank."""
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir(parents=True)
    main = {"trainable": {k: v.detach().float().cpu() for k, v in trainable.items()},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    if ema is not None:
        main["ema"] = ema
    _save_torch(main, tmp_dir / STATE_FILE)
    (tmp_dir / PROGRESS_FILE).write_text(json.dumps(asdict(progress), indent=2), encoding="utf-8")
    (tmp_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
    if dataset is not None:
        (tmp_dir / DATASET_FILE).write_text(json.dumps(dataset, indent=1), encoding="utf-8")


def write_rank_rng(tmp_dir: Path, rank: int, rng: dict) -> None:
    _save_torch(rng, tmp_dir / rng_file(rank))


def _save_torch(obj, path: Path) -> None:
    # Through a Python file: a full disk then raises OSError (ENOSPC). torch's zip writer may still
    # turn it into its own RuntimeError ("[enforce fail at inline_container.cc:...]") raised while the
    # OSError is handled: that one is an OutputError naming the file too.
    try:
        with open(path, "wb") as f:
            torch.save(obj, f)
    except RuntimeError as e:
        cause = _os_error_behind(e)
        if cause is None and "inline_container" not in str(e):
            raise
        code = cause.errno if cause is not None and cause.errno else errno.EIO
        raise OutputError(code, os.strerror(code), str(path)) from e


def _os_error_behind(error: BaseException) -> OSError | None:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError):
            return error
        error = error.__cause__ or error.__context__
    return None


def commit_state(tmp_dir: Path, final_dir: Path) -> None:
    """Swap the finished temporary folder in; the old state is removed only after the new one is whole."""
    old = final_dir.with_name(final_dir.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final_dir.exists():
        final_dir.rename(old)
    tmp_dir.rename(final_dir)
    if old.exists():
        shutil.rmtree(old)


@dataclass
class SavedState:
    trainable: dict[str, torch.Tensor]
    optimizer: dict
    scheduler: dict
    progress: Progress
    config: dict
    rng: dict
    dataset: dict | None = field(default=None)  # None: a state from before datasets were recorded
    ema: dict[str, torch.Tensor] | None = field(default=None)  # the EMA of the weights, when the run keeps one


class ResumeError(ValueError):
    """The state folder is missing, incomplete, damaged, or does not fit the config."""


def _damaged(state_dir: Path, name: str, why: str) -> ResumeError:
    return ResumeError(
        f"cannot resume from {state_dir}: {name} is damaged ({why}), so this state cannot be continued. "
        f"Start over with a new run (train without --resume, or Start in the UI); the LoRA files already "
        f"saved in {state_dir.parent} stay usable. Delete {state_dir} to get rid of the damaged state.")


def _load_tensors(state_dir: Path, name: str, keys: tuple[str, ...]) -> dict:
    path = state_dir / name
    try:
        # Only tensors and plain containers: a file that holds anything else is refused, never run.
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure means the same to the user
        why = "cut short" if isinstance(e, EOFError) or "central directory" in str(e) or \
            "truncated" in str(e).lower() or path.stat().st_size == 0 else "not a training state file"
        raise _damaged(state_dir, name, why) from None
    if not isinstance(data, dict) or not all(k in data for k in keys):
        raise _damaged(state_dir, name, "it does not hold what a training state holds")
    return data


def _load_json(state_dir: Path, name: str) -> dict:
    try:
        data = json.loads((state_dir / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _damaged(state_dir, name, f"not readable JSON: {e}") from None
    if not isinstance(data, dict):
        raise _damaged(state_dir, name, "not a JSON object")
    return data


def _progress(state_dir: Path, data: dict) -> Progress:
    known = {f.name: f.type for f in fields(Progress)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise _damaged(state_dir, PROGRESS_FILE, f"unknown key(s) {', '.join(unknown)}")
    kinds = {"int": int, "float": (int, float), "str": str}
    for key, value in data.items():
        if not isinstance(value, kinds[known[key]]) or isinstance(value, bool):
            raise _damaged(state_dir, PROGRESS_FILE, f"{key} is {value!r}, not a {known[key]}")
    return Progress(**data)


def load_state(state_dir: str | Path, rank: int) -> SavedState:
    state_dir = Path(state_dir)
    needed = [state_dir / STATE_FILE, state_dir / PROGRESS_FILE, state_dir / CONFIG_FILE,
              state_dir / rng_file(rank)]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise ResumeError(f"cannot resume from {state_dir}: missing {', '.join(missing)} "
                          "(pass the '<output_name>-state' folder a stopped run wrote)")
    progress = _progress(state_dir, _load_json(state_dir, PROGRESS_FILE))
    config = _load_json(state_dir, CONFIG_FILE)
    dataset = _load_json(state_dir, DATASET_FILE) if (state_dir / DATASET_FILE).is_file() else None
    main = _load_tensors(state_dir, STATE_FILE, ("trainable", "optimizer", "scheduler"))
    rng = _load_tensors(state_dir, rng_file(rank), ("generator", "caption", "torch"))
    return SavedState(trainable=main["trainable"], optimizer=main["optimizer"], scheduler=main["scheduler"],
                      progress=progress, config=config, rng=rng, dataset=dataset, ema=main.get("ema"))
