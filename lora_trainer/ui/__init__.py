"""The Gradio tab, shared by Forge (scripts/) and the standalone app (`python -m lora_trainer ui`).

gradio is imported only when a UI is built, so `python -m lora_trainer <other command>` never loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import gradio as gr

    from lora_trainer.host import Host


def build_ui(host: Host, standalone: bool = False) -> gr.Blocks:
    """The LoRA Trainer tab for `host`: Forge's `on_ui_tabs` returns `[(build_ui(host), "LoRA Trainer",
    "lora_trainer")]`. `standalone=True` for a page of our own: it then carries style.css and
    javascript/*.js, which Forge loads by itself."""
    from lora_trainer.ui.app import build_ui as build

    return build(host, standalone)
