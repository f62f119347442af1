"""`python -m lora_trainer config`: write a preset, import a kohya_ss GUI JSON, list presets, check a file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lora_trainer.config.kohya_import import import_kohya, is_inactive, read_kohya_json
from lora_trainer.config.presets import load_preset, preset_names
from lora_trainer.config.settings import ConfigError, TrainConfig
from lora_trainer.fsutil import OutputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config", help="write, import and check training settings (JSON)",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
        epilog="Without -o the resulting JSON is printed.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--preset", metavar="NAME", help="write a named preset as a config JSON")
    action.add_argument("--import-kohya", metavar="KOHYA_JSON", type=Path,
                        help="convert a kohya_ss GUI JSON; lists the settings not applied")
    action.add_argument("--list-presets", action="store_true", help="print the preset names")
    action.add_argument("--check", metavar="CONFIG_JSON", type=Path, help="validate a config JSON")
    parser.add_argument("-o", "--output", metavar="OUT_JSON", type=Path, help="where to write the config")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.list_presets:
            print("\n".join(preset_names()))
        elif args.preset:
            _emit(load_preset(args.preset), args.output)
        elif args.import_kohya:
            _import(args.import_kohya, args.output)
        else:
            config = TrainConfig.from_json(args.check)
            print(f"{args.check}: OK ({_summary(config)})")
    except (ConfigError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _emit(config: TrainConfig, output: Path | None) -> None:
    if output is None:
        print(json.dumps(config.to_dict(), indent=2))
    else:
        config.save_json(output)
        print(f"wrote {output} ({_summary(config)})", file=sys.stderr)


def _import(source: Path, output: Path | None) -> None:
    data = read_kohya_json(source)
    result = import_kohya(data)
    active = {k: r for k, r in result.ignored.items() if not is_inactive(k, data[k])}
    off = sorted(set(result.ignored) - set(active))
    # stderr, so that the JSON on stdout (without -o) stays clean
    if active:
        print(f"Not applied from {source.name}:", file=sys.stderr)
        for key, reason in active.items():
            print(f"  {key} = {data[key]!r}: {reason}", file=sys.stderr)
    if off:
        print(f"Also not applied (empty, off or kohya's default in the file): {', '.join(off)}", file=sys.stderr)
    _emit(result.config, output)


def _summary(config: TrainConfig) -> str:
    width, height = config.resolution
    return (f"{config.max_train_epochs} epochs, {width}x{height}, rank {config.network_dim} "
            f"alpha {config.network_alpha:g}, {config.optimizer}, batch {config.train_batch_size}")
