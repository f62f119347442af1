"""`python -m lora_trainer ui`: the trainer's web UI without Forge, on this computer."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

LOOPBACK_NAMES = ("localhost",)


class UIArgumentError(ValueError):
    """A `ui` option that cannot be used as given; the message says why and what to pass."""


def register(subparsers) -> None:
    ui = subparsers.add_parser("ui", help="open the web UI without Forge (gradio, in a browser)",
                               description="The LoRA Trainer tab as a web app of its own. Projects live in "
                               "--dir; base models are listed from --models. Training runs in its own process. "
                               "It listens on this computer only (127.0.0.1) unless --host says otherwise; "
                               "another address needs --auth or --auth-file (a login page).")
    ui.add_argument("--dir", type=Path, default=Path("workspace"),
                    help="workspace folder, one sub-folder per project (default: workspace)")
    ui.add_argument("--models", type=Path, nargs="+", action="extend", default=None, metavar="DIR",
                    help="folders with SDXL checkpoints for the base-model list (default: <dir>/models)")
    ui.add_argument("--model-config-dir", type=Path, default=None,
                    help="diffusers SDXL config folder, so single-file checkpoints load offline")
    ui.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default: 127.0.0.1, this computer only); an address "
                    "other computers reach (e.g. 0.0.0.0) needs --auth or --auth-file")
    ui.add_argument("--port", type=int, default=None, help="port (default: 7860 or the next free one)")
    ui.add_argument("--auth", action="append", default=None, metavar="USER:PASSWORD",
                    help="a login the page asks for (gradio's login page); repeat it or separate several "
                    "with commas. It shows in the process list: --auth-file keeps it off the command line")
    ui.add_argument("--auth-file", type=Path, action="append", default=None, metavar="FILE",
                    help="a file with one USER:PASSWORD a line (blank lines and lines starting with # "
                    "are skipped; a password may contain ':' and ',')")
    ui.add_argument("--insecure-no-auth", action="store_true",
                    help="listen on a non-loopback --host without a login: anyone who reaches the port "
                    "can start and stop trainings and read and write the workspace")
    ui.set_defaults(func=run_ui)


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this computer only: 127.0.0.0/8, ::1 or localhost."""
    name = host.strip().rstrip(".").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False  # another host name (or "" = every address): it may resolve to anything


def parse_login(text: str, where: str) -> tuple[str, str]:
    """"user:password" -> (user, password); split at the first ':' so a password may hold one."""
    user, colon, password = text.partition(":")
    user = user.strip()  # gradio's login page strips the user name it is given
    if not colon:
        raise UIArgumentError(f"{where}: {text!r} is not USER:PASSWORD (no ':')")
    if not user:
        raise UIArgumentError(f"{where}: the user name before ':' is empty")
    if not password:
        raise UIArgumentError(f"{where}: the password of user {user!r} is empty")
    return user, password


def read_logins(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The logins of --auth (each value comma-separated) and --auth-file (one a line), in order."""
    logins = []
    for value in args.auth or []:
        for item in value.split(","):
            logins.append(parse_login(item, "--auth"))
    for path in args.auth_file or []:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise UIArgumentError(f"--auth-file: cannot read {path}: {error.strerror or error}") from None
        found = 0
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                logins.append(parse_login(line, f"--auth-file {path}, line {number}"))
                found += 1
        if not found:
            raise UIArgumentError(f"--auth-file: {path} has no USER:PASSWORD line")
    users = [user for user, _ in logins]
    for user in dict.fromkeys(users):
        if users.count(user) > 1:
            raise UIArgumentError(f"user {user!r} is given more than once (--auth / --auth-file)")
    return logins


def launch_auth(args: argparse.Namespace) -> list[tuple[str, str]] | None:
    """gradio's `launch(auth=...)` for these options: the logins, or None for no login page. Raises
    UIArgumentError for a bad login or a non-loopback --host without one (unless --insecure-no-auth)."""
    logins = read_logins(args)
    if not logins and not is_loopback(args.host) and not args.insecure_no_auth:
        raise UIArgumentError(
            f"--host {args.host} lets other computers reach the UI, and without a login anyone who reaches "
            "the port can start and stop trainings, save configs and probe the server's files. Pass "
            "--auth USER:PASSWORD or --auth-file FILE (one USER:PASSWORD a line) for a login page, or "
            "--insecure-no-auth if the network is trusted; or leave --host out (127.0.0.1, this computer only).")
    return logins or None


def standalone_host(args: argparse.Namespace):
    """The host for `ui`: the workspace (made when missing), the model folders, and, when other
    computers reach the page (a non-loopback --host), typed paths confined to those folders."""
    from lora_trainer.host import StandaloneHost

    workspace = args.dir.resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    models = [Path(m).resolve() for m in args.models] if args.models else [workspace / "models"]
    return StandaloneHost(workspace, model_dirs=models, config_dir=args.model_config_dir,
                          confined=not is_loopback(args.host))


def run_ui(args: argparse.Namespace) -> int:
    try:
        auth = launch_auth(args)
    except UIArgumentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no network
    from lora_trainer.ui import build_ui

    host = standalone_host(args)
    workspace, models = host.workspace(), host.model_dirs
    print(f"workspace: {workspace}\nmodels from: {', '.join(str(m) for m in models)}", flush=True)
    if auth:
        print(f"login required: {len(auth)} user(s)", flush=True)
    elif not is_loopback(args.host):
        print(f"warning: --insecure-no-auth: anyone who reaches {args.host} can use the UI", file=sys.stderr,
              flush=True)
    blocks = build_ui(host, standalone=True).queue()
    blocks.launch(server_name=args.host, server_port=args.port, inbrowser=False,
                  show_api=False, quiet=False, auth=auth, prevent_thread_lock=True,
                  auth_message="LoRA Trainer: log in with a user of --auth / --auth-file")
    add_http_routes(blocks.app, host, auth, args.host)
    blocks.block_thread()
    return 0


def add_http_routes(app, host, auth: list[tuple[str, str]] | None, server_name: str) -> None:
    """The /lora-trainer/ routes (lora_trainer/runs/api.py) on the UI's app: the --auth / --auth-file
    logins are their HTTP Basic credentials; without a login (a loopback --host, or --insecure-no-auth)
    they are open, start and stop only on a loopback --host."""
    from lora_trainer.runs.api import add_routes
    from lora_trainer.ui.app import runner_for

    add_routes(app, lambda: runner_for(host), host, dict(auth) if auth else None,
               allow_open_writes=is_loopback(server_name),
               auth_hint="start the UI with --auth or --auth-file to allow it")
