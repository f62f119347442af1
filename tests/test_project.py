"""Projects in a workspace: which folders count, repeats read back from img/, images per folder."""

from __future__ import annotations

import pytest

from lora_trainer.project import Project, list_projects, open_project


def test_list_projects_takes_folders_with_img(tmp_path):
    Project(tmp_path / "zed", "zed").create()
    Project(tmp_path / "Alice", "Alice", repeats=3).create()
    (tmp_path / "models").mkdir()  # not a project
    (tmp_path / "loose.txt").write_text("x")
    assert list_projects(tmp_path) == ["Alice", "zed"]
    assert list_projects(tmp_path / "missing") == []


def test_open_project_reads_repeats_from_the_image_folder(tmp_path):
    Project(tmp_path / "hero", "hero", repeats=10).create()
    assert open_project(tmp_path, "hero").train_images == tmp_path / "hero" / "img" / "10_hero"
    assert open_project(tmp_path, "hero", repeats=2).repeats == 2  # an explicit value wins
    assert open_project(tmp_path, "new").repeats == 1
    with pytest.raises(ValueError, match="repeats must be a whole number >= 1"):
        open_project(tmp_path, "hero", repeats=0)
    with pytest.raises(ValueError, match="project name '../x'"):
        open_project(tmp_path, "../x")
    with pytest.raises(ValueError, match=r"project name 'hero\\n'"):
        open_project(tmp_path, "hero\n")  # a trailing newline would make folders with newlines in their names


def test_training_folders_count_images_and_config_paths(tmp_path):
    project = Project(tmp_path / "p", "p", repeats=2).create()
    for name in ("a.png", "b.JPG", "a.txt"):
        (project.train_images / name).write_bytes(b"x")
    (project.img / "5_outfit").mkdir()
    assert project.training_folders() == {project.img / "2_p": 2, project.img / "5_outfit": 0}
    assert project.config_file == tmp_path / "p" / "p.json"
    assert project.trainer_log == tmp_path / "p" / "log" / "trainer.log"
    assert Project(tmp_path / "q", "q").training_folders() == {}
