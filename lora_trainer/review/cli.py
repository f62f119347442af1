"""`python -m lora_trainer grid`: a run's epochs side by side in a fixed-seed grid, rendered standalone
with diffusers (no WebUI). Columns: the no-LoRA baseline and each LoRA file (`--lora`, or every epoch
file of a run with `--run-dir`); rows: the prompts, or LoRA weights for the first prompt (`--weight`).
Everything is checked before the model loads; the grid PNG, its cells and its parameters go to `--out`.

With `--run-dir` and `--follow`, the grid follows a training as it runs: the baseline first, then each
epoch file as the trainer saves it, the PNG saved again after each column, until the training that
writes that folder ends (its output lock is held by a live process; `--follow-timeout` stops waiting
sooner). An epoch renders as soon as it is saved when the render fits in the free memory beside the
training ("live"), else it waits for the training to end ("queued")."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lora_trainer.review.spec import Column, GridSpec, LoraRef, RenderSettings, Row

DEFAULT_SEED = 1234
DEFAULT_PROMPT = "a photo"


class GridArgsError(ValueError):
    """What is wrong with the command line, said before any model loads."""


def register(subparsers) -> None:
    p = subparsers.add_parser("grid", help="render a run's epochs in a fixed-seed grid (standalone, diffusers)",
                              description=__doc__)
    p.add_argument("--model", required=True, help="the base SDXL checkpoint (a single file or a diffusers folder)")
    p.add_argument("--model-config-dir", default=None,
                   help="SDXL's diffusers config folder, so a single file loads offline")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--lora", action="append", type=Path, default=[], help="a LoRA file (repeatable)")
    source.add_argument("--run-dir", type=Path, default=None,
                        help="a run's output folder: every epoch file of one output name, by epoch")
    p.add_argument("--output-name", default="", help="with --run-dir: whose files (default: the newest run's)")
    p.add_argument("--follow", action="store_true",
                   help="with --run-dir: add each epoch as the training running there saves it, until it ends")
    p.add_argument("--follow-timeout", type=float, default=None, metavar="SECONDS",
                   help="with --follow: stop waiting for new epochs after this long (default: until the training ends)")
    p.add_argument("--poll-seconds", type=float, default=2.0, metavar="SECONDS",
                   help="with --follow: how often to look for a new epoch file (default: 2)")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="a no-LoRA column first (default: on)")
    p.add_argument("--prompt", action="append", default=[], help=f"a row's prompt (repeatable; default {DEFAULT_PROMPT!r})")
    p.add_argument("--weight", action="append", type=float, default=[],
                   help="LoRA weight (repeatable): rows become these weights for the first prompt")
    p.add_argument("--seed", action="append", type=int, default=[], help=f"repeatable (default {DEFAULT_SEED})")
    defaults = RenderSettings()
    p.add_argument("--steps", type=int, default=defaults.steps)
    p.add_argument("--cfg", type=float, default=defaults.cfg_scale)
    p.add_argument("--sampler", default=defaults.sampler)
    p.add_argument("--width", type=int, default=defaults.width)
    p.add_argument("--height", type=int, default=defaults.height)
    p.add_argument("--negative", default=defaults.negative_prompt, help="the negative prompt")
    p.add_argument("--out", type=Path, default=Path("review"), help="where the grid goes (default: review)")
    p.add_argument("--name", default="grid", help="the grid's file name without .png (default: grid)")
    p.set_defaults(func=run_grid)


def build_spec(args: argparse.Namespace) -> GridSpec:
    """The grid the arguments describe, every file checked; GridArgsError says what is wrong. No torch."""
    settings = render_settings(args, check_model(args))
    columns = ([Column("no LoRA", None)] if args.baseline else []) + lora_columns(args)
    return GridSpec(columns=columns, rows=grid_rows(args), seeds=args.seed or [DEFAULT_SEED], settings=settings)


def check_model(args: argparse.Namespace) -> Path:
    """The base model, its config folder and the sampler checked; the model's path."""
    from lora_trainer.review.diffusers_render import check_sampler
    from lora_trainer.review.spec import RenderError

    model = Path(args.model).expanduser()
    if not model.exists():
        raise GridArgsError(f"base model not found: {model}")
    if args.model_config_dir and not Path(args.model_config_dir).is_dir():
        raise GridArgsError(f"model config folder not found: {args.model_config_dir}")
    try:
        check_sampler(args.sampler)
    except RenderError as e:
        raise GridArgsError(str(e)) from None
    return model


def render_settings(args: argparse.Namespace, model: Path) -> RenderSettings:
    try:
        return RenderSettings(negative_prompt=args.negative, steps=args.steps, cfg_scale=args.cfg,
                              sampler=args.sampler, width=args.width, height=args.height, checkpoint=str(model))
    except ValueError as e:
        raise GridArgsError(str(e)) from None


def grid_rows(args: argparse.Namespace) -> list[Row]:
    prompts = args.prompt or [DEFAULT_PROMPT]
    if args.weight:
        return [Row(f"weight {w:g}", prompts[0], w) for w in args.weight]
    return [Row(_short(p), p) for p in prompts]


def lora_columns(args: argparse.Namespace) -> list[Column]:
    from lora_trainer.runs.lora_files import project_lora_files, read_lora_file

    if args.run_dir is not None:
        if not args.run_dir.is_dir():
            raise GridArgsError(f"run folder not found: {args.run_dir}")
        files = project_lora_files(args.run_dir)
        names = list(dict.fromkeys(f.output_name for f in files))
        if not files:
            raise GridArgsError(f"no LoRA files in {args.run_dir}")
        name = args.output_name or names[0]
        if name not in names:
            raise GridArgsError(f"no LoRA files of {name!r} in {args.run_dir} (found: {', '.join(names)})")
        group = [f for f in files if f.output_name == name]
        epochs = sorted((f for f in group if f.kind == "epoch"), key=lambda f: (f.epoch, f.step))
        chosen = epochs or group  # a run stopped before its first epoch has only its stop file
    else:
        missing = [str(p) for p in args.lora if not Path(p).is_file()]
        if missing:
            raise GridArgsError(f"LoRA file not found: {', '.join(missing)}")
        try:
            chosen = [read_lora_file(Path(p)) for p in args.lora]
        except (OSError, ValueError) as e:
            raise GridArgsError(f"could not read a LoRA file: {e}") from None
    return [Column(_label(f), LoraRef(f.path, f.path.stem), epoch=f.epoch, step=f.step) for f in chosen]


def _label(lora_file) -> str:
    if lora_file.kind == "epoch" and lora_file.epoch:
        return f"epoch {lora_file.epoch}"
    return lora_file.path.stem


def _short(prompt: str, limit: int = 60) -> str:
    return prompt if len(prompt) <= limit else prompt[:limit - 1] + "…"


def _check_out_folder(out: Path, name: str) -> None:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise GridArgsError(f"not a file name for a grid: {name!r}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GridArgsError(f"cannot create the output folder {out}: {e.strerror or e}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise GridArgsError(f"the output folder {out} is not writable")


@contextlib.contextmanager
def _ctrl_c_stops(stop: threading.Event):
    """Ctrl-C finishes the cell being rendered, then the grid is saved with the cells it has; a
    second Ctrl-C aborts as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(_signum, _frame):
        print("\nstopping after this cell (Ctrl-C again to abort)", file=sys.stderr, flush=True)
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_grid(args: argparse.Namespace) -> int:
    if args.follow:
        return run_follow(args)
    try:
        spec = build_spec(args)
        _check_out_folder(args.out, args.name)
    except GridArgsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from lora_trainer.host import StandaloneHost
    from lora_trainer.review.grid import save_grid
    from lora_trainer.review.render import describe_cell, render_grid
    from lora_trainer.review.spec import RenderError

    host = StandaloneHost(workspace_dir=args.out, config_dir=args.model_config_dir)
    started = time.monotonic()

    def progress(done: int, total: int, key, cell) -> None:
        elapsed = time.monotonic() - started
        eta = elapsed / done * (total - done)
        status = "done" if not isinstance(cell, str) else f"error: {cell}"
        print(f"cell {done}/{total} ({describe_cell(spec, key)}): {status}; eta {eta:.0f} s", flush=True)

    total = len(spec.cells())
    print(f"rendering {total} cells ({len(spec.columns)} columns x {len(spec.rows)} rows x {len(spec.seeds)} "
          f"seeds) with {spec.settings.checkpoint}", flush=True)
    stop = threading.Event()
    try:
        with _ctrl_c_stops(stop):
            result = render_grid(spec, host, on_cell=progress, stop=stop)
    except RenderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    files = save_grid(spec, result.cells, args.out, args.name)
    if result.stopped:
        print(f"stopped: {len(result.cells)} of {total} cells rendered; the grid keeps them", file=sys.stderr)
    failed = len(result.errors)
    if failed:
        print(f"{failed} of {total} cells failed (shown in red in the grid)", file=sys.stderr)
    print(f"grid: {files.grid}")
    return 1 if failed else 0


# --- --follow: a grid that grows while the training runs --------------------------------------------

def followed_output_name(args: argparse.Namespace) -> str:
    """Whose epochs to follow in --run-dir: --output-name, else the training writing there now, else
    the newest files' name; GridArgsError when there is nothing to follow."""
    from lora_trainer.runs.layout import live_output_names
    from lora_trainer.runs.lora_files import project_lora_files

    if args.run_dir is None:
        raise GridArgsError("--follow needs --run-dir (the output folder the training writes its epochs into)")
    if not args.run_dir.is_dir():
        raise GridArgsError(f"run folder not found: {args.run_dir}")
    live = live_output_names(args.run_dir)
    names = list(dict.fromkeys(f.output_name for f in project_lora_files(args.run_dir)))
    if args.output_name:
        if args.output_name not in live + names:
            raise GridArgsError(f"nothing of {args.output_name!r} to follow in {args.run_dir}: no LoRA files "
                                f"of that name and no training writing them")
        return args.output_name
    if len(live) > 1:
        raise GridArgsError(f"several trainings write into {args.run_dir} ({', '.join(live)}): "
                            f"choose one with --output-name")
    if live or names:
        return (live or names)[0]
    raise GridArgsError(f"nothing to follow in {args.run_dir}: no LoRA files and no training writing there")


def training_running(run_dir: Path, output_name: str, timeout_s: float | None) -> Callable[[], bool]:
    """Whether the training of `output_name` still writes into `run_dir`: a live process holds its
    output lock (runs/layout.py; a lock left by a killed trainer does not count), for at most `timeout_s`."""
    from lora_trainer.runs.layout import output_lock_owner

    started = time.monotonic()

    def running() -> bool:
        if timeout_s is not None and time.monotonic() - started >= timeout_s:
            return False
        return output_lock_owner(run_dir, output_name) is not None

    return running


def run_follow(args: argparse.Namespace) -> int:
    try:
        settings = render_settings(args, check_model(args))
        rows = grid_rows(args)
        output_name = followed_output_name(args)
        _check_out_folder(args.out, args.name)
    except GridArgsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from lora_trainer.host import StandaloneHost
    from lora_trainer.review.live import LiveGrid, epoch_columns_source
    from lora_trainer.review.spec import RenderError

    host = StandaloneHost(workspace_dir=args.out, config_dir=args.model_config_dir)
    printer = _FollowPrinter(args.out, args.name, render_need_bytes_of(args.model))
    print(f"following {output_name!r} in {args.run_dir}: each saved epoch joins the grid", flush=True)
    stop = threading.Event()
    grid = LiveGrid(rows=rows, seeds=args.seed or [DEFAULT_SEED], settings=settings, baseline=args.baseline,
                    saved_columns=epoch_columns_source(args.run_dir, output_name),
                    running=training_running(args.run_dir, output_name, args.follow_timeout),
                    room=printer.room, host=host, stop=stop, on_cell=printer.cell, on_column=printer.column,
                    on_mode=printer.mode, poll_s=args.poll_seconds)
    printer.grid = grid
    try:
        with _ctrl_c_stops(stop):
            result = grid.run()
    except RenderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return printer.finish(result)


def render_need_bytes_of(model: str) -> int:
    from lora_trainer.review.live import render_need_bytes

    return render_need_bytes(Path(model).expanduser())


class _FollowPrinter:
    """What `grid --follow` prints and saves: the mode when it changes, each cell, the grid after each
    column. Once the model is loaded (the first cell), a render needs only its activations."""

    def __init__(self, out: Path, name: str, need_bytes: int):
        self.out, self.name, self.need_bytes = out, name, need_bytes
        self.grid_path: Path | None = None
        self.grid = None  # the LiveGrid, for the cells' descriptions

    def room(self):
        from lora_trainer.review.live import decide_room, free_render_memory

        free, device = free_render_memory()
        return decide_room(free, self.need_bytes, device)

    def mode(self, _mode: str, reason: str) -> None:
        print(reason, flush=True)

    def cell(self, done: int, total: int, key, cell) -> None:
        from lora_trainer.review.live import ACTIVATIONS_1024_BYTES

        self.need_bytes = min(self.need_bytes, ACTIVATIONS_1024_BYTES)  # the model is loaded now
        from lora_trainer.review.render import describe_cell

        status = "done" if not isinstance(cell, str) else f"error: {cell}"
        print(f"cell {done}/{total} ({describe_cell(self.grid.spec, key)}): {status}", flush=True)

    def column(self, spec: GridSpec, cells: dict) -> None:
        self.grid_path = self._save(spec, cells)
        done = sum(1 for key in cells if key[2] == len(spec.columns) - 1)
        print(f"column {spec.columns[-1].label}: {done} cells; grid: {self.grid_path}", flush=True)

    def _save(self, spec: GridSpec, cells: dict) -> Path:
        from lora_trainer.review.grid import save_grid

        return save_grid(spec, cells, self.out, self.name).grid

    def finish(self, result) -> int:
        if result is None:
            print("stopped before any cell was rendered; no grid written", file=sys.stderr)
            return 0
        if result.stopped:
            self.grid_path = self._save(result.spec, result.cells)
            print(f"stopped: {len(result.cells)} cells rendered; the grid keeps them", file=sys.stderr)
        failed = len(result.errors)
        if failed:
            print(f"{failed} of {len(result.cells)} cells failed (shown in red in the grid)", file=sys.stderr)
        print(f"grid: {self.grid_path}")
        return 1 if failed else 0


# --- a training run that asks for its grid (`train --grid-prompt`) -----------------------------------

def follow_command(*, run_dir: Path, output_name: str, model: str, model_config_dir: str | None,
                   prompts: list[str], seeds: list[int], width: int, height: int, out: Path) -> list[str]:
    """The `grid --follow` command a training starts beside itself: its epochs, at its size, into
    `out/grid.png` (a folder of `review/saved.py`'s layout, so the Review tab shows it)."""
    from lora_trainer.host import python_module_command
    from lora_trainer.review.saved import GRID_NAME

    command = python_module_command() + [
        "grid", "--follow", "--run-dir", str(run_dir), "--output-name", output_name, "--model", model,
        "--width", str(width), "--height", str(height), "--out", str(out), "--name", GRID_NAME]
    if model_config_dir:
        command += ["--model-config-dir", str(model_config_dir)]
    for prompt in prompts:
        command += ["--prompt", prompt]
    for seed in seeds:
        command += ["--seed", str(seed)]
    return command


def review_dir_for(output_dir: str | Path) -> Path:
    """Where a run's grids go: `review/` beside its output folder (a project's `review/` beside
    `model/`, where the Review tab looks)."""
    return Path(output_dir).resolve().parent / "review"


class GridFollower:
    """`grid --follow` in its own process for a training run: started at the run's first event (its
    output lock is held by then, so the follower sees it running), waited for when the run ends; its
    output goes to `follow.log` beside the grid."""

    def __init__(self, command: list[str], out: Path):
        self.command, self.out = command, Path(out)
        self.process = None
        self.log_path = self.out / "follow.log"

    def start(self) -> None:
        import subprocess

        from lora_trainer.host import subprocess_env

        if self.process is not None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=subprocess_env())
        print(f"review grid: each saved epoch joins {self.out / 'grid.png'} (log: {self.log_path})", flush=True)

    def wait(self) -> int | None:
        """The follower's exit code after it rendered what is left (None when it never started)."""
        if self.process is None:
            return None
        print("review grid: rendering the epochs left ...", flush=True)
        try:
            code = self.process.wait()
        except KeyboardInterrupt:  # a second Ctrl-C: the follower got it too and saves what it has
            code = self.process.wait()
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        last = lines[-1] if lines else ""
        print(last if last.startswith("grid: ") else f"review grid: ended with code {code}: {last}", flush=True)
        return code
