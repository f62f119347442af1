"""`python -m lora_trainer train --config my.json [--resume DIR]` and `... stop --config my.json`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.train.stop import request_stop


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="train an SDXL LoRA from a config file",
                                  description="Train an SDXL LoRA. One .safetensors per saved epoch in "
                                  "output_dir, TensorBoard logs and events.jsonl in logging_dir. Ctrl-C or "
                                  "`stop` finishes the step, saves, and exits; --resume continues.")
    train.add_argument("--config", required=True, type=Path, help="our JSON config (see `config --preset`)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one setting, e.g. --set max_train_epochs=4 (repeatable)")
    # const is not a string: argparse would pass a string const through `type` (Path("auto")).
    train.add_argument("--resume", type=Path, nargs="?", const=True, default=None,
                       help="continue a stopped run from its '<output_name>-state' folder "
                       "(no value: the one in output_dir)")
    train.add_argument("--model-config-dir", default=None,
                       help="diffusers config folder for a single-file checkpoint (offline loading), "
                       "e.g. Forge's backend/huggingface/stabilityai/stable-diffusion-xl-base-1.0")
    train.set_defaults(func=run_train)

    stop = subparsers.add_parser("stop", help="ask a running training to save and stop after this step")
    stop.add_argument("--config", required=True, type=Path)
    stop.set_defaults(func=run_stop)


def load_config(path: Path, overrides: list[str]) -> TrainConfig:
    cfg = TrainConfig.from_json(path)
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
    # Imported here so `--help` and config errors answer without loading torch.
    from lora_trainer.train.data import DatasetError
    from lora_trainer.train.model import ModelLoadError
    from lora_trainer.train.optim import OptimizerUnavailable
    from lora_trainer.train.state import ResumeError, state_dir_for
    from lora_trainer.train.trainer import TrainingError, train

    try:
        cfg = load_config(args.config, args.set)
        resume = state_dir_for(cfg.output_dir, cfg.output_name) if args.resume is True else args.resume
        result = train(cfg, resume_from=resume, model_config_dir=args.model_config_dir, on_event=print_event)
    except (ConfigError, DatasetError, ModelLoadError, ResumeError, TrainingError, OptimizerUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if result.stopped:
        print(f"stopped at step {result.global_step}; resume with:\n  python -m lora_trainer train "
              f"--config {args.config} --resume {result.state_dir}")
    return 0


def run_stop(args: argparse.Namespace) -> int:
    cfg = TrainConfig.from_json(args.config)
    flag = request_stop(cfg.output_dir, cfg.output_name)
    print(f"stop requested ({flag}); the run saves and exits after its current step")
    return 0


def print_event(event: dict) -> None:
    """Console lines for what the progress bar does not show."""
    kind = event["event"]
    if kind == "warning":
        print(f"warning: {event['message']}", file=sys.stderr)
    elif kind == "buckets":
        print(event["report"])
    elif kind == "latents":
        print(f"latents: {event['encoded']} encoded, {event['reused']} reused from cache")
    elif kind == "start":
        print(f"training {event['total_steps']} steps ({event['epochs']} epochs x {event['steps_per_epoch']}) "
              f"on {event['device']}; TensorBoard: tensorboard --logdir {Path(event['run_dir']).parent}")
    elif kind == "saved":
        print(f"saved {event['path']}")
    elif kind == "finished":
        print(f"finished: {event['path']}")
