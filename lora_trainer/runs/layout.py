"""A run's names and events: the one definition the trainer writes through and the UI reads through.

A run called `<output_name>` (kohya's layout, so other tools find its files):
```
<output_dir>/<output_name>-000001.safetensors      one per saved epoch (6 digits)
<output_dir>/<output_name>-step00000123.safetensors saved when stopped (8 digits)
<output_dir>/<output_name>.safetensors             the last epoch again, when the run finishes
<output_dir>/<output_name>.json                    the settings it ran with
<output_dir>/<output_name>-state/                  what --resume needs (progress.json, state.pt, ...)
<output_dir>/<output_name>.stop                    a stop request (flag file)
<logging_dir>/<output_name><YYYYmmddHHMMSS>/       TensorBoard files and events.jsonl
```
`events.jsonl` holds one JSON object per line: "event" (a kind in `EVENT_FIELDS`), "time", and
exactly that kind's fields. No torch here.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

LORA_SUFFIX = ".safetensors"
EVENTS_FILE = "events.jsonl"
PROGRESS_FILE = "progress.json"  # inside the state folder: counters and the run folder's name
_RUN_STAMP_FORMAT = "%Y%m%d%H%M%S"
_RUN_STAMP = re.compile(r"\d{14}")
_EPOCH_STEM = re.compile(r"(?P<name>.+)-(?P<epoch>\d{6})")
_STOP_STEM = re.compile(r"(?P<name>.+)-step(?P<step>\d{8})")

# What each kind of saved LoRA file is (the "kind" of a "saved" event, and of a listed file).
EPOCH, STOP, FINAL = "epoch", "stop", "final"


@dataclass(frozen=True)
class RunFiles:
    """The files a run called `output_name` writes into `output_dir`."""

    output_dir: Path
    output_name: str

    def __post_init__(self):
        object.__setattr__(self, "output_dir", Path(self.output_dir))

    def epoch_lora(self, epoch: int) -> Path:
        return self.output_dir / f"{self.output_name}-{epoch:06d}{LORA_SUFFIX}"

    def stop_lora(self, step: int) -> Path:
        return self.output_dir / f"{self.output_name}-step{step:08d}{LORA_SUFFIX}"

    @property
    def final_lora(self) -> Path:
        return self.output_dir / f"{self.output_name}{LORA_SUFFIX}"

    @property
    def config(self) -> Path:
        return self.output_dir / f"{self.output_name}.json"

    @property
    def state_dir(self) -> Path:
        return self.output_dir / f"{self.output_name}-state"

    @property
    def progress(self) -> Path:
        return self.state_dir / PROGRESS_FILE

    @property
    def stop_flag(self) -> Path:
        return self.output_dir / f"{self.output_name}.stop"


def request_stop(output_dir: str | Path, output_name: str) -> Path:
    """Ask a running trainer to save and stop after its current step (it checks the flag file after
    every step: works on every OS, from any process); returns the flag's path. The output folder must
    exist (a run creates it as it starts): a mistyped one is not created."""
    flag = RunFiles(output_dir, output_name).stop_flag
    flag.write_text("stop requested\n", encoding="utf-8")
    return flag


def lora_stem_pattern(output_name: str) -> re.Pattern:
    """Every LoRA file stem a run called `output_name` writes (case ignored: on Windows and macOS
    `Hero.safetensors` and `hero.safetensors` are one file)."""
    return re.compile(rf"{re.escape(output_name)}(-\d{{6}}|-step\d{{8}})?", re.IGNORECASE)


def parse_lora_stem(stem: str, output_name: str | None = None) -> tuple[str, str, int, int]:
    """(output name, kind, epoch, step) that a file stem says; `output_name` (from the file's
    metadata) settles names that contain '-000001' themselves. Unknown numbers are 0."""
    if output_name is None or output_name != stem:
        match = _STOP_STEM.fullmatch(stem)
        if match and output_name in (None, match["name"]):
            return match["name"], STOP, 0, int(match["step"])
        match = _EPOCH_STEM.fullmatch(stem)
        if match and output_name in (None, match["name"]):
            return match["name"], EPOCH, int(match["epoch"]), 0
    return stem, FINAL, 0, 0


# --- the run folder ------------------------------------------------------------------------------

def run_folder_name(output_name: str, started: float) -> str:
    """`<output_name><YYYYmmddHHMMSS>` (kohya's TensorBoard folder name), local time."""
    return f"{output_name}{time.strftime(_RUN_STAMP_FORMAT, time.localtime(int(started)))}"


def run_folder_stamp(folder_name: str, output_name: str) -> str | None:
    """The YYYYmmddHHMMSS of a run folder of `output_name`, or None for any other folder."""
    if not folder_name.startswith(output_name):
        return None
    stamp = folder_name[len(output_name):]
    return stamp if _RUN_STAMP.fullmatch(stamp) else None


def events_file(run_dir: Path) -> Path:
    return Path(run_dir) / EVENTS_FILE


# --- events --------------------------------------------------------------------------------------

LAUNCH, WARNING, BUCKETS, CACHING, LATENTS = "launch", "warning", "buckets", "caching", "latents"
START, STEP, EPOCH_END, SAVED, STOPPED, FINISHED, ERROR = (
    "start", "step", "epoch", "saved", "stopped", "finished", "error")

# Each kind and its fields, in the order a run emits them; every line has "event" and "time" too.
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    # A trainer process began (or resumed) this run: which process (pid and its start time, so a UI can
    # tell whether it still runs, also one started from the command line) and where it writes.
    LAUNCH: ("output_dir", "output_name", "pid", "process_started", "resumed"),
    WARNING: ("message",),  # something the user should know (images without captions, ...)
    # the bucket report (text), the bucket sizes, and the captions cut at max_token_length:
    # [[caption file relative to train_data_dir, tokens cut], ...], longest cut first
    BUCKETS: ("report", "buckets", "truncated_captions"),
    CACHING: ("done", "total"),  # latent encoding progress
    LATENTS: ("encoded", "reused", "cache_dir"),  # latent cache outcome
    START: ("total_steps", "epochs", "steps_per_epoch", "images", "samples_per_epoch", "resumed_at_step",
            "run_dir", "processes", "device"),
    STEP: ("step", "epoch", "loss", "average_loss", "lr"),  # one optimizer step; lr: {"unet": ..}
    EPOCH_END: ("epoch", "loss", "step"),  # an epoch finished, with its mean loss
    SAVED: ("kind", "path", "epoch", "step", "rank_checksums"),  # a LoRA file written (EPOCH or STOP)
    STOPPED: ("step", "epoch", "resume_with"),  # stopped on request; resume_with: the state folder
    FINISHED: ("path", "epoch", "step"),  # the run ended; path: the final LoRA
    ERROR: ("kind", "message"),  # the run failed; kind: out_of_memory, output, training
}


class UndeclaredEvent(ValueError):
    """An event whose kind or fields are not the ones `EVENT_FIELDS` declares (a bug in the trainer)."""


def check_event(kind: str, fields: dict) -> None:
    declared = EVENT_FIELDS.get(kind)
    if declared is None:
        raise UndeclaredEvent(f"event kind {kind!r} is not declared in runs/layout.py")
    if set(fields) != set(declared):
        extra, missing = sorted(set(fields) - set(declared)), sorted(set(declared) - set(fields))
        raise UndeclaredEvent(f"event {kind!r}: fields differ from the declaration "
                              f"(not declared: {extra}, missing: {missing})")
