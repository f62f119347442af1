"""`make demo` (`python -m lora_trainer demo`): the README's first command, on a fresh folder, offline."""

from __future__ import annotations

from lora_trainer.cli import main
from lora_trainer.host import StandaloneHost
from lora_trainer.project import list_projects, open_project
from lora_trainer.runs.runner import load_project_settings


def test_demo_trains_and_leaves_a_project_the_ui_opens(tmp_path, capsys):
    assert main(["demo", "--dir", str(tmp_path), "--images", "4", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    project = open_project(tmp_path, "myLoRA")
    assert sorted(p.name for p in project.model.glob("*.safetensors")) == ["myLoRA-000001.safetensors",
                                                                            "myLoRA.safetensors"]
    assert len(list(project.train_images.glob("*.png"))) == 4
    assert "python -m lora_trainer ui --dir" in out

    # What the Train tab shows for the demo: the project, its saved settings and the base model.
    host = StandaloneHost(tmp_path, model_dirs=[tmp_path / "models"])
    assert list_projects(host.workspace()) == ["myLoRA"]
    assert load_project_settings(project)["output_name"] == "myLoRA"
    assert [p.name for p in host.checkpoints()] == ["tiny_sdxl.safetensors"]
