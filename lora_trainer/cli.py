"""`python -m lora_trainer <command>`: the headless entry point.

Each area registers its own sub-commands (`register(subparsers)` in its `cli` module) so this file
stays a table of contents.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# module path -> it defines `register(subparsers)`; each parser sets `func(args) -> int`.
COMMAND_MODULES = (
    "lora_trainer.config.cli",
    "lora_trainer.train.cli",
    "lora_trainer.demo.cli",
    "lora_trainer.captions.cli",
    "lora_trainer.dataset.cli",
    "lora_trainer.ui.cli",
    "lora_trainer.review.cli",
    "lora_trainer.review.score_cli",
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
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader gone away (`... | head`) shows here, not at exit
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        # As Unix tools do when the reader quits early: stop quietly. Python would print the error
        # once more when it flushes stdout at exit, so stdout now goes to the null device.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # 128 + SIGPIPE, what the shell reports for a tool stopped by a closed pipe


def _stdout_closed() -> bool:
    """Whether stdout is a pipe nobody reads any more (where the OS can say; else assume it is)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False  # replaced by something without a file descriptor (e.g. a test's capture)
    try:
        import select

        poller = select.poll()
    except (ImportError, AttributeError):  # Windows has no poll
        return True
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
