"""`python -m lora_trainer ui`: the trainer's web UI without Forge, on this computer."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(subparsers) -> None:
    ui = subparsers.add_parser("ui", help="open the web UI without Forge (gradio, in a browser)",
                               description="The LoRA Trainer tab as a web app of its own. Projects live in "
                               "--dir; base models are listed from --models. Training runs in its own process.")
    ui.add_argument("--dir", type=Path, default=Path("workspace"),
                    help="workspace folder, one sub-folder per project (default: workspace)")
    ui.add_argument("--models", type=Path, nargs="+", action="extend", default=None, metavar="DIR",
                    help="folders with SDXL checkpoints for the base-model list (default: <dir>/models)")
    ui.add_argument("--model-config-dir", type=Path, default=None,
                    help="diffusers SDXL config folder, so single-file checkpoints load offline")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    ui.add_argument("--port", type=int, default=None, help="port (default: 7860 or the next free one)")
    ui.set_defaults(func=run_ui)


def run_ui(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no network
    from lora_trainer.host import StandaloneHost
    from lora_trainer.ui import build_ui

    workspace = args.dir.resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    models = [Path(m).resolve() for m in args.models] if args.models else [workspace / "models"]
    host = StandaloneHost(workspace, model_dirs=models, config_dir=args.model_config_dir)
    print(f"workspace: {workspace}\nmodels from: {', '.join(str(m) for m in models)}", flush=True)
    build_ui(host, standalone=True).queue().launch(server_name=args.host, server_port=args.port, inbrowser=False,
                                  show_api=False, quiet=False)
    return 0
