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
    assert "latents: 4 encoded, 0 reused from cache" in out
    assert "python -m lora_trainer ui --dir" in out
    # ... and it ends with the epochs beside the base model in a fixed-seed grid
    grid = project.root / "review" / "myLoRA" / "grid.png"
    assert f"Grid of the epochs beside the base model (fixed seed): {grid}" in out
    from lora_trainer.review.grid import load_grid_spec

    assert [c.label for c in load_grid_spec(grid).columns] == ["no LoRA", "epoch 1 (step 4)"]
    assert len(list((grid.parent / "grid").glob("*.png"))) == 2

    # What the Train tab shows for the demo: the project, its saved settings and the base model.
    host = StandaloneHost(tmp_path, model_dirs=[tmp_path / "models"])
    assert list_projects(host.workspace()) == ["myLoRA"]
    assert load_project_settings(project)["output_name"] == "myLoRA"
    assert [p.name for p in host.checkpoints()] == ["tiny_sdxl.safetensors"]


def test_a_second_demo_in_the_same_folder_reuses_the_model_images_and_latents(tmp_path, capsys):
    """`make demo` twice: the second builds nothing again, encodes no image again, and keeps the
    first run's LoRA files (it trains under the next free name, as the UI proposes)."""
    assert main(["demo", "--dir", str(tmp_path), "--images", "4", "--epochs", "1"]) == 0
    capsys.readouterr()
    project = open_project(tmp_path, "myLoRA")
    model = tmp_path / "model" / "tiny_sdxl.safetensors"
    made = {p: p.stat().st_mtime_ns for p in [model, *project.train_images.iterdir()]}
    first_lora = (project.model / "myLoRA.safetensors").read_bytes()

    assert main(["demo", "--dir", str(tmp_path), "--images", "4", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "using the tiny SDXL-shaped model built earlier" in out
    assert "latents: 0 encoded, 4 reused from cache" in out
    assert {p: p.stat().st_mtime_ns for p in made} == made  # neither rebuilt nor rewritten
    assert sorted(p.name for p in project.model.glob("*.safetensors")) == [
        "myLoRA-000001.safetensors", "myLoRA.safetensors", "myLoRA_v2-000001.safetensors", "myLoRA_v2.safetensors"]
    assert (project.model / "myLoRA.safetensors").read_bytes() == first_lora
    assert load_project_settings(project)["output_name"] == "myLoRA_v2"  # what the UI and `train` use next

    # Fewer images asked for: the others leave the training folder; the rest still come from the cache.
    assert main(["demo", "--dir", str(tmp_path), "--images", "2", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in project.train_images.iterdir()) == ["000.png", "000.txt", "001.png", "001.txt"]
    assert "latents: 0 encoded, 2 reused from cache" in out
    assert "myLoRA_v3.safetensors" in out


def test_an_interrupted_model_build_is_built_again(tmp_path):
    from lora_trainer.demo.tiny_sdxl import BUILT_MARKER, build_tiny_sdxl, existing_tiny_sdxl

    assert existing_tiny_sdxl(tmp_path) is None
    built = build_tiny_sdxl(tmp_path)
    assert existing_tiny_sdxl(tmp_path) == built
    assert existing_tiny_sdxl(tmp_path, seed=1) is None  # another seed is another model
    built.single_file.unlink()
    assert existing_tiny_sdxl(tmp_path) is None
    build_tiny_sdxl(tmp_path)
    (tmp_path / BUILT_MARKER).unlink()  # what a build stopped half-way leaves
    assert existing_tiny_sdxl(tmp_path) is None
