"""The Train panel: project, base model, preset and settings; Save / Load config; Start / Stop / Resume;
live status, loss curve, the project's LoRA files with their prompt names (each with a copy button,
javascript/lora_trainer.js), and the TensorBoard command. Styles are in style.css (Forge loads it; the
standalone app passes it to gr.Blocks).

Callbacks only translate between widgets and the core (`runs/`, `project.py`, `config/presets.py`);
a user mistake (a wrong setting, a second Start, ...) comes back as a message in the panel.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.config.presets import PRESETS, preset_names
from lora_trainer.fsutil import OutputError
from lora_trainer.host import Host
from lora_trainer.project import Project, list_projects, open_project
from lora_trainer.runs.follow import RunStatus
from lora_trainer.runs.lora_files import next_free_output_name
from lora_trainer.runs.runner import (
    OutputNameTaken,
    RunnerError,
    TrainRunner,
    config_for_project,
    load_project_settings,
    tensorboard_command,
)
from lora_trainer.ui import render
from lora_trainer.ui.form import FIELDS, FormField, form_values, settings_from_form

# What a user can get wrong; shown in the panel. ConfigError and a bad project name are ValueErrors.
USER_ERRORS = (ConfigError, RunnerError, OutputError, ValueError)
DEFAULT_PRESET = preset_names()[0]
STATUS_INTERVAL_S = 1.0
NO_LORA_YET = "No LoRA saved in this project yet."


def preset_settings(name: str) -> dict[str, Any]:
    return TrainConfig.from_dict(PRESETS[name]).to_dict()


def loss_frame(losses: list[tuple[int, float, float]]) -> pd.DataFrame:
    rows = [(step, loss, "loss") for step, loss, _ in losses]
    rows += [(step, average, "epoch average") for step, _, average in losses]
    return pd.DataFrame(rows, columns=["step", "loss", "series"])


class TrainPanel:
    def __init__(self, host: Host, runner: TrainRunner):
        self.host = host
        self.runner = runner

    # --- layout ---------------------------------------------------------------------------------
    def build(self) -> TrainPanel:
        self._project_row()
        saved = self._saved_settings(self.project.value)  # the first project opens with its own settings
        self._model_row(saved["pretrained_model_name_or_path"] if saved else None)
        start = saved or preset_settings(DEFAULT_PRESET)
        self.base = gr.State(start)  # preset or loaded config under the form
        self.preset = gr.Dropdown(preset_names(), value=DEFAULT_PRESET, label="Preset",
                                  elem_id="lora_trainer_preset")
        output_name = saved["output_name"] if saved else self._free_output_name(self.project.value) or "lora"
        values = form_values({**start, "output_name": output_name})
        self.fields = self._settings(values)
        self.output_name = self.fields[[f.key for f in FIELDS].index("output_name")]
        keep_out_of_forge_ui_config(self.project, self.repeats, self.output_name)
        self._buttons()
        self.message = gr.HTML(elem_id="lora_trainer_message")
        # Shown when Start refuses an output name that has files: one click puts the free name in the box.
        self.use_name_button = gr.Button("Use the free name", visible=False, size="sm",
                                         elem_id="lora_trainer_use_name")
        self.suggested_name = gr.State("")
        self._status_area()
        self._wire()
        return self

    def _project_row(self) -> None:
        projects = list_projects(self.host.workspace())
        first = projects[0] if projects else None
        with gr.Row():
            self.project = gr.Dropdown(projects, value=first, label="Project", allow_custom_value=True,
                                       elem_id="lora_trainer_project", scale=3,
                                       info=f"a folder in {self.host.workspace()}; type a new name to start one")
            self.repeats = gr.Number(value=self._project_repeats(first), precision=0, label="Repeats",
                                     elem_id="lora_trainer_repeats", info="img/<repeats>_<name>", scale=1)
            self.create_project_button = gr.Button("Create project", elem_id="lora_trainer_create_project",
                                                   scale=0, min_width=140)
            self.refresh_projects_button = gr.Button("Refresh", elem_id="lora_trainer_refresh_projects",
                                                     scale=0, min_width=100)
        self.project_info = gr.HTML(self._project_info(first), elem_id="lora_trainer_project_info")

    def _model_row(self, model: str | None) -> None:
        with gr.Row():
            choices = self._model_choices()
            listed, path = self._model_fields(model) if model else (choices[0][1] if choices else None, "")
            self.model = gr.Dropdown(choices, value=listed, label="Base model (SDXL)",
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
            made.update({f.key: _component(f, value_of[f.key]) for f in FIELDS if f.kind == "bool"})
        with gr.Accordion("More settings", open=False, elem_id="lora_trainer_more_settings"):
            with gr.Row():
                made.update({f.key: _component(f, value_of[f.key]) for f in FIELDS
                             if f.advanced and f.kind != "bool"})
        return [made[f.key] for f in FIELDS]

    def _buttons(self) -> None:
        with gr.Row():
            self.save_button = gr.Button("Save config", elem_id="lora_trainer_save_config")
            self.load_button = gr.Button("Load config", elem_id="lora_trainer_load_config")
            self.start_button = gr.Button("Start", variant="primary", elem_id="lora_trainer_start")
            self.stop_button = gr.Button("Stop", variant="stop", interactive=False, elem_id="lora_trainer_stop")
            self.resume_button = gr.Button("Resume", elem_id="lora_trainer_resume")

    def _status_area(self) -> None:
        self.status = gr.HTML(render.status(RunStatus()), elem_id="lora_trainer_status")
        self.plot = gr.LinePlot(loss_frame([]), x="step", y="loss", color="series", label="Loss",
                                elem_id="lora_trainer_loss_plot", height=260)
        self.saved = gr.HTML(elem_id="lora_trainer_saved")  # the project's LoRA files, from the first refresh
        self.tensorboard = gr.Textbox(self._tensorboard(self.project.value), label="TensorBoard",
                                      interactive=False, show_copy_button=True,
                                      elem_id="lora_trainer_tensorboard")
        self.log = gr.Textbox(label="Trainer output", lines=8, max_lines=8, interactive=False,
                              autoscroll=True, elem_id="lora_trainer_log")
        self.plot_key = gr.State("")
        self.timer = gr.Timer(STATUS_INTERVAL_S)

    # --- events ---------------------------------------------------------------------------------
    def _wire(self) -> None:
        project_inputs = [self.project, self.repeats]
        config_inputs = [*project_inputs, self.model, self.model_path, self.base, *self.fields]
        status_outputs = [self.status, self.plot, self.saved, self.log, self.start_button, self.stop_button,
                          self.resume_button, self.plot_key]
        output_name = self.output_name

        self._open_project_event(self.project.change)
        self.create_project_button.click(self.create_project, project_inputs,
                                         [self.project, self.project_info, self.message])
        self.refresh_projects_button.click(self.refresh_projects, [self.project], [self.project])
        self.refresh_models_button.click(self.refresh_models, [self.model], [self.model])
        self.preset.input(self.apply_preset, [self.preset], [self.base, *self.fields])
        self.save_button.click(self.save_config, config_inputs, [self.message])
        self.load_button.click(self.load_config, project_inputs,
                               [self.base, *self.fields, self.model, self.model_path, self.message])
        refresh = {"fn": self.refresh, "inputs": [self.plot_key, self.project], "outputs": status_outputs,
                   "show_progress": "hidden"}
        launch_outputs = [self.message, self.use_name_button, self.suggested_name]
        self.start_button.click(self.start, config_inputs, launch_outputs).then(**refresh)
        self.resume_button.click(self.resume, config_inputs, launch_outputs).then(**refresh)
        self.use_name_button.click(self.use_suggested_name, [self.suggested_name],
                                   [output_name, self.use_name_button, self.message])
        self.stop_button.click(self.stop, None, [self.message]).then(**refresh)
        self.timer.tick(**refresh)

    def _open_project_event(self, trigger) -> None:
        """What opening a project shows: its folders, LoRA files, free output name, saved settings."""
        trigger(self.select_project, [self.project],
                [self.repeats, self.output_name, self.project_info, self.tensorboard, self.saved,
                 self.use_name_button], show_progress="hidden").then(
            self.open_saved_settings, [self.project], [self.base, *self.fields, self.model, self.model_path],
            show_progress="hidden")

    def wire_page_load(self, blocks: gr.Blocks) -> None:
        """The tab is built once (at WebUI start); a page opened later must show the project as it is
        now: runs finished since, settings saved since."""
        self._open_project_event(blocks.load)

    # --- callbacks: project and model -----------------------------------------------------------
    def select_project(self, name: str | None):
        """The project's folders, its LoRA files (published to the host again), a training it has
        running since before a UI restart, and an output name no earlier run used."""
        hide = gr.update(visible=False)
        try:
            project = self._open(name)
        except ValueError as e:
            return gr.update(), gr.update(), render.message(str(e), error=True), "", "", hide
        self.runner.adopt([project])
        saved = render.saved_files(*self.runner.project_loras(project, recheck=True), empty=NO_LORA_YET)
        return (project.repeats, self._free_output_name(project.name), self._project_info(project.name),
                tensorboard_command(project), saved, hide)

    def open_saved_settings(self, name: str | None):
        """A project that has saved settings fills the form with them; otherwise the form stays."""
        settings = self._saved_settings(name)
        if settings is None:
            return [gr.update() for _ in range(len(FIELDS) + 3)]
        model, model_path = self._model_fields(settings["pretrained_model_name_or_path"])
        return settings, *form_values(settings), model, model_path

    def create_project(self, name: str | None, repeats: float | None):
        try:
            project = self._open(name, repeats).create()
        except USER_ERRORS as e:
            return gr.update(), gr.update(), render.message(str(e), error=True)
        projects = list_projects(self.host.workspace())
        return (gr.update(choices=projects, value=project.name), self._project_info(project.name),
                render.message(f"project folders ready in {project.root}"))

    def refresh_projects(self, current: str | None):
        return gr.update(choices=list_projects(self.host.workspace()), value=current)

    def refresh_models(self, current: str | None):
        return gr.update(choices=self._model_choices(), value=current)

    # --- callbacks: settings --------------------------------------------------------------------
    def apply_preset(self, name: str | None):
        if name not in PRESETS:
            return gr.update(), *[gr.update() for _ in FIELDS]
        settings = preset_settings(name)
        values = form_values(settings)
        # The output name belongs to the project, not to the preset.
        return settings, *[gr.update() if f.key == "output_name" else v for f, v in zip(FIELDS, values)]

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
            settings = load_project_settings(project)
        except USER_ERRORS as e:
            unchanged = [gr.update() for _ in range(len(FIELDS) + 3)]
            return *unchanged, render.message(str(e), error=True)
        model, model_path = self._model_fields(settings["pretrained_model_name_or_path"])
        return settings, *form_values(settings), model, model_path, render.message(f"loaded {project.config_file}")

    # --- callbacks: the run ---------------------------------------------------------------------
    def start(self, *inputs):
        return self._launch(inputs, resume=False)

    def resume(self, *inputs):
        return self._launch(inputs, resume=True)

    def _launch(self, inputs, resume: bool):
        """(message, the use-the-free-name button, the free name)."""
        hide = gr.update(visible=False)
        try:
            project, config = self._config(*inputs)
            self.runner.start(project, config, resume=resume)
        except OutputNameTaken as e:
            return (render.message(str(e), error=True),
                    gr.update(value=f"Use {e.suggestion}", visible=True), e.suggestion)
        except USER_ERRORS as e:
            return render.message(str(e), error=True), hide, ""
        verb = "resumed" if resume else "started"
        return render.message(f"{verb} {config.output_name} (settings saved to {project.config_file})"), hide, ""

    def use_suggested_name(self, name: str):
        return name, gr.update(visible=False), render.message(f"output name set to {name}: press Start")

    def stop(self):
        try:
            self.runner.stop()
        except RunnerError as e:
            return render.message(str(e), error=True)
        return render.message("stop requested: the run finishes its step, saves the LoRA and its state, "
                              "and exits; Resume continues it")

    def refresh(self, plot_key: str, project_name: str | None):
        status = self.runner.status()
        key = f"{status.run_dir}:{len(status.losses)}"
        plot = loss_frame(status.losses) if key != plot_key else gr.update()
        return (render.status(status), plot, self._saved_files(project_name), status.log_tail,
                gr.update(interactive=not status.active), gr.update(interactive=status.active),
                gr.update(interactive=not status.active), key)

    # --- helpers --------------------------------------------------------------------------------
    def _open(self, name: str | None, repeats: float | None = None) -> Project:
        name = (name or "").strip()
        if not name:
            raise ValueError("choose a project, or type a new project name")
        return open_project(self.host.workspace(), name, None if repeats is None else int(repeats))

    def _config(self, name, repeats, model, model_path, base, *values) -> tuple[Project, TrainConfig]:
        project = self._open(name, repeats)
        settings = settings_from_form(base, list(values))
        return project, config_for_project(project, settings, (model_path or "").strip() or model or "")

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
        return render.project_info(str(project.train_images), project.training_folders(), project.img.is_dir())

    def _saved_files(self, name: str | None) -> str:
        """The selected project's LoRA files (the run's among them as they are saved)."""
        try:
            project = self._open(name)
        except ValueError:
            return ""
        return render.saved_files(*self.runner.project_loras(project), empty=NO_LORA_YET)

    def _saved_settings(self, name: str | None) -> dict[str, Any] | None:
        """The project's saved settings with an output name no earlier run used; None when it has no
        (valid) settings file: a broken one is reported by *Load config*, not on opening."""
        try:
            project = self._open(name)
            settings = load_project_settings(project)
        except USER_ERRORS:
            return None
        return {**settings, "output_name": next_free_output_name(project.model, settings["output_name"])}

    def _free_output_name(self, name: str | None) -> str:
        """The project's name as output name, or `<name>_v2` (...) when earlier runs used it."""
        try:
            project = self._open(name)
        except ValueError:
            return ""
        return next_free_output_name(project.model, project.name)

    def _tensorboard(self, name: str | None) -> str:
        try:
            return tensorboard_command(self._open(name))
        except ValueError:
            return ""

    def _model_choices(self) -> list[tuple[str, str]]:
        paths = self.host.checkpoints()
        names = [p.name for p in paths]
        return [(p.name if names.count(p.name) == 1 else f"{p.parent.name}/{p.name}", str(p)) for p in paths]

    def _model_fields(self, model: str) -> tuple[str | None, str]:
        """(dropdown value, path box value) for a config's model: the list when it holds it."""
        known = {value for _, value in self._model_choices()}
        return (model, "") if model in known else (None, model)


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

