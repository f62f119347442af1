"""The Train panel: project, base model, preset and settings; Save / Load config; Start / Stop / Resume;
live status, loss curve, the project's LoRA files with their prompt names (each with a copy button,
javascript/lora_trainer.js), and the TensorBoard command. Styles are in style.css (Forge loads it; the
standalone app passes it to gr.Blocks).

Callbacks only translate between widgets and the core (`runs/`, `project.py`, `config/presets.py`);
a user mistake (a wrong setting, a second Start, ...) comes back as a message in the panel.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.config.presets import PRESETS, preset_names
from lora_trainer.fsutil import OutputError
from lora_trainer.host import Host, confine_path
from lora_trainer.project import Project, list_projects, open_project
from lora_trainer.runs.follow import RunStatus
from lora_trainer.runs.lora_files import next_free_output_name
from lora_trainer.runs.memory import MemoryEstimator
from lora_trainer.runs.runner import (
    KOHYA_OUTPUT_NAME,
    DatasetChanged,
    OutputNameTaken,
    RunnerError,
    TrainRunner,
    config_for_project,
    load_project_settings,
    tensorboard_command,
)
from lora_trainer.runs.tensorboard import SERVERS as TENSORBOARDS
from lora_trainer.runs.tensorboard import TensorBoardError
from lora_trainer.ui import render
from lora_trainer.ui.form import FIELDS, FormField, form_values, settings_from_form

# What a user can get wrong; shown in the panel. ConfigError and a bad project name are ValueErrors.
USER_ERRORS = (ConfigError, RunnerError, OutputError, ValueError)
DEFAULT_PRESET = preset_names()[0]
# The Preset box's two entries that are not presets: the form holds the project's saved settings, or
# values of the user's own (edited, or another project's). Choosing a real preset always fires then.
SAVED_SETTINGS = "(project's saved settings)"
CUSTOM = "Custom"
PRESET_CHOICES = [*preset_names(), SAVED_SETTINGS, CUSTOM]
# A config written without an output name (`python -m lora_trainer config ...`) has kohya's default.
STATUS_INTERVAL_S = 1.0
NO_LORA_YET = "No LoRA saved in this project yet."
MAX_PAGES = 1000  # open pages remembered by the status poll (the oldest is forgotten first)


def preset_settings(name: str) -> dict[str, Any]:
    return TrainConfig.from_dict(PRESETS[name]).to_dict()


def loss_frame(losses: list[tuple[int, float, float]]) -> pd.DataFrame:
    rows = [(step, loss, "loss") for step, loss, _ in losses]
    rows += [(step, average, "epoch average") for step, _, average in losses]
    return pd.DataFrame(rows, columns=["step", "loss", "series"])


@dataclass
class _Page:
    """What the status poll knows of one open page: its project, and the loss curve and project list
    it shows (sent again only when they change)."""

    project: str | None
    plot_key: str
    projects_key: str
    # Settings the Review sent for a run in another project ("New run from this one"): opening that
    # project fills the form with them instead of its saved ones, once, within PENDING_S.
    pending: tuple[str, dict[str, Any], float] | None = None

    def take_pending(self, project: str | None) -> dict[str, Any] | None:
        pending, self.pending = self.pending, None
        if pending and pending[0] == project and time.monotonic() - pending[2] < PENDING_S:
            return pending[1]
        return None


PENDING_S = 30.0


class TrainPanel:
    def __init__(self, host: Host, runner: TrainRunner):
        self.host = host
        self.runner = runner
        # The status poll has no inputs: gradio 4.40's page warns "Too many arguments provided for the
        # endpoint" for every call that sends any (its client looks the endpoint up by index among
        # the unnamed ones, and finds none). So each page's project is kept here, by session.
        self._pages: OrderedDict[str, _Page] = OrderedDict()
        self._pages_lock = threading.Lock()
        self.memory_estimator = MemoryEstimator(host.trainer_command())

    # --- layout ---------------------------------------------------------------------------------
    def build(self) -> TrainPanel:
        self._project_row()
        saved = self._saved_settings(self.project.value)  # the first project opens with its own settings
        self._model_row(saved["pretrained_model_name_or_path"] if saved else "")
        start = saved or preset_settings(DEFAULT_PRESET)
        self.base = gr.State(start)  # preset or loaded config under the form
        self.preset = gr.Dropdown(PRESET_CHOICES, value=SAVED_SETTINGS if saved else DEFAULT_PRESET,
                                  label="Preset", elem_id="lora_trainer_preset")
        output_name = saved["output_name"] if saved else self._output_name(self.project.value) or KOHYA_OUTPUT_NAME
        values = form_values({**start, "output_name": output_name})
        self.fields = self._settings(values)
        # The peak GPU memory these settings need, before Start (train/vram.py); filled on page load.
        self.memory = gr.HTML(elem_id="lora_trainer_memory")
        self.output_name = self.fields[[f.key for f in FIELDS].index("output_name")]
        keep_out_of_forge_ui_config(self.project, self.repeats, self.new_project, self.output_name, self.preset)
        first_status = self._status(self.project.value)  # the page shows the first project's run at once
        self._buttons(first_status)
        self.message = gr.HTML(elem_id="lora_trainer_message")
        # Shown when Start refuses an output name that has files: one click puts the free name in the box.
        self.use_name_button = gr.Button("Use the free name", visible=False, size="sm",
                                         elem_id="lora_trainer_use_name")
        self.suggested_name = gr.State("")
        # Shown when Resume refuses a run whose images or captions changed since it stopped.
        self.resume_changed_button = gr.Button("Resume with these changes", visible=False, size="sm",
                                               elem_id="lora_trainer_resume_changed")
        self._status_area(first_status)
        self._wire()
        return self

    def _project_row(self) -> None:
        projects = list_projects(self.host.workspace())
        first = projects[0] if projects else None
        with gr.Row():
            # Only listed names: with allow_custom_value, gradio 4.40's dropdown keeps its selected
            # index when its choices change, so a project added before the selected one showed as
            # selected (✓) and choosing it did nothing. New names go in the box beside it.
            self.project = gr.Dropdown(projects, value=first, label="Project", elem_id="lora_trainer_project",
                                       scale=3, info=f"a folder in {self.host.workspace()} (with an img/ folder)")
            self.repeats = gr.Number(value=self._project_repeats(first), precision=0, label="Repeats",
                                     elem_id="lora_trainer_repeats", info="img/<repeats>_<name>", scale=1)
            self.new_project = gr.Textbox(label="New project", placeholder="a name: letters, digits, . _ -",
                                          elem_id="lora_trainer_new_project", scale=2, max_lines=1)
            self.create_project_button = gr.Button("Create project", elem_id="lora_trainer_create_project",
                                                   scale=0, min_width=140)
            self.refresh_projects_button = gr.Button("Refresh", elem_id="lora_trainer_refresh_projects",
                                                     scale=0, min_width=100)
        self.project_info = gr.HTML(self._project_info(first), elem_id="lora_trainer_project_info")
        self._first_projects_key = _projects_key(projects)  # the list a new page has

    def _model_row(self, model: str) -> None:
        with gr.Row():
            choices, listed, path, note = self._model_choice(model)
            self.model = gr.Dropdown(choices, value=listed, label="Base model (SDXL)", info=note,
                                     scale=3, elem_id="lora_trainer_model")
            self.model_path = gr.Textbox(path, label="... or a model path", scale=3, elem_id="lora_trainer_model_path",
                                         placeholder="a .safetensors file or diffusers folder; overrides the list")
            self.refresh_models_button = gr.Button("Refresh", elem_id="lora_trainer_refresh_models",
                                                   scale=0, min_width=100)

    def _settings(self, values: list[Any]) -> list[gr.components.Component]:
        made: dict[str, gr.components.Component] = {}
        value_of = dict(zip((f.key for f in FIELDS), values))
        plain = [f for f in FIELDS if not f.advanced and f.kind != "bool"]
        for start in range(0, len(plain), 4):
            with gr.Row():
                made.update({f.key: _component(f, value_of[f.key]) for f in plain[start:start + 4]})
        with gr.Row():
            made.update({f.key: _component(f, value_of[f.key]) for f in FIELDS
                         if f.kind == "bool" and not f.advanced})
        with gr.Accordion("More settings", open=False, elem_id="lora_trainer_more_settings"):
            more = [f for f in FIELDS if f.advanced and f.kind != "bool"]
            for start in range(0, len(more), 4):
                with gr.Row():
                    made.update({f.key: _component(f, value_of[f.key]) for f in more[start:start + 4]})
            with gr.Row():
                made.update({f.key: _component(f, value_of[f.key]) for f in FIELDS if f.advanced and f.kind == "bool"})
        return [made[f.key] for f in FIELDS]

    def _buttons(self, status: RunStatus) -> None:
        free = _can_start(status)
        with gr.Row():
            self.save_button = gr.Button("Save config", elem_id="lora_trainer_save_config")
            self.load_button = gr.Button("Load config", elem_id="lora_trainer_load_config")
            self.start_button = gr.Button("Start", variant="primary", interactive=free, elem_id="lora_trainer_start")
            self.stop_button = gr.Button("Stop", variant="stop", interactive=status.active,
                                         elem_id="lora_trainer_stop")
            self.resume_button = gr.Button("Resume", interactive=free, elem_id="lora_trainer_resume")

    def _status_area(self, status: RunStatus) -> None:
        self.status = gr.HTML(render.status(status), elem_id="lora_trainer_status")
        self.plot = gr.LinePlot(loss_frame(status.losses), x="step", y="loss", color="series", label="Loss",
                                elem_id="lora_trainer_loss_plot", height=260)
        self.saved = gr.HTML(elem_id="lora_trainer_saved")  # the project's LoRA files, from the first refresh
        with gr.Row():
            self.tensorboard = gr.Textbox(self._tensorboard(self.project.value), label="TensorBoard",
                                          interactive=False, show_copy_button=True, scale=4,
                                          elem_id="lora_trainer_tensorboard")
            self.tensorboard_button = gr.Button("Start TensorBoard", scale=1, elem_id="lora_trainer_start_tensorboard")
        self.tensorboard_link = gr.HTML(elem_id="lora_trainer_tensorboard_link")
        self.log = gr.Textbox(status.log_tail, label="Trainer output", lines=8, max_lines=8, interactive=False,
                              autoscroll=True, elem_id="lora_trainer_log")
        self._first_plot_key = _plot_key(status)  # the curve a new page shows
        self.timer = gr.Timer(STATUS_INTERVAL_S)

    # --- events ---------------------------------------------------------------------------------
    def _wire(self) -> None:
        project_inputs = [self.project, self.repeats]
        config_inputs = [*project_inputs, self.model, self.model_path, self.base, *self.fields]
        output_name = self.output_name

        self._open_project_event(self.project.change)
        create = {"fn": self.create_project, "inputs": [self.new_project, self.repeats],
                  "outputs": [self.project, self.project_info, self.message, self.new_project]}
        self.create_project_button.click(**create)
        self.new_project.submit(**create)
        self.refresh_projects_button.click(self.refresh_projects, [self.project], [self.project])
        self.refresh_models_button.click(self.refresh_models, [self.model], [self.model])
        settings_outputs = [self.base, *self.fields, self.model, self.model_path, self.preset]
        self.preset.input(self.apply_preset, [self.preset, self.project], [*settings_outputs, self.message])
        for field, component in zip(FIELDS, self.fields):
            if field.key != "output_name":  # a setting edited by hand: the form no longer holds a preset
                component.input(None, None, [self.preset], js=f"() => {CUSTOM!r}", queue=False)
        self.save_button.click(self.save_config, config_inputs, [self.message])
        self.load_button.click(self.load_config, project_inputs, [*settings_outputs, self.message])
        launch_outputs = [self.message, self.use_name_button, self.suggested_name, self.resume_changed_button]
        self.start_button.click(self.start, config_inputs, launch_outputs).then(**self._refresh_event())
        self.resume_button.click(self.resume, config_inputs, launch_outputs).then(**self._refresh_event())
        self.resume_changed_button.click(self.resume_with_changes, config_inputs, launch_outputs) \
            .then(**self._refresh_event())
        self.use_name_button.click(self.use_suggested_name, [self.suggested_name],
                                   [output_name, self.use_name_button, self.message])
        self.stop_button.click(self.stop, None, [self.message]).then(**self._refresh_event())
        self.timer.tick(**self._refresh_event())
        memory_inputs = [self.base, *self.fields]
        gr.on([c.change for c in self.fields], self.estimate_memory,
              memory_inputs, [self.memory], show_progress="hidden", trigger_mode="always_last")
        self._memory_inputs = memory_inputs
        self.tensorboard_button.click(self.start_tensorboard, [self.project], [self.tensorboard_link])

    def _refresh_event(self) -> dict[str, Any]:
        """The status poll: the page's project's run, its LoRA files, and the workspace's projects.
        No inputs (see `__init__`): the page's project is the one `open_project` last opened for it."""
        return {"fn": self.refresh, "inputs": None,
                "outputs": [self.status, self.plot, self.saved, self.log, self.start_button, self.stop_button,
                            self.resume_button, self.project],
                "show_progress": "hidden"}

    def _open_project_event(self, trigger) -> None:
        """What opening a project shows: its folders, output name, saved settings, its run and LoRA
        files; in one answer (each call costs a round trip)."""
        trigger(self.open_project, [self.project, self.preset],
                [self.repeats, self.project_info, self.tensorboard, self.use_name_button,
                 self.resume_changed_button, self.base, *self.fields, self.model, self.model_path, self.preset,
                 *self._refresh_event()["outputs"]], show_progress="hidden")

    def wire_page_load(self, blocks: gr.Blocks) -> None:
        """The tab is built once (at WebUI start); a page opened later must show the project as it is
        now: runs finished since, settings saved since."""
        self._open_project_event(blocks.load)
        blocks.load(self.estimate_memory, self._memory_inputs, [self.memory], show_progress="hidden")

    # --- callbacks: the memory estimate -----------------------------------------------------------
    def estimate_memory(self, base, *values) -> str:
        """The expected peak GPU memory of a training step with the form's settings and, on a machine
        with a CUDA GPU, whether it fits and which change would make it fit (runs/memory.py)."""
        try:
            settings = TrainConfig.from_dict(settings_from_form(base, list(values))).to_dict()
        except (ConfigError, ValueError) as e:
            return render.memory_line(None, f"no estimate until the settings are valid: {e}")
        report = self.memory_estimator.estimate(settings, self.host.sdxl_config_dir())
        if report.summary is None:
            return render.memory_line(None, f"no estimate: {report.error}")
        return render.memory_line(report.summary, gpu_name=report.gpu_name, fixes=report.fixes)

    # --- callbacks: project and model -----------------------------------------------------------
    def open_project(self, name: str | None, preset: str | None, request: gr.Request = None):
        """The project's folders, a training it has running since before a UI restart (adopted), its
        saved settings, its output name (`_output_name`), its run and its LoRA files (published to
        the host again). The page's status poll follows this project from now on."""
        hide = gr.update(visible=False)
        self._page(request).project = name
        try:
            project = self._open(name)
        except ValueError as e:
            return (gr.update(), render.message(str(e), error=True), "", hide, hide,
                    *[gr.update()] * (len(FIELDS) + 4), *self.refresh(request))
        self.runner.adopt([project])
        self.runner.project_loras(project, recheck=True)  # the user may have removed a published copy
        sent = self._page(request).take_pending(project.name)
        settings = self._sent_settings(sent) if sent else self.open_saved_settings(project.name, preset)
        return (project.repeats, self._project_info(project.name), tensorboard_command(project), hide, hide,
                *settings, *self.refresh(request))

    def new_run_outputs(self) -> list:
        """What `fill_new_run` fills: the project, the form (with its base settings, model and preset)
        and the message."""
        return [self.project, self.base, *self.fields, self.model, self.model_path, self.preset, self.message]

    def fill_new_run(self, project: Project, settings: dict[str, Any], message: str, request: gr.Request = None):
        """The form for a new run in `project` from `settings` (the Review's "New run from this one"),
        under the next free output name, so the run it came from keeps its files. Another project
        than the page's is opened first, and its opening takes these settings (`_Page.pending`)."""
        settings = {**settings, "output_name": next_free_output_name(project.model, settings["output_name"])}
        page = self._page(request)
        if page.project != project.name:
            page.pending = (project.name, settings, time.monotonic())
        return gr.update(value=project.name), *self._sent_settings(settings), render.message(message)

    def _sent_settings(self, settings: dict[str, Any]) -> tuple:
        """(base, form fields, model, model path, preset) for settings that are no preset's."""
        return (settings, *form_values(settings), *self._model_updates(settings["pretrained_model_name_or_path"]),
                CUSTOM)

    def open_saved_settings(self, name: str | None, preset: str | None):
        """(base, form fields, model, model path, preset): a project that has saved settings fills the
        form with them and the Preset box says so; otherwise the form stays (and no longer holds a
        project's saved settings) but for the output name, which is the project's."""
        settings = self._saved_settings(name)
        if settings is None:
            output_name = self._output_name(name) or gr.update()
            fields = [output_name if f.key == "output_name" else gr.update() for f in FIELDS]
            return gr.update(), *fields, gr.update(), gr.update(), (CUSTOM if preset == SAVED_SETTINGS else gr.update())
        return (settings, *form_values(settings), *self._model_updates(settings["pretrained_model_name_or_path"]),
                SAVED_SETTINGS)

    def create_project(self, name: str | None, repeats: float | None, request: gr.Request = None):
        """Make the project's folders and select it (the project's change event opens it)."""
        if not (name or "").strip():
            return gr.update(), gr.update(), render.message("type the new project's name first", error=True), gr.update()
        try:
            project = self._open(name, repeats).create()
        except USER_ERRORS as e:
            return gr.update(), gr.update(), render.message(str(e), error=True), gr.update()
        projects = list_projects(self.host.workspace())
        self._page(request).projects_key = _projects_key(projects)
        return (gr.update(choices=projects, value=project.name), self._project_info(project.name),
                render.message(f"project folders ready in {project.root}"), "")

    def refresh_projects(self, current: str | None, request: gr.Request = None):
        projects = list_projects(self.host.workspace())
        self._page(request).projects_key = _projects_key(projects)
        return gr.update(choices=projects, value=current)

    def refresh_models(self, current: str | None):
        return gr.update(choices=self._model_choices(), value=current)

    # --- callbacks: settings --------------------------------------------------------------------
    def apply_preset(self, name: str | None, project_name: str | None):
        """A preset fills the form (the output name belongs to the project, the model to the user);
        the saved-settings entry loads the project's saved settings again."""
        keep = gr.update()
        if name == SAVED_SETTINGS:
            settings = self._saved_settings(project_name)
            if settings is None:
                return (*[keep] * (len(FIELDS) + 3), CUSTOM,
                        render.message(f"project {project_name or ''!r} has no saved settings yet: Save config "
                                       "or Start saves them", error=True))
            return (settings, *form_values(settings), *self._model_updates(settings["pretrained_model_name_or_path"]),
                    keep, render.message(f"settings loaded from {self._open(project_name).config_file}"))
        if name not in PRESETS:
            return *[keep] * (len(FIELDS) + 4), keep
        settings = preset_settings(name)
        values = form_values(settings)
        return (settings, *[keep if f.key == "output_name" else v for f, v in zip(FIELDS, values)],
                keep, keep, keep, keep)

    def save_config(self, *inputs):
        try:
            project, config = self._config(*inputs)
            project.create()
            config.save_json(project.config_file)
        except USER_ERRORS as e:
            return render.message(str(e), error=True)
        return render.message(f"saved {project.config_file}")

    def load_config(self, name: str | None, repeats: float | None):
        try:
            project = self._open(name, repeats)
            settings = self._form_settings(project, load_project_settings(project))
        except USER_ERRORS as e:
            unchanged = [gr.update() for _ in range(len(FIELDS) + 4)]
            return *unchanged, render.message(str(e), error=True)
        return (settings, *form_values(settings), *self._model_updates(settings["pretrained_model_name_or_path"]),
                SAVED_SETTINGS, render.message(f"loaded {project.config_file}"))

    # --- callbacks: the run ---------------------------------------------------------------------
    def start(self, *inputs):
        return self._launch(inputs, resume=False)

    def resume(self, *inputs):
        return self._launch(inputs, resume=True)

    def resume_with_changes(self, *inputs):
        return self._launch(inputs, resume=True, resume_changed=True)

    def _launch(self, inputs, resume: bool, resume_changed: bool = False):
        """(message, the use-the-free-name button, the free name, the resume-with-changes button)."""
        hide = gr.update(visible=False)
        try:
            project, config = self._config(*inputs)
            self.runner.start(project, config, resume=resume, resume_changed=resume_changed)
        except OutputNameTaken as e:
            return (render.message(str(e), error=True),
                    gr.update(value=f"Use {e.suggestion}", visible=True), e.suggestion, hide)
        except DatasetChanged as e:
            return render.message(str(e), error=True), hide, "", gr.update(visible=True)
        except USER_ERRORS as e:
            return render.message(str(e), error=True), hide, "", hide
        verb = "resumed" if resume else "started"
        changed = " with the changed dataset" if resume_changed else ""
        return (render.message(f"{verb} {config.output_name}{changed} (settings saved to {project.config_file})"),
                hide, "", hide)

    def use_suggested_name(self, name: str):
        return name, gr.update(visible=False), render.message(f"output name set to {name}: press Start")

    def stop(self, request: gr.Request = None):
        try:
            project = self._open(self._page(request).project)
        except ValueError:
            project = None
        try:
            self.runner.stop(project)
        except RunnerError as e:
            return render.message(str(e), error=True)
        return render.message("stop requested: the run finishes its step, saves the LoRA and its state, "
                              "and exits; Resume continues it")

    def refresh(self, request: gr.Request = None):
        """The page's project's run (the runner's when it is in that project, else its last run on
        disk), its LoRA files; the project list when it changed (a project made elsewhere appears);
        Start and Resume only while nothing trains anywhere, Stop while the shown run trains."""
        page = self._page(request)
        status = self._status(page.project)
        key = _plot_key(status)
        plot = loss_frame(status.losses) if key != page.plot_key else gr.update()
        projects = list_projects(self.host.workspace())
        listed = _projects_key(projects)
        choices = gr.update(choices=projects) if listed != page.projects_key else gr.update()
        page.plot_key, page.projects_key = key, listed
        free = _can_start(status)
        return (render.status(status), plot, self._saved_files(page.project), status.log_tail,
                gr.update(interactive=free), gr.update(interactive=status.active),
                gr.update(interactive=free), choices)

    # --- helpers --------------------------------------------------------------------------------
    def _page(self, request: gr.Request | None) -> _Page:
        """The open page that made this call (a new page starts as the panel was built)."""
        session = getattr(request, "session_hash", None) or ""
        with self._pages_lock:
            page = self._pages.get(session)
            if page is None:
                page = self._pages[session] = _Page(self.project.value, self._first_plot_key,
                                                    self._first_projects_key)
                while len(self._pages) > MAX_PAGES:
                    self._pages.popitem(last=False)
            self._pages.move_to_end(session)
            return page

    def _open(self, name: str | None, repeats: float | None = None) -> Project:
        name = (name or "").strip()
        if not name:
            raise ValueError("choose a project, or create one (New project, then Create project)")
        return open_project(self.host.workspace(), name, None if repeats is None else int(repeats))

    def _config(self, name, repeats, model, model_path, base, *values) -> tuple[Project, TrainConfig]:
        project = self._open(name, repeats)
        typed = (model_path or "").strip()
        if typed:  # on a server others reach, only inside the workspace and the model folders
            confine_path(typed, self.host.path_roots())
        settings = settings_from_form(base, list(values))
        return project, config_for_project(project, settings, typed or model or "")

    def _status(self, name: str | None) -> RunStatus:
        try:
            project = self._open(name)
        except ValueError:
            return self.runner.status()
        return self.runner.status(project)

    def _project_repeats(self, name: str | None) -> int:
        try:
            return self._open(name).repeats
        except ValueError:
            return 1

    def _project_info(self, name: str | None) -> str:
        try:
            project = self._open(name)
        except ValueError as e:
            return render.message(str(e), error=True)
        settings = self._saved_settings(project.name) or {}
        extension = settings.get("caption_extension") or ".txt"
        return render.project_info(str(project.train_images), project.training_folders(), project.img.is_dir(),
                                   project.uncaptioned(extension))

    def start_tensorboard(self, name: str | None) -> str:
        """TensorBoard on this computer for the project's logs (one per project: a second click gives
        the same address), linked."""
        try:
            url = TENSORBOARDS.start(self._open(name))
        except (ValueError, TensorBoardError, OSError) as e:
            return render.message(str(e), error=True)
        return (f'<div class="lora-trainer-message lora-trainer-info">TensorBoard for {escape(name or "")}: '
                f'<a href="{escape(url)}" target="_blank" rel="noopener">{escape(url)}</a></div>')

    def show_project_info(self, request: gr.Request = None) -> str:
        """The page's project's images and captions as they are now (the Train tab opened again after
        the Captions tab changed them)."""
        return self._project_info(self._page(request).project)

    def _saved_files(self, name: str | None) -> str:
        """The selected project's LoRA files (the run's among them as they are saved)."""
        try:
            project = self._open(name)
        except ValueError:
            return ""
        return render.saved_files(*self.runner.project_loras(project), empty=NO_LORA_YET, project=project.name)

    def _saved_settings(self, name: str | None) -> dict[str, Any] | None:
        """The project's saved settings as the form shows them (`_form_settings`); None when it has no
        (valid) settings file: a broken one is reported by *Load config*, not on opening."""
        try:
            project = self._open(name)
            return self._form_settings(project, load_project_settings(project))
        except USER_ERRORS:
            return None

    def _form_settings(self, project: Project, settings: dict[str, Any]) -> dict[str, Any]:
        """Saved settings with the output name the project gets now (`_output_name`) and, when they
        name no model (a config written by the `config` command), the first listed one."""
        model = settings["pretrained_model_name_or_path"].strip()
        if not model:
            choices = self._model_choices()
            model = choices[0][1] if choices else ""
        return {**settings, "pretrained_model_name_or_path": model,
                "output_name": self._output_name(project.name, settings["output_name"])}

    def _output_name(self, name: str | None, saved: str | None = None) -> str:
        """The output name a project opens with: the name of a run going on in it or of a stopped run
        Resume can continue; else the saved settings' name (the project's name when they have kohya's
        default 'lora' or none) or, when earlier runs used it, the next free `<name>_v2` (`_v3`, ...)."""
        try:
            project = self._open(name)
        except ValueError:
            return ""
        return self.runner.opening_output_name(project, saved)

    def _tensorboard(self, name: str | None) -> str:
        try:
            return tensorboard_command(self._open(name))
        except ValueError:
            return ""

    def _model_choices(self) -> list[tuple[str, str]]:
        paths = self.host.checkpoints()
        names = [p.name for p in paths]
        return [(p.name if names.count(p.name) == 1 else f"{p.parent.name}/{p.name}", str(p)) for p in paths]

    def _model_choice(self, model: str) -> tuple[list[tuple[str, str]], str | None, str, str]:
        """(the list's choices, its value, the path box's value, a note under the list) for a saved
        model: the listed file it is (a hard link or another path to it counts); an existing file or
        folder outside the list is added to it; anything else (a hub id, a missing file) goes in the
        path box with a note; no model: the first listed one."""
        choices = self._model_choices()
        model = (model or "").strip()
        if not model:
            return choices, (choices[0][1] if choices else None), "", ""
        for _, listed in choices:
            if _same_file(model, listed):
                return choices, listed, "", ""
        path = Path(model)
        if path.exists():
            return [*choices, (f"{path.name} ({path.parent})", model)], model, "", ""
        return choices, None, model, f"the saved model {model} is not in this list: the path box holds it"

    def _model_updates(self, model: str) -> tuple[Any, str]:
        choices, listed, path, note = self._model_choice(model)
        return gr.update(choices=choices, value=listed, info=note), path


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _can_start(status: RunStatus) -> bool:
    """Start and Resume: while nothing trains, here or in another project (one run at a time)."""
    return not status.active and not status.elsewhere


def _plot_key(status: RunStatus) -> str:
    return f"{status.run_dir}:{len(status.losses)}"


def _projects_key(projects: list[str]) -> str:
    return "\n".join(projects)


def _component(field: FormField, value: Any) -> gr.components.Component:
    common = {"label": field.title, "value": value, "elem_id": field.elem_id, "info": field.info or None}
    if field.kind == "bool":
        return gr.Checkbox(**common)
    if field.kind == "choice":
        return gr.Dropdown(list(field.choices), **common)
    if field.kind in ("int", "float"):
        return gr.Number(precision=0 if field.kind == "int" else None, step=field.step, **common)
    return gr.Textbox(**common)


def keep_out_of_forge_ui_config(*components: gr.components.Component) -> None:
    """Forge (A1111's ui-config.json) saves each field's first value and restores it at every start.
    These fields take their value from the workspace as it is now; a saved one would go stale (a
    deleted project, an output name an earlier run used)."""
    for component in components:
        component.do_not_save_to_config = True


def build_train_panel(host: Host, runner: TrainRunner) -> TrainPanel:
    """Lay the panel out in the current gradio Blocks context and wire its events."""
    return TrainPanel(host, runner).build()

