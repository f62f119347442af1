"""`python -m lora_trainer <command>`: the headless entry point.

Each area registers its own sub-commands (`register(subparsers)` in its `cli` module) so this file
stays a table of contents.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module path -> it defines `register(subparsers)`; each parser sets `func(args) -> int`.
COMMAND_MODULES = (
    "lora_trainer.config_cli",
    "lora_trainer.train.cli",
    "lora_trainer.demo.cli",
    "lora_trainer.captions.cli",
    "lora_trainer.dataset.cli",
    "lora_trainer.ui.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lora_trainer", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
