"""The Host contract and its standalone implementation: model lists, paths, and the environment a
trainer process gets."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lora_trainer.host import PACKAGE_PARENT, Host, StandaloneHost, find_checkpoints, subprocess_env
from lora_trainer.project import list_projects, open_project


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_find_checkpoints_lists_model_files_recursively_by_name(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    expected = [touch(b / "sub" / "Alpha.SAFETENSORS"), touch(a / "beta.ckpt"), touch(a / "zeta.safetensors")]
    touch(a / "notes.txt")
    touch(a / "lora.pt")
    (a / "folder.safetensors").mkdir()  # a folder with a model's suffix is not a file to load
    assert find_checkpoints(a, b, tmp_path / "missing") == expected


def test_find_checkpoints_keeps_same_names_from_different_folders(tmp_path):
    first, second = touch(tmp_path / "x" / "m.safetensors"), touch(tmp_path / "y" / "m.safetensors")
    assert find_checkpoints(tmp_path / "y", tmp_path / "x") == [first, second]


def test_standalone_host_has_every_host_method_with_the_same_parameters():
    """The UI calls a Host's methods as the protocol declares them (e.g. `publish_lora(file, project)`):
    the standalone host must follow each change of the protocol, not only have methods of those names."""
    declared = {name: inspect.signature(member) for name, member in vars(Host).items()
                if callable(member) and not name.startswith("_")}
    assert set(declared) >= {"workspace", "checkpoints", "sdxl_config_dir", "free_memory", "publish_lora",
                             "trainer_command", "render"}
    assert {name: list(inspect.signature(getattr(StandaloneHost, name)).parameters) for name in declared} == {
        name: list(signature.parameters) for name, signature in declared.items()}


def test_standalone_host_workspace_holds_the_projects(tmp_path):
    host = StandaloneHost(workspace_dir=str(tmp_path / "ws"))  # as `ui --dir ws` passes it
    assert host.workspace() == tmp_path / "ws" and list_projects(host.workspace()) == []
    open_project(host.workspace(), "hero").create()
    open_project(host.workspace(), "Alice", repeats=2).create()
    assert list_projects(host.workspace()) == ["Alice", "hero"]
    assert (tmp_path / "ws" / "Alice" / "img" / "2_Alice").is_dir()


def test_standalone_host_lists_checkpoints_of_its_model_folders(tmp_path):
    """`ui --models A --models B`: model files anywhere below, by name; no LoRA .pt, no other files."""
    a, b = tmp_path / "Stable-diffusion", tmp_path / "more"
    expected = [touch(a / "SDXL" / "base.safetensors"), touch(b / "custom.ckpt"), touch(a / "realistic.safetensors")]
    touch(a / "SDXL" / "base.yaml")
    touch(a / "lora.pt")
    touch(b / "preview.png")
    host = StandaloneHost(workspace_dir=tmp_path / "ws", model_dirs=[a, b, tmp_path / "missing"],
                          config_dir=tmp_path / "cfg")
    assert host.checkpoints() == expected
    assert host.sdxl_config_dir() == tmp_path / "cfg"


def test_standalone_host_defaults(tmp_path):
    host = StandaloneHost(workspace_dir=str(tmp_path))
    assert host.workspace() == tmp_path and host.checkpoints() == [] and host.sdxl_config_dir() is None


def test_standalone_host_leaves_the_hub_cache_and_rembgs_folder_to_the_libraries(tmp_path):
    """None: huggingface-hub's own cache (HF_HUB_CACHE / HF_HOME) and rembg's own folder (U2NET_HOME)."""
    host = StandaloneHost(workspace_dir=tmp_path)
    assert host.hub_cache() is None and host.rembg_models() is None


def test_publish_lora_gives_the_prompt_name_of_the_saved_file(tmp_path):
    """Without a WebUI the LoRA stays where the run saved it; the name is what `<lora:NAME:1>` takes
    (the file name without .safetensors, dots in the name kept)."""
    host = StandaloneHost(workspace_dir=tmp_path)
    project = open_project(tmp_path, "hero").create()
    saved = touch(project.model / "hero.v2-000003.safetensors")
    assert host.publish_lora(saved, project.name) == "hero.v2-000003"
    assert host.publish_lora(saved, project.name) == "hero.v2-000003"  # again: same name
    assert sorted(p.name for p in project.model.iterdir()) == ["hero.v2-000003.safetensors"]
    assert saved.read_bytes() == b"x"


def test_subprocess_env_puts_the_package_first_once(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/elsewhere", str(PACKAGE_PARENT), "/elsewhere"]))
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    env = subprocess_env({"EXTRA": "1"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(PACKAGE_PARENT), "/elsewhere"]
    assert env["PYTHONUNBUFFERED"] == "1" and env["EXTRA"] == "1"
    assert os.environ.get("EXTRA") is None  # the caller's environment is not changed


def test_trainer_command_runs_from_any_folder(tmp_path, monkeypatch):
    """Forge runs from its own root, with our package in extensions/: the command must still find it."""
    monkeypatch.delenv("PYTHONPATH", raising=False)
    host = StandaloneHost(workspace_dir=tmp_path)
    assert host.trainer_command()[0] == sys.executable  # the UI's own Python: the packages it has
    done = subprocess.run(host.trainer_command() + ["--help"], cwd=tmp_path, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "train" in done.stdout and "ui" in done.stdout


def test_standalone_host_preview_memory_and_no_txt2img(tmp_path):
    """Without a WebUI the preview goes beside the run's own LoRA file; the render memory is this
    machine's (no GPU here); there is no txt2img to send parameters to."""
    from PIL import Image

    host = StandaloneHost(workspace_dir=tmp_path)
    project = open_project(tmp_path, "hero").create()
    saved = touch(project.model / "hero-000003.safetensors")
    cell = tmp_path / "cell.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(cell)
    assert host.publish_preview(saved, project.name, cell) == project.model / "hero-000003.preview.png"
    assert (project.model / "hero-000003.preview.png").read_bytes() == cell.read_bytes()
    free, device = host.render_memory()
    assert device in ("cpu", "cuda:0") and free > 0
    assert host.bind_txt2img_paste(object(), object()) is False


def test_typed_paths_stay_inside_the_allowed_folders_on_a_server_others_reach(tmp_path):
    """`ui --host 0.0.0.0` (Forge: --listen): a path typed in the tab must lie inside the workspace or a
    model folder, links resolved; outside ones are refused alike whether they exist or not (the answer
    says nothing about other files). A local server takes any path."""
    from lora_trainer.host import PathOutsideError, confine_path, looks_like_path

    workspace, models = tmp_path / "ws", tmp_path / "models"
    workspace.mkdir()
    models.mkdir()
    (models / "base.safetensors").write_bytes(b"x")
    (workspace / "escape").symlink_to(tmp_path.parent, target_is_directory=True)
    host = StandaloneHost(workspace_dir=workspace, model_dirs=[models], confined=True)
    roots = host.path_roots()
    assert roots == [workspace, models]
    assert confine_path(str(models / "base.safetensors"), roots) == models / "base.safetensors"
    assert confine_path(f' "{workspace}/hero/sources" ', roots) == workspace / "hero" / "sources"
    for outside in ("/etc/passwd", "/nonexistent/x.safetensors", str(workspace / "escape" / "x"),
                    str(workspace / ".." / "models2")):
        with pytest.raises(PathOutsideError, match="outside the folders this server lets a page reach"):
            confine_path(outside, roots)
    assert StandaloneHost(workspace_dir=workspace).path_roots() is None
    assert confine_path("/etc/passwd", None) == Path("/etc/passwd")
    assert looks_like_path("/a/b.safetensors") and looks_like_path("~/m") and looks_like_path("C:\\m")
    assert not looks_like_path("SmilingWolf/wd-vit-tagger-v3") and not looks_like_path("sdxl.safetensors [a1b2]")


def test_the_panels_refuse_typed_paths_outside_on_a_server_others_reach(tmp_path, monkeypatch):
    import gradio as gr

    from lora_trainer.runs.runner import TrainRunner
    from lora_trainer.ui import dataset_panel, review_panel
    from lora_trainer.ui.captions_panel import CaptionsPanel
    from lora_trainer.ui.train_panel import TrainPanel

    host = StandaloneHost(workspace_dir=tmp_path / "ws", model_dirs=[tmp_path / "models"], confined=True)
    project = open_project(host.workspace(), "hero").create()
    with pytest.raises(ValueError, match="/etc: outside the folders"):
        dataset_panel.import_inputs("/etc", None, host.path_roots())
    with gr.Blocks():
        train = TrainPanel(host, TrainRunner(host)).build()
        captions = CaptionsPanel(host).build()
    with pytest.raises(ValueError, match="/etc/x.safetensors: outside the folders"):
        train._config("hero", 1, None, "/etc/x.safetensors", {}, *[None] * 0)
    panel = review_panel.ReviewPanel(host, TrainRunner(host))
    (project.model / "hero-000001.safetensors").write_bytes(b"x")
    message = panel.start_render("hero", "hero", [], True, "a", "", "1", "", 2, 5, "Euler", 64, 64, "/etc/x.safetensors")
    assert "/etc/x.safetensors: outside the folders" in message
    captions.start_tagging("hero", str(project.train_images), "/etc", "cpu", 0.35, 0.85, "skip", "", "")
    import time
    while not captions._job.finished:
        time.sleep(0.02)
    assert "/etc: outside the folders" in captions._job.error
    # a hub id is not a path: it is looked up in the hub cache (offline here), not refused as outside
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "near" / "by").mkdir(parents=True)
    for model, words in (("Owner/name", "not in the Hugging Face cache"), ("near/by", "near/by: outside the folders")):
        captions.start_tagging("hero", str(project.train_images), model, "cpu", 0.35, 0.85, "skip", "", "")
        while not captions._job.finished:
            time.sleep(0.02)
        assert words in captions._job.error
