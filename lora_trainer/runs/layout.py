"""A run's names and events: the one definition the trainer writes through and the UI reads through.

A run called `<output_name>` (kohya's layout, so other tools find its files):
```
<output_dir>/<output_name>-000001.safetensors      one per saved epoch (6 digits)
<output_dir>/<output_name>-step00000123.safetensors saved when stopped (8 digits)
<output_dir>/<output_name>.safetensors             the last epoch again, when the run finishes
<output_dir>/<output_name>.json                    the settings it ran with
<output_dir>/<output_name>-state/                  what --resume needs (progress.json, state.pt, ...)
<output_dir>/<output_name>.stop                    a stop request (flag file)
<output_dir>/<output_name>.lock                    held while a run writes these files (pid + start time)
<logging_dir>/<output_name><YYYYmmddHHMMSS>/       TensorBoard files and events.jsonl (`-2`, `-3`, ...
                                                   added when two runs start in the same second)
```
While writing, a file goes to a temporary name first (`.<file name>.XXXXXXXX.tmp`, `fsutil.atomic_path`;
the state to `<output_name>-state.tmp/`, the previous one kept as `<output_name>-state.old/` for a
moment): a run removes such leftovers of a killed run of its name as it starts (`RunFiles.leftovers`).
`events.jsonl` holds one JSON object per line: "event" (a kind in `EVENT_FIELDS`), "time", and
exactly that kind's fields. No torch here.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

LORA_SUFFIX = ".safetensors"
LOCK_SUFFIX = ".lock"
EVENTS_FILE = "events.jsonl"
SCORES_FILE = "epoch_scores.json"  # in a run folder: the epoch scores of its newest scored review grid
PROGRESS_FILE = "progress.json"  # inside the state folder: counters and the run folder's name
_RUN_STAMP_FORMAT = "%Y%m%d%H%M%S"
_RUN_STAMP = re.compile(r"(?P<stamp>\d{14})(-(?P<n>[2-9]|[1-9]\d+))?")
_TMP_RANDOM = "XXXXXXXX"  # tempfile's random part: 8 characters
NAME_MAX_FALLBACK = 255
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

    @property
    def ema_name(self) -> str:
        """The output name of a run's EMA weights saved alongside its own (ema_save "alongside")."""
        return f"{self.output_name}_ema"

    def ema_epoch_lora(self, epoch: int) -> Path:
        return self.output_dir / f"{self.ema_name}-{epoch:06d}{LORA_SUFFIX}"

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

    @property
    def lock(self) -> Path:
        return self.output_dir / f"{self.output_name}{LOCK_SUFFIX}"

    @property
    def state_tmp(self) -> Path:
        return self.output_dir / f"{self.output_name}-state.tmp"

    @property
    def state_old(self) -> Path:
        return self.output_dir / f"{self.output_name}-state.old"

    def longest_names(self) -> list[str]:
        """The longest file names a run writes into output_dir (temporary names included)."""
        stop = self.stop_lora(0).name
        return [stop, f".{stop}.{_TMP_RANDOM}.tmp", self.state_tmp.name, self.state_old.name,
                f".{self.epoch_lora(1).name}.{_TMP_RANDOM}.tmp", f".{self.config.name}.{_TMP_RANDOM}.tmp",
                self.lock.name]

    def leftovers(self) -> list[Path]:
        """Temporary files a killed run of this name left: `.<its file>.XXXXXXXX.tmp` in output_dir
        (never another name's, never anything else); the state folders are `state_tmp`/`state_old`."""
        pattern = re.compile(rf"\.{re.escape(self.output_name)}(-\d{{6}}|-step\d{{8}})?"
                             rf"\.(safetensors|json)\.[A-Za-z0-9_]{{8}}\.tmp")
        try:
            entries = list(self.output_dir.iterdir())
        except OSError:
            return []
        return sorted(p for p in entries if pattern.fullmatch(p.name) and p.is_file())


def name_max(folder: str | Path) -> int:
    """The longest file name (bytes) `folder` allows; its nearest existing parent's when it does not exist."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # Windows has no pathconf
        return NAME_MAX_FALLBACK


def check_name_lengths(output_dir: str | Path, output_name: str, logging_dir: str | Path | None = None) -> str | None:
    """A message if a file name the run will create is longer than its folder allows, else None."""
    encoding = "utf-8"
    checks = [(Path(output_dir), RunFiles(output_dir, output_name).longest_names())]
    if logging_dir is not None:
        checks.append((Path(logging_dir), [f"{output_name}{'0' * 14}-99"]))
    for folder, names in checks:
        limit = name_max(folder)
        longest = max(names, key=lambda n: len(n.encode(encoding, "surrogateescape")))
        length = len(longest.encode(encoding, "surrogateescape"))
        if length > limit:
            room = len(output_name.encode(encoding, "surrogateescape")) - (length - limit)
            return (f"output_name {output_name!r} is too long: the run would write {longest!r} "
                    f"({length} bytes) but {folder} allows file names of at most {limit} bytes; "
                    f"shorten output_name to at most {max(room, 0)} characters")
    return None


def request_stop(output_dir: str | Path, output_name: str) -> Path:
    """Ask a running trainer to save and stop after its current step (it checks the flag file after
    every step: works on every OS, from any process); returns the flag's path. The output folder must
    exist (a run creates it as it starts): a mistyped one is not created."""
    flag = RunFiles(output_dir, output_name).stop_flag
    flag.write_text("stop requested\n", encoding="utf-8")
    return flag


# --- the output lock -----------------------------------------------------------------------------

def _lock_holder_alive(owner: dict) -> bool:
    from lora_trainer.runs.trainer_record import RecordedProcess

    pid, started = owner.get("pid"), owner.get("started")
    if not isinstance(pid, int) or not isinstance(started, (int, float)):
        return False
    return RecordedProcess.find(pid, float(started)) is not None


def output_lock_owner(output_dir: str | Path, output_name: str) -> dict | None:
    """What the live run writing `output_name` in `output_dir` put in its lock (pid, started), or None."""
    from lora_trainer.fsutil import lock_owner

    return lock_owner(RunFiles(output_dir, output_name).lock, _lock_holder_alive)


def live_output_names(output_dir: str | Path) -> list[str]:
    """The output names a live run is writing in `output_dir` now (their lock held by a running
    process), sorted; [] for a folder without any (or that does not exist)."""
    try:
        locks = [p for p in Path(output_dir).iterdir() if p.name.endswith(LOCK_SUFFIX) and p.is_file()]
    except OSError:
        return []
    names = (p.name[:-len(LOCK_SUFFIX)] for p in locks)
    return sorted(name for name in names if name and output_lock_owner(output_dir, name) is not None)


def take_output_lock(output_dir: str | Path, output_name: str, pid: int, started: float | None) -> dict:
    """Lock `output_name` in `output_dir` for process `pid` (started at `started`); fsutil.LockHeld if a
    live run holds it (a lock left by a process that has ended is replaced). Returns the lock's content."""
    from lora_trainer.fsutil import acquire_lock

    owner = {"pid": pid, "started": started, "output_name": output_name}
    acquire_lock(RunFiles(output_dir, output_name).lock, owner, _lock_holder_alive)
    return owner


def lock_refusal(output_dir: str | Path, output_name: str, owner: dict) -> str:
    """Why a second run on the same output is refused, naming the running one."""
    pid, started = owner.get("pid"), owner.get("started")
    since = (f", started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"
             if isinstance(started, (int, float)) else "")
    who = f"process {pid}{since}" if pid else "a process that is starting now"
    return (f"another training is already writing {output_name!r} in {output_dir} ({who}); nothing was "
            f"started. Wait until it ends or stop it (`python -m lora_trainer stop`, or Stop in the UI), "
            f"or choose another output_name or output_dir")


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
    """The YYYYmmddHHMMSS of a run folder of `output_name` (`<name><stamp>` or `<name><stamp>-N`),
    or None for any other folder."""
    match = _run_folder_match(folder_name, output_name)
    return match["stamp"] if match else None


def run_folder_order(folder_name: str, output_name: str) -> tuple[str, int] | None:
    """(stamp, N) of a run folder of `output_name`, for sorting them in the order they were made."""
    match = _run_folder_match(folder_name, output_name)
    return (match["stamp"], int(match["n"] or 1)) if match else None


def _run_folder_match(folder_name: str, output_name: str) -> re.Match | None:
    if not folder_name.startswith(output_name):
        return None
    return _RUN_STAMP.fullmatch(folder_name[len(output_name):])


def claim_run_folder(logging_dir: str | Path, output_name: str, started: float) -> Path:
    """Create and return a new run folder `<name><stamp>`, or `<name><stamp>-2`, `-3`, ... when one of
    that name exists already (two runs started in the same second never share a folder)."""
    base = run_folder_name(output_name, started)
    Path(logging_dir).mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        folder = Path(logging_dir) / (base if n == 1 else f"{base}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            n += 1


def events_file(run_dir: Path) -> Path:
    return Path(run_dir) / EVENTS_FILE


def scores_file(run_dir: Path) -> Path:
    return Path(run_dir) / SCORES_FILE


# --- events --------------------------------------------------------------------------------------

LAUNCH, WARNING, BUCKETS, CACHING, LATENTS = "launch", "warning", "buckets", "caching", "latents"
START, STEP, EPOCH_END, VALIDATION, SAVED, STOPPED, FINISHED, ERROR = (
    "start", "step", "epoch", "validation", "saved", "stopped", "finished", "error")

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
            "run_dir", "processes", "device", "validation_images"),
    STEP: ("step", "epoch", "loss", "average_loss", "lr"),  # one optimizer step; lr: {"unet": ..}
    EPOCH_END: ("epoch", "loss", "step"),  # an epoch finished, with its mean loss
    # the loss on the held-out images after an epoch (train/validation.py), and how many there are
    VALIDATION: ("epoch", "loss", "step", "images"),
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
