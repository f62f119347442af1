"""Fast checks of the UI's pieces without a browser: the `ui` command, the settings form mapping and
the HTML the panel shows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lora_trainer.config import ConfigError, TrainConfig
from lora_trainer.config.presets import PRESETS, load_preset
from lora_trainer.host import subprocess_env
from lora_trainer.runs.follow import RunStatus, SavedLora
from lora_trainer.ui import render
from lora_trainer.ui.form import FIELDS, form_values, settings_from_form


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_other_commands_do_not_import_gradio():
    code = ("import sys; from lora_trainer.cli import build_parser; build_parser(); "
            "import lora_trainer.ui; print('gradio' in sys.modules)")
    assert run_python(code).strip() == "False"


def test_ui_command_help_lists_its_options():
    out = run_python("from lora_trainer.cli import main; main(['ui', '--help'])")
    for option in ("--dir", "--models", "--model-config-dir", "--host", "--port"):
        assert option in out


def test_every_form_field_is_a_config_key_with_a_lora_trainer_id():
    keys = set(load_preset("CPU smoke test").to_dict())
    assert all(f.key in keys and f.elem_id == f"lora_trainer_{f.key}" for f in FIELDS)
    assert len({f.key for f in FIELDS}) == len(FIELDS)


def test_form_round_trip_keeps_the_base_and_applies_changes():
    base = load_preset("Realistic character (guide) - NVIDIA").to_dict()
    values = form_values(base)
    by_key = dict(zip((f.key for f in FIELDS), values))
    assert by_key["unet_lr"] == 1e-4 and by_key["text_encoder_lr"] == 5e-5  # as they take effect
    by_key.update(max_train_epochs=12.0, output_name="  hero ", network_dim=64)
    settings = settings_from_form(base, [by_key[f.key] for f in FIELDS])
    assert settings["max_train_epochs"] == 12 and isinstance(settings["max_train_epochs"], int)
    assert settings["output_name"] == "hero" and settings["network_dim"] == 64
    assert settings["optimizer_args"] == PRESETS["Realistic character (guide) - NVIDIA"]["optimizer_args"]
    assert settings["cache_latents_to_disk"] is True  # not on the form: kept from the base


def test_empty_number_fails_validation_naming_the_key():
    base = load_preset("CPU smoke test").to_dict()
    values = [None if f.key == "train_batch_size" else v for f, v in zip(FIELDS, form_values(base))]
    with pytest.raises(ConfigError, match="train_batch_size = None: must be an integer"):
        TrainConfig.from_dict(settings_from_form(base, values))


def test_status_and_saved_files_are_escaped_and_complete():
    saved = [SavedLora(Path("/m/a<b>-000001.safetensors"), "a<b>-000001", "epoch", 1, 8)]
    status = RunStatus(state="failed", message="failed: bad <thing>", error="bad <thing>", step=3,
                       total_steps=8, saved=saved, warnings=["w & more"])
    html = render.status(status)
    assert "<thing>" not in html and "bad &lt;thing&gt;" in html
    assert '<progress max="8" value="3"' in html and "w &amp; more" in html
    table = render.saved_files(saved)
    assert "&lt;lora:a&lt;b&gt;-000001:1&gt;" in table and "epoch 1" in table
    assert 'data-copy="&lt;lora:a&lt;b&gt;-000001:1&gt;"' in table  # the copy button's text, escaped
    assert render.duration(3725) == "1:02:05" and render.duration(65) == "1:05"


def test_saved_files_are_grouped_by_output_name():
    saved = [SavedLora(Path("/m/b-000001.safetensors"), "b-000001", "epoch", 1, 8, "b"),
             SavedLora(Path("/m/a.safetensors"), "a", "final", 0, 0, "a")]
    table = render.saved_files(saved)
    assert table.index('<th colspan="3">b</th>') < table.index("b-000001.safetensors") \
        < table.index('<th colspan="3">a</th>') < table.index("a.safetensors")
    assert "<td>final</td>" in table  # a file without our metadata: its epoch is unknown
    assert "No LoRA saved in this project yet." in render.saved_files([], empty="No LoRA saved in this project yet.")
    # the block javascript/lora_trainer_cards.js reads: which project's list it is
    assert render.saved_files(saved, project='p"q').startswith('<div class="lora-trainer-saved-list" data-project="p&quot;q">')
    assert render.saved_files([], project="p").startswith('<div class="lora-trainer-saved-list" data-project="p">')
    assert "data-refresh-cards" in render.message("new preview", refresh_cards=True)
    assert "data-refresh-cards" not in render.message("saved")


# gradio 4.40 and its fastapi/starlette warn about their own deprecated calls when imported
THIRD_PARTY_WARNINGS = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")


@THIRD_PARTY_WARNINGS
def test_only_the_standalone_page_carries_style_and_script(tmp_path):
    """Forge loads style.css and javascript/*.js for every extension: the tab it builds must not
    bring them a second time."""
    from lora_trainer.host import StandaloneHost
    from lora_trainer.ui import build_ui
    from lora_trainer.ui.app import SCRIPT_DIR, STYLE_FILE

    host = StandaloneHost(workspace_dir=tmp_path)
    forge_like, standalone = build_ui(host), build_ui(host, standalone=True)
    assert forge_like.css is None and forge_like.head is None
    assert standalone.css == STYLE_FILE.read_text(encoding="utf-8") and "#lora_trainer_log textarea" in standalone.css
    scripts = [(SCRIPT_DIR / name).read_text(encoding="utf-8") for name in ("lora_trainer.js", "lora_trainer_cards.js",
                                                                    "lora_trainer_notes.js")]
    assert standalone.head == "\n".join(f"<script>\n{script}\n</script>" for script in scripts)


@THIRD_PARTY_WARNINGS
def test_fields_that_follow_the_workspace_are_kept_out_of_forges_ui_config(tmp_path):
    from lora_trainer.host import StandaloneHost
    from lora_trainer.ui import build_ui

    blocks = build_ui(StandaloneHost(workspace_dir=tmp_path))
    not_saved = {b.elem_id for b in blocks.blocks.values() if getattr(b, "do_not_save_to_config", False)}
    review = {f"lora_trainer_review_{name}" for name in
              ("project", "run", "epochs", "prompts", "model", "note_epoch", "note", "rating", "chosen",
               "cell_params", "next_run", "width", "height")}
    dataset = {f"lora_trainer_dataset_{name}" for name in
               ("project", "paths", "selection", "excluded", "compare_name", "edit_name", "crop_name", "mask_target",
                "picker")}
    captions = {f"lora_trainer_captions_{name}" for name in
                ("project", "folder", "trigger", "selection", "image", "caption")}
    assert not_saved == {"lora_trainer_project", "lora_trainer_repeats", "lora_trainer_new_project",
                         "lora_trainer_output_name", "lora_trainer_preset"} | review | dataset | captions


def test_a_run_in_another_project_is_named_above_the_projects_own_state():
    html = render.status(RunStatus(message="no training started in this project yet",
                                   elsewhere="training in project <b>: epoch 2/4, step 9/32"))
    assert "<b>Busy</b> &mdash; training in project &lt;b&gt;: epoch 2/4, step 9/32" in html
    assert html.index("Busy") < html.index("Idle")
    assert "Busy" not in render.status(RunStatus())


def panel_for(workspace: Path, model_dirs: list[Path]):
    import gradio as gr

    from lora_trainer.host import StandaloneHost
    from lora_trainer.runs.runner import TrainRunner
    from lora_trainer.ui.train_panel import TrainPanel

    host = StandaloneHost(workspace, model_dirs=model_dirs)
    with gr.Blocks():
        return TrainPanel(host, TrainRunner(host)).build()


@THIRD_PARTY_WARNINGS
def test_a_saved_model_shows_in_the_list_when_the_list_has_it(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    listed = models / "base.safetensors"
    listed.write_bytes(b"x")
    other = tmp_path / "other"
    other.mkdir()
    os.link(listed, other / "link.safetensors")  # the demo's model: a hard link of the listed file
    (other / "own.safetensors").write_bytes(b"y")
    panel = panel_for(tmp_path, [models])
    choices = [("base.safetensors", str(listed))]
    assert panel._model_choice(str(other / "link.safetensors")) == (choices, str(listed), "", "")
    assert panel._model_choice("") == (choices, str(listed), "", "")  # no model saved: the first listed
    own = str(other / "own.safetensors")  # a file outside the list joins it
    assert panel._model_choice(own) == ([*choices, (f"own.safetensors ({other})", own)], own, "", "")
    gone = str(tmp_path / "gone.safetensors")  # the path box holds what is not a file, with a note
    assert panel._model_choice(gone) == (
        choices, None, gone, f"the saved model {gone} is not in this list: the path box holds it")


@THIRD_PARTY_WARNINGS
def test_a_config_from_the_config_command_opens_with_the_projects_name(tmp_path, write_lora):
    from lora_trainer.project import Project
    from lora_trainer.runs.layout import RunFiles
    from lora_trainer.ui.train_panel import SAVED_SETTINGS

    models = tmp_path / "models"
    models.mkdir()
    (models / "base.safetensors").write_bytes(b"x")
    project = Project(tmp_path / "hero", "hero").create()
    load_preset("CPU smoke test").save_json(project.config_file)  # output_name 'lora', no model
    panel = panel_for(tmp_path, [models])
    assert panel.output_name.value == "hero" and panel.preset.value == SAVED_SETTINGS  # as the page opens

    def opened():
        base, *values, model, path, preset = panel.open_saved_settings("hero", "CPU smoke test")
        fields = dict(zip((f.key for f in FIELDS), values))
        return fields["output_name"], model["value"], path, preset

    assert opened() == ("hero", str(models / "base.safetensors"), "", SAVED_SETTINGS)
    write_lora(project.model, "hero-000001", 1, ss_output_name="hero")
    assert opened()[0] == "hero_v2"  # earlier runs used the name
    files = RunFiles(project.model, "hero")  # that run stopped and can be resumed: its name comes back
    files.state_dir.mkdir()
    files.progress.write_text('{"global_step": 8, "run_name": "hero20260101000000"}')
    assert opened()[0] == "hero"


@THIRD_PARTY_WARNINGS
def test_resume_refused_for_a_changed_dataset_offers_to_resume_with_the_changes(tmp_path):
    from lora_trainer.project import Project
    from lora_trainer.runs.runner import DatasetChanged

    project = Project(tmp_path / "hero", "hero").create()
    config = load_preset("CPU smoke test", output_name="hero")
    calls = []

    class Runner:
        def start(self, project, config, *, resume=False, resume_changed=False):
            calls.append((resume, resume_changed))
            if resume and not resume_changed:
                raise DatasetChanged("hero", ["removed: 1_hero/003.png"])

    panel = panel_for(tmp_path, [])
    panel.runner = Runner()
    panel._config = lambda *inputs: (project, config)
    message, _use_name, _name, offer = panel.resume()
    assert "removed: 1_hero/003.png" in message and "resume with the changes" in message
    assert offer["visible"] is True
    message, _use_name, _name, offer = panel.resume_with_changes()
    assert message.count("resumed hero with the changed dataset") == 1 and offer["visible"] is False
    assert calls == [(True, False), (True, True)]


def test_project_info_says_which_images_have_no_caption_before_start(tmp_path):
    from lora_trainer.project import Project

    project = Project(tmp_path / "hero", "hero").create()
    for name in ("a", "b", "c"):
        Image.new("RGB", (8, 8)).save(project.train_images / f"{name}.png")
    (project.train_images / "a.txt").write_text("hero, smile", encoding="utf-8")
    (project.train_images / "b.caption").write_text("hero", encoding="utf-8")
    missing = project.uncaptioned(".txt")
    assert {folder.name: [p.name for p in images] for folder, images in missing.items()} == {"1_hero": ["b.png", "c.png"]}
    assert project.uncaptioned("caption") == {project.train_images: [project.train_images / "a.png",
                                                                      project.train_images / "c.png"]}
    html = render.project_info(str(project.train_images), project.training_folders(), True, missing)
    assert "3 image(s)" in html
    assert "2 image(s) in <code>1_hero</code> have no caption (b.png, c.png): they would train with the caption " \
           "<code>hero</code> alone. Caption them in the Captions tab first." in html
    assert "no caption" not in render.project_info(str(project.train_images), project.training_folders(), True, {})


def test_a_running_jobs_line_has_a_progress_bar_and_a_finished_one_none():
    from lora_trainer.ui import render

    line = render.job_line("importing into hero: 3/8, about 5 s left", 3, 8, running=True)
    assert '<progress class="lora-trainer-progress" max="8" value="3"></progress> importing into hero: 3/8' in line
    assert "<progress" not in render.job_line("7 image(s) prepared", 8, 8, running=False)
    assert "<progress" not in render.job_line("loading the model", 0, 0, running=True)  # total not known yet
    assert "lora-trainer-error" in render.job_line("ended: x.png: broken", 1, 8, running=False, error=True)


def test_the_status_names_the_validation_loss_and_its_lowest_epoch():
    from lora_trainer.runs.follow import RunStatus
    from lora_trainer.ui import render

    html = render.status(RunStatus(state="running", message="epoch 3/4", loss=0.1, average_loss=0.12,
                                   validation=[(1, 0.31), (2, 0.27), (3, 0.29)]))
    assert "validation loss 0.2900 after epoch 3 (lowest 0.2700, epoch 2)" in html
