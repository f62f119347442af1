"""The full training state for stop and resume: LoRA weights (fp32), optimizer, scheduler, RNGs and
counters. Written to a temporary folder and renamed into place, so a crash while saving leaves the
previous state intact.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lora_trainer.runs.layout import PROGRESS_FILE, RunFiles

STATE_FILE = "state.pt"


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
                     progress: Progress, config: dict) -> None:
    """Rank 0's part: weights, optimizer and scheduler are identical on every rank."""
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir(parents=True)
    _save_torch({"trainable": {k: v.detach().float().cpu() for k, v in trainable.items()},
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                tmp_dir / STATE_FILE)
    (tmp_dir / PROGRESS_FILE).write_text(json.dumps(asdict(progress), indent=2), encoding="utf-8")
    (tmp_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def write_rank_rng(tmp_dir: Path, rank: int, rng: dict) -> None:
    _save_torch(rng, tmp_dir / rng_file(rank))


def _save_torch(obj, path: Path) -> None:
    # Through a Python file: a full disk then raises OSError (ENOSPC), not torch's opaque RuntimeError.
    with open(path, "wb") as f:
        torch.save(obj, f)


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


class ResumeError(ValueError):
    """The state folder is missing, incomplete, or does not fit the config."""


def load_state(state_dir: str | Path, rank: int) -> SavedState:
    state_dir = Path(state_dir)
    needed = [state_dir / STATE_FILE, state_dir / PROGRESS_FILE, state_dir / "config.json",
              state_dir / rng_file(rank)]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise ResumeError(f"cannot resume from {state_dir}: missing {', '.join(missing)} "
                          "(pass the '<output_name>-state' folder a stopped run wrote)")
    main = torch.load(state_dir / STATE_FILE, map_location="cpu", weights_only=True)
    return SavedState(
        trainable=main["trainable"], optimizer=main["optimizer"], scheduler=main["scheduler"],
        progress=Progress(**json.loads((state_dir / PROGRESS_FILE).read_text(encoding="utf-8"))),
        config=json.loads((state_dir / "config.json").read_text(encoding="utf-8")),
        rng=torch.load(state_dir / rng_file(rank), map_location="cpu", weights_only=True),
    )
