"""`python -m lora_trainer train --config my.json [--resume DIR]`, `... stop --config my.json` and
`... memory --config my.json` (the GPU memory a run needs, before it starts)."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import traceback
from pathlib import Path

from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.config.settings import check_paths
from lora_trainer.runs import layout
from lora_trainer.runs.layout import request_stop


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="train an SDXL LoRA from a config file",
                                  description="Train an SDXL LoRA. One .safetensors per saved epoch in "
                                  "output_dir, TensorBoard logs and events.jsonl in logging_dir. Ctrl-C or "
                                  "`stop` finishes the step, saves, and exits; --resume continues.")
    train.add_argument("--config", required=True, type=Path, help="our JSON config (see `config --preset`)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one setting for this run without editing the file, e.g. --set "
                       "max_train_epochs=4 or --set output_name=hero_v2 (repeatable; VALUE is JSON, "
                       "else a string); `stop` and `--resume` need the same --set options")
    # const is not a string: argparse would pass a string const through `type` (Path("auto")).
    train.add_argument("--resume", type=Path, nargs="?", const=True, default=None,
                       help="continue a stopped run from its '<output_name>-state' folder "
                       "(no value: the one in output_dir)")
    train.add_argument("--resume-changed", action="store_true",
                       help="with --resume: continue even if training images or captions changed since the "
                       "run stopped (the changes are listed as a warning); without it such a resume is refused")
    train.add_argument("--model-config-dir", default=None,
                       help="diffusers config folder for a single-file checkpoint (offline loading), "
                       "e.g. Forge's backend/huggingface/stabilityai/stable-diffusion-xl-base-1.0")
    train.add_argument("--grid-prompt", action="append", default=[], metavar="PROMPT",
                       help="render a review grid of the run's epochs, each as it is saved (`grid --follow` in "
                       "its own process, live when the GPU has room for it, else after the run): a row per "
                       "prompt (repeatable); the grid goes to review/<output_name>/<time>/grid.png beside "
                       "output_dir, where the Review tab finds it")
    train.add_argument("--grid-seed", action="append", type=int, default=[], metavar="SEED",
                       help="with --grid-prompt: a seed of the grid (repeatable; default 1234)")
    train.set_defaults(func=run_train)

    stop = subparsers.add_parser("stop", help="ask a running training to save and stop after this step",
                                 description="Write the stop flag <output_dir>/<output_name>.stop that the "
                                 "run checks after each step: it saves the LoRA and its state, and exits.")
    stop.add_argument("--config", required=True, type=Path, help="the config the run was started with")
    stop.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="the --set options the run was started with (output_dir and output_name say "
                      "where the flag goes)")
    stop.set_defaults(func=run_stop)

    memory = subparsers.add_parser(
        "memory", help="estimate the GPU memory a training run needs, before starting it",
        description="The expected peak GPU memory of a training step with these settings (and of the set-up "
        "before it), by what holds it; on a machine with a CUDA GPU, whether it fits and the single setting "
        "changes that make it fit. Nothing is loaded: the estimate builds the models without weights.")
    memory.add_argument("--config", type=Path, help="our JSON config ('-' reads it from stdin)")
    memory.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as for `train`")
    memory.add_argument("--model-config-dir", default=None, help="SDXL's diffusers config folder (as for `train`)")
    memory.add_argument("--gpu-gib", type=float, default=None,
                        help="judge against a GPU of this many GiB instead of this machine's first CUDA GPU")
    memory.add_argument("--json", action="store_true", help="print one JSON object (what the Train panel reads)")
    memory.add_argument("--serve", action="store_true",
                        help="answer one JSON request a line on stdin ({settings, model_config_dir, gpu_gib}) with "
                        "one JSON object a line, until stdin closes (the Train panel's estimate worker)")
    memory.set_defaults(func=run_memory)


def load_config(path: Path, overrides: list[str]) -> TrainConfig:
    cfg = TrainConfig.from_dict(json.load(sys.stdin)) if str(path) == "-" else TrainConfig.from_json(path)
    changes = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            changes[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            changes[key.strip()] = value  # a plain string such as a path
    return cfg.replace(**changes) if changes else cfg


def run_train(args: argparse.Namespace) -> int:
    # Settings and paths are checked before anything is created or loaded (and before torch is imported).
    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if getattr(args, "resume_changed", False) and args.resume is None:
        print("error: --resume-changed goes with --resume", file=sys.stderr)
        return 1
    if getattr(args, "grid_seed", None) and not args.grid_prompt:
        print("error: --grid-seed goes with --grid-prompt", file=sys.stderr)
        return 1
    problems = check_paths(cfg)
    if problems:
        for problem in problems:
            print(f"error: {args.config}: {problem}", file=sys.stderr)
        print("Nothing was started. Edit the file (or use --set KEY=VALUE); `python -m lora_trainer config "
              f"--check {args.config}` checks it.", file=sys.stderr)
        return 1

    from lora_trainer.train.data import DatasetError
    from lora_trainer.train.model import ModelLoadError
    from lora_trainer.train.optim import OptimizerUnavailable
    from lora_trainer.train.state import ResumeError, state_dir_for
    from lora_trainer.train.trainer import TrainingError, train

    follower = grid_follower(cfg, args)
    on_event = print_event
    if follower is not None:
        def on_event(event: dict) -> None:  # the first event: the run holds its output lock
            follower.start()
            print_event(event)
    try:
        resume = state_dir_for(cfg.output_dir, cfg.output_name) if args.resume is True else args.resume
        result = train(cfg, resume_from=resume, model_config_dir=args.model_config_dir, on_event=on_event,
                       **({"resume_changed": True} if getattr(args, "resume_changed", False) else {}))
    except (ConfigError, DatasetError, ModelLoadError, ResumeError, TrainingError, OptimizerUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if follower is not None:
            follower.wait()
    if result.stopped:
        own_state = Path(result.state_dir) == state_dir_for(cfg.output_dir, cfg.output_name)
        print(f"stopped at step {result.global_step}; resume with:\n  "
              f"{resume_command(args, None if own_state else result.state_dir)}")
    return 0


def grid_follower(cfg: TrainConfig, args: argparse.Namespace):
    """The review grid the run asked for with --grid-prompt (None without): a `grid --follow` process."""
    if not getattr(args, "grid_prompt", None):
        return None
    from lora_trainer.review.cli import GridFollower, follow_command, review_dir_for
    from lora_trainer.review.saved import new_grid_folder

    out = new_grid_folder(review_dir_for(cfg.output_dir), cfg.output_name)
    width, height = cfg.resolution
    command = follow_command(run_dir=Path(cfg.output_dir), output_name=cfg.output_name,
                             model=cfg.pretrained_model_name_or_path, model_config_dir=args.model_config_dir,
                             prompts=args.grid_prompt, seeds=args.grid_seed, width=width, height=height, out=out)
    return GridFollower(command, out)


def resume_command(args: argparse.Namespace, state_dir: str | Path | None = None) -> str:
    """The `train` command that continues this run: the same config, --set options and
    --model-config-dir, and --resume (its folder only when it is not the run's own), shell-quoted."""
    parts = [_python(), "-m", "lora_trainer", "train", "--config", str(args.config)]
    for item in args.set:
        parts += ["--set", item]
    if args.model_config_dir:
        parts += ["--model-config-dir", str(args.model_config_dir)]
    parts.append("--resume")
    if state_dir is not None:
        parts.append(str(state_dir))
    return shlex.join(parts)


def _python() -> str:
    """`python` when that is this interpreter (an activated venv), else this interpreter's path."""
    found = shutil.which("python")
    if found and Path(found).absolute() == Path(sys.executable).absolute():
        return "python"
    return sys.executable


def run_stop(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not cfg.output_dir.strip():
        print(f"error: {args.config}: output_dir is empty: the stop flag goes in the run's output_dir. "
              "Set it in the file, or pass the run's --set output_dir=DIR.", file=sys.stderr)
        return 1
    if not Path(cfg.output_dir).is_dir():
        print(f"error: {cfg.output_dir} does not exist, so no run writes there (a run creates its output_dir "
              "as it starts): check the path, or give `stop` the same --set options as `train`.", file=sys.stderr)
        return 1
    flag = request_stop(cfg.output_dir, cfg.output_name)
    print(f"stop requested: wrote {flag}\nThe run with output_name {cfg.output_name!r} saves and exits after "
          "its current step (a run started later ignores this flag).")
    return 0


def run_memory(args: argparse.Namespace) -> int:
    if args.serve:
        return serve_memory()
    if args.config is None:
        print("error: memory needs --config (or --serve)", file=sys.stderr)
        return 2
    report = memory_report(args)
    if args.json:
        print(json.dumps(report))
        return 0 if report["error"] is None else 1
    if report["error"] is not None:
        print(f"error: {report['error']}", file=sys.stderr)
        return 1
    gpu = f" ({report['gpu_name']})" if report["gpu_name"] else ""
    print(f"GPU memory: {report['summary']}{gpu}")
    for fix in report["fixes"]:
        print(f"  to fit: {fix}")
    return 0


def serve_memory() -> int:
    """`memory --serve`: a report a line for each request line, until stdin closes. The Train panel keeps
    one such process: torch and diffusers are imported once, not for every change of the form."""
    answers, sys.stdout = sys.stdout, sys.stderr  # a library's print must not come between the answers
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            cfg = TrainConfig.from_dict(request["settings"])
        except (ValueError, KeyError, TypeError, ConfigError) as e:  # the request's fault: say so, go on
            report = _empty_report(f"the settings: {e}")
        else:
            try:
                report = estimate_report(cfg, request.get("model_config_dir"), request.get("gpu_gib"))
            except Exception as e:  # noqa: BLE001 - one estimate failing must not end the worker
                traceback.print_exc()
                report = _empty_report(f"{type(e).__name__}: {e}")
        answers.write(json.dumps(report) + "\n")
        answers.flush()
    return 0


def _empty_report(error: str | None = None) -> dict:
    return {"summary": None, "total_bytes": None, "gpu_name": None, "gpu_bytes": None, "fixes": [], "error": error}


def memory_report(args: argparse.Namespace) -> dict:
    """{"summary", "total_bytes", "gpu_name", "gpu_bytes", "fixes", "error"} for `memory`."""
    try:
        cfg = load_config(args.config, args.set)
    except (ConfigError, ValueError) as e:  # ValueError: stdin that is not JSON
        return _empty_report(f"{args.config}: {e}")
    return estimate_report(cfg, args.model_config_dir, args.gpu_gib)


def estimate_report(cfg: TrainConfig, model_config_dir: str | None, gpu_gib: float | None) -> dict:
    """The estimate for `cfg`, judged against `gpu_gib` (None: this machine's first CUDA GPU, if any)."""
    from lora_trainer.train.model import ModelLoadError, find_config_dir
    from lora_trainer.train.vram import estimate_training_memory, fixes_to_fit

    report = _empty_report()
    try:
        config_dir = find_config_dir(model_config_dir, allow_download=False)
    except ModelLoadError:
        report["error"] = ("SDXL's config folder is not on this machine yet (it comes with the first training "
                           "or with Forge; or pass --model-config-dir)")
        return report
    if gpu_gib is not None:
        gpu = (int(gpu_gib * 2**30), f"{gpu_gib:g} GiB GPU")
    else:
        gpu = training_gpu()
    estimate = estimate_training_memory(cfg, config_dir)
    report.update(summary=estimate.summary(gpu[0] if gpu else None), total_bytes=estimate.total_bytes)
    if gpu:
        fixes = [] if estimate.fits(gpu[0]) else fixes_to_fit(cfg, config_dir, gpu[0])
        report.update(gpu_bytes=gpu[0], gpu_name=gpu[1], fixes=fixes)
    return report


def training_gpu() -> tuple[int, str] | None:
    """(total bytes, name) of the GPU a run would train on (the first CUDA device), or None."""
    import torch

    if not torch.cuda.is_available():
        return None
    properties = torch.cuda.get_device_properties(0)
    return int(properties.total_memory), str(properties.name)


def print_event(event: dict) -> None:
    """Console lines for what the progress bar does not show; written through tqdm, which clears the
    bar first, so a line never lands glued to a half-drawn progress bar (trainer.log merges both)."""
    from tqdm import tqdm

    kind = event["event"]
    if kind == layout.WARNING:
        tqdm.write(f"warning: {event['message']}", file=sys.stderr)
    elif kind == layout.BUCKETS:
        tqdm.write(event["report"], file=sys.stdout)
    elif kind == layout.LATENTS:
        tqdm.write(f"latents: {event['encoded']} encoded, {event['reused']} reused from cache", file=sys.stdout)
    elif kind == layout.START:
        held_out = f", {event['validation_images']} image(s) held out" if event.get("validation_images") else ""
        tqdm.write(f"training {event['total_steps']} steps ({event['epochs']} epochs x {event['steps_per_epoch']}"
                   f"{held_out}) on {event['device']}; TensorBoard: tensorboard --logdir "
                   f"{Path(event['run_dir']).parent}", file=sys.stdout)
    elif kind == layout.VALIDATION:
        tqdm.write(f"epoch {event['epoch']}: validation loss {event['loss']:.5f} on {event['images']} held-out "
                   "image(s)", file=sys.stdout)
    elif kind == layout.SAVED:
        tqdm.write(f"saved {event['path']}", file=sys.stdout)
    elif kind == layout.FINISHED:
        tqdm.write(f"finished: {event['path']}", file=sys.stdout)
