"""The whole tab: one gr.Blocks with a panel per step of the job. Forge's adapter and the standalone
`python -m lora_trainer ui` both call `build_ui(host)`.

Styles and scripts live in the extension's `style.css` and `javascript/*.js`, the files Forge loads
for every extension by itself; the standalone app has no Forge to do it, so it asks for them with
`build_ui(host, standalone=True)` (gr.Blocks' `css=` and a `<script>` in `head=`).
"""

from __future__ import annotations

import gradio as gr

from lora_trainer.host import PACKAGE_PARENT, Host
from lora_trainer.runs.runner import TrainRunner
from lora_trainer.ui.captions_panel import build_captions_panel
from lora_trainer.ui.dataset_panel import build_dataset_panel
from lora_trainer.ui.review_panel import build_review_panel
from lora_trainer.ui.train_panel import TrainPanel, build_train_panel

STYLE_FILE = PACKAGE_PARENT / "style.css"
SCRIPT_DIR = PACKAGE_PARENT / "javascript"

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


def page_css() -> str | None:
    """style.css, for a page Forge does not make."""
    return STYLE_FILE.read_text(encoding="utf-8") if STYLE_FILE.is_file() else None


def page_head() -> str | None:
    """javascript/*.js as inline <script> elements, for a page Forge does not make."""
    scripts = []
    for path in sorted(SCRIPT_DIR.glob("*.js")):
        code = path.read_text(encoding="utf-8")
        if "</script" in code.lower():
            raise ValueError(f"{path} contains '</script', which would end its inline <script> element")
        scripts.append(f"<script>\n{code}\n</script>")
    return "\n".join(scripts) or None


def wire_one_project(train: TrainPanel, *others) -> None:
    """The project a user opens in one panel is the project of all of them. The Train panel opens a
    project on its dropdown's change, so setting its value is enough; the others (each with
    `open_project(name, request)` answering its `view_outputs()`) are opened here."""
    for source in (train, *others):
        rest = [panel for panel in others if panel is not source]

        def follow(name, request: gr.Request = None, source=source, rest=rest):
            opened = [] if source is train else [gr.update(value=name)]
            for panel in rest:
                opened += list(panel.open_project(name, request))
            return tuple(opened)

        outputs = ([] if source is train else [train.project]) + [c for panel in rest for c in panel.view_outputs()]
        source.project.input(follow, [source.project], outputs, show_progress="hidden")


def build_ui(host: Host, standalone: bool = False) -> gr.Blocks:
    """The tab. `standalone`: the page is ours, so it carries style.css and javascript/ itself
    (inside Forge they would be loaded twice)."""
    runner = runner_for(host)
    assets = {"css": page_css(), "head": page_head()} if standalone else {}
    with gr.Blocks(analytics_enabled=False, title="LoRA Trainer", **assets) as blocks:
        with gr.Tabs(elem_id="lora_trainer_tabs") as tabs:
            with gr.Tab("Dataset", id="dataset", elem_id="lora_trainer_dataset_tab") as dataset_tab:
                dataset = build_dataset_panel(host)
            with gr.Tab("Captions", id="captions", elem_id="lora_trainer_captions_tab") as captions_tab:
                captions = build_captions_panel(host)
            with gr.Tab("Train", id="train", elem_id="lora_trainer_train_tab") as train_tab:
                panel = build_train_panel(host, runner)
            with gr.Tab("Review", id="review", elem_id="lora_trainer_review_tab") as review_tab:
                review = build_review_panel(host, runner)
        # A tab opened again shows its project as the other panels left it (imported, captioned, trained).
        quiet = {"show_progress": "hidden"}
        train_tab.select(panel.show_project_info, None, [panel.project_info], **quiet)
        dataset_tab.select(dataset.refresh, [dataset.project], dataset.view_outputs(), **quiet)
        captions_tab.select(captions.refresh, [captions.project, captions.folder], captions.view_outputs(), **quiet)
        review_tab.select(review.refresh, [review.project, review.run, review.prompts], review.view_outputs(), **quiet)
        review.wire_new_run(panel, tabs)
        wire_one_project(panel, dataset, captions, review)
        panel.wire_page_load(blocks)
        dataset.wire_page_load(blocks)
        captions.wire_page_load(blocks)
        review.wire_page_load(blocks)
    return blocks
