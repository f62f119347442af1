"""`python -m lora_trainer config`: write a preset, import a kohya_ss GUI JSON, list presets, check a file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lora_trainer.config.kohya_import import import_kohya, is_inactive, read_kohya_json
from lora_trainer.config.presets import load_preset, preset_names
from lora_trainer.config.settings import ConfigError, TrainConfig, check_paths
from lora_trainer.fsutil import OutputError
from lora_trainer.project import Project


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
    action.add_argument("--check", metavar="CONFIG_JSON", type=Path,
                        help="validate a config JSON, its paths included (exit 1 naming each problem)")
    parser.add_argument("-o", "--output", metavar="OUT_JSON", type=Path, help="where to write the config")
    parser.add_argument("--project", metavar="DIR", type=Path,
                        help="with --preset/--import-kohya: a project folder in the guide's layout; sets "
                        "train_data_dir=DIR/img, output_dir=DIR/model, logging_dir=DIR/log, "
                        "output_name=DIR's name")
    parser.add_argument("--model", metavar="PATH",
                        help="with --preset/--import-kohya: the base model (pretrained_model_name_or_path): "
                        "an SDXL .safetensors file, a diffusers folder or a hub id")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        if (args.project or args.model) and not (args.preset or args.import_kohya):
            raise ConfigError("--project and --model go with --preset or --import-kohya")
        if args.list_presets:
            print("\n".join(preset_names()))
        elif args.preset:
            _emit(_with_paths(load_preset(args.preset), args), args.output)
        elif args.import_kohya:
            _import(args.import_kohya, args.output, args)
        else:
            config = TrainConfig.from_json(args.check)
            problems = check_paths(config) + _name_problems(config)
            for problem in problems:
                print(f"error: {args.check}: {problem}", file=sys.stderr)
            if problems:
                return 1
            print(f"{args.check}: OK ({_summary(config)})")
    except (ConfigError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _with_paths(config: TrainConfig, args: argparse.Namespace) -> TrainConfig:
    """--project and --model applied (absolute paths, so the config works from any folder)."""
    changes = {}
    if args.project:
        root = args.project.expanduser().resolve()
        try:
            project = Project(root, name=root.name)
        except ValueError as e:
            raise ConfigError(f"--project {args.project}: {e}") from e
        changes.update(train_data_dir=str(project.img), output_dir=str(project.model),
                       logging_dir=str(project.log), output_name=project.name)
    if args.model:
        local = Path(args.model).expanduser()
        changes["pretrained_model_name_or_path"] = str(local.resolve()) if local.exists() else args.model
    return config.replace(**changes) if changes else config


def _name_problems(config: TrainConfig) -> list[str]:
    """An output_name too long for the file names a run writes into output_dir (checked against that
    folder's real limit, as `train` does before it loads anything)."""
    from lora_trainer.runs.layout import check_name_lengths

    if not config.output_dir.strip():
        return []
    problem = check_name_lengths(config.output_dir, config.output_name, config.logging_dir or None)
    return [problem] if problem else []


def _emit(config: TrainConfig, output: Path | None) -> None:
    if output is None:
        print(json.dumps(config.to_dict(), indent=2))
    else:
        config.save_json(output)
        print(f"wrote {output} ({_summary(config)})", file=sys.stderr)
    # stderr, so that the JSON on stdout (without -o) stays clean
    where = output or "the config"
    problems = check_paths(config)
    if problems:
        print(f"Still to set in {where} before training:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        if any(" is empty: " in problem for problem in problems):
            print("(`config --preset NAME --project DIR --model PATH -o FILE` sets them all)", file=sys.stderr)
        print("`config --check FILE` says when the file is ready.", file=sys.stderr)
    elif output is not None:
        print(f"ready: python -m lora_trainer train --config {output}", file=sys.stderr)


def _import(source: Path, output: Path | None, args: argparse.Namespace) -> None:
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
    if result.converted:
        print(f"Changed to the nearest value this trainer takes, from {source.name}:", file=sys.stderr)
        for key, change in result.converted.items():
            print(f"  {key}: {change}", file=sys.stderr)
    _emit(_with_paths(result.config, args), output)


def _summary(config: TrainConfig) -> str:
    width, height = config.resolution
    return (f"{config.max_train_epochs} epochs, {width}x{height}, rank {config.network_dim} "
            f"alpha {config.network_alpha:g}, {config.optimizer}, batch {config.train_batch_size}")
