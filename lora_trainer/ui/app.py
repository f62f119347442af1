"""The whole tab: one gr.Blocks with a panel per step of the job. Forge's adapter and the standalone
`python -m lora_trainer ui` both call `build_ui(host)`."""

from __future__ import annotations

import gradio as gr

from lora_trainer.host import Host
from lora_trainer.train.runner import TrainRunner
from lora_trainer.ui.train_panel import build_train_panel

# One runner per workspace for the life of the process: Forge's "Reload UI" builds the tab again while
# a training may be running, and the new tab must keep following (and refuse a second start).
_RUNNERS: dict[tuple[str, str], TrainRunner] = {}


def runner_for(host: Host) -> TrainRunner:
    key = (host.name, str(host.workspace().resolve()))
    runner = _RUNNERS.get(key)
    if runner is None:
        runner = _RUNNERS[key] = TrainRunner(host)
    runner.host = host  # a rebuilt tab brings a new host object
    return runner


# In a <style> element of the page itself, so it applies inside Forge as well as standalone. The status
# parts are refreshed every second: gradio would dim them (".pending") during each refresh.
CSS = """
#lora_trainer_status .pending, #lora_trainer_saved .pending { opacity: 1 !important; transition: none; }
.lora-trainer-error { color: var(--error-text-color, #b91c1c); white-space: pre-wrap; }
.lora-trainer-saved td, .lora-trainer-saved th { padding: 2px 12px 2px 0; text-align: left; }
"""


def build_ui(host: Host) -> gr.Blocks:
    runner = runner_for(host)
    with gr.Blocks(analytics_enabled=False, title="LoRA Trainer") as blocks:
        gr.HTML(f"<style>{CSS}</style>", elem_id="lora_trainer_style")
        with gr.Tabs(elem_id="lora_trainer_tabs"):
            with gr.Tab("Train", id="train", elem_id="lora_trainer_train_tab"):
                build_train_panel(host, runner)
    return blocks
