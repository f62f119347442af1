"""Runs side by side (review/compare.py) on synthetic runs: saved configs, LoRA files, events and notes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lora_trainer.config.settings import TrainConfig
from lora_trainer.demo.synthetic import make_character_dataset
from lora_trainer.project import Project
from lora_trainer.review import compare
from lora_trainer.review.notes import save_note
from lora_trainer.runs.layout import RunFiles
from lora_trainer.runs.resume import DATASET_FILE, dataset_record


def make_run(project: Project, write_lora, name: str, stamp: str, modified: float, losses: dict[int, float],
             **settings) -> Path:
    """A finished run: its saved settings, a LoRA file per epoch, and a run folder with EPOCH_END events."""
    files = RunFiles(project.model, name)
    cfg = TrainConfig(output_name=name, output_dir=str(project.model), logging_dir=str(project.log),
                      train_data_dir=str(project.img), **settings)
    cfg.save_json(files.config)
    os.utime(files.config, (modified, modified))
    for epoch in losses:
        write_lora(project.model, f"{name}-{epoch:06d}", modified, ss_output_name=name, ss_epoch=str(epoch),
                   ss_steps=str(4 * epoch))
    run_dir = project.log / f"{name}{stamp}"
    run_dir.mkdir(parents=True)
    lines = [{"event": "epoch", "time": 0.0, "epoch": e, "loss": loss, "step": 4 * e} for e, loss in losses.items()]
    (run_dir / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run_dir


@pytest.fixture
def project(tmp_path):
    return Project(tmp_path / "p", "p").create()


@pytest.fixture
def two_runs(project, write_lora):
    old = make_run(project, write_lora, "hero", "20260101120000", 1000,
                   {1: 0.20, 2: 0.12, 3: 0.10, 4: 0.11, 5: 0.13, 6: 0.14, 7: 0.15, 8: 0.16},
                   network_dim=32, network_alpha=16, max_train_epochs=8, learning_rate=1e-4)
    new = make_run(project, write_lora, "hero_v2", "20260102120000", 2000, {1: 0.18, 2: 0.09, 3: 0.11},
                   network_dim=24, network_alpha=12, max_train_epochs=3, learning_rate=1e-4)
    save_note(old, 4, rating=5, note="sharp eyes", chosen=True)
    save_note(old, 3, rating=2, note="soft")
    return old, new


def test_runs_newest_first_with_loss_epochs_and_the_chosen_epoch(project, two_runs):
    old, new = two_runs
    runs = compare.project_runs(project)
    assert [r.output_name for r in runs] == ["hero_v2", "hero"]
    v2, hero = runs
    assert hero.epochs == list(range(1, 9)) and v2.epochs == [1, 2, 3]
    assert hero.final_loss == pytest.approx(0.16) and (hero.best_epoch, hero.best_loss) == (3, pytest.approx(0.10))
    assert v2.final_loss == pytest.approx(0.11) and (v2.best_epoch, v2.best_loss) == (2, pytest.approx(0.09))
    assert (hero.chosen_epoch, hero.rating, hero.note) == (4, 5, "sharp eyes")
    assert (v2.chosen_epoch, v2.rating, v2.note) == (None, None, "")
    assert hero.run_dir == old and v2.run_dir == new
    assert hero.settings["network_dim"] == 32 and v2.settings["network_dim"] == 24


def test_the_newest_run_folder_of_a_name_gives_its_loss(project, write_lora, two_runs):
    later = project.log / "hero20260105120000"
    later.mkdir()
    later.joinpath("events.jsonl").write_text(json.dumps({"event": "epoch", "time": 0.0, "epoch": 1,
                                                          "loss": 0.5, "step": 4}) + "\n")
    hero = next(r for r in compare.project_runs(project) if r.output_name == "hero")
    assert hero.run_dir == later and hero.final_loss == 0.5 and hero.chosen_epoch is None


def test_a_run_with_only_a_config_or_only_lora_files(project, write_lora):
    TrainConfig(output_name="planned").save_json(RunFiles(project.model, "planned").config)
    os.utime(RunFiles(project.model, "planned").config, (500, 500))
    write_lora(project.model, "old-000002", 100, ss_output_name="old", ss_epoch="2", ss_steps="8")
    (project.model / "notes.json").write_text('{"not": "a config"}')  # not a run
    write_lora(project.model, "broken-000001", 50, ss_output_name="broken", ss_epoch="1", ss_steps="4")
    (project.model / "broken.json").write_text("{")
    os.utime(project.model / "broken.json", (50, 50))
    runs = {r.output_name: r for r in compare.project_runs(project)}
    assert list(runs) == ["planned", "old", "broken"]
    assert runs["planned"].epochs == [] and runs["planned"].final_loss is None
    assert runs["old"].settings == {} and runs["old"].epochs == [2] and runs["old"].run_dir is None
    assert runs["broken"].settings == {} and "settings not readable" in runs["broken"].problems[0]
    assert compare.project_runs(Project(project.root.parent / "empty", "empty")) == []


def test_differing_settings_leave_out_names_and_folders(project, two_runs):
    runs = compare.project_runs(project)
    assert compare.differing_settings(runs) == ["network_dim", "network_alpha", "max_train_epochs"]
    assert compare.differing_settings(runs[:1]) == []


def test_next_run_from_the_chosen_epoch_with_three_quarters_of_the_rank(project, two_runs):
    hero = next(r for r in compare.project_runs(project) if r.output_name == "hero")
    settings, reasons = compare.next_run_settings(hero)
    assert (settings["max_train_epochs"], settings["network_dim"], settings["network_alpha"]) == (6, 24, 12.0)
    assert settings["learning_rate"] == hero.settings["learning_rate"]
    assert reasons == ["max_train_epochs 8 -> 6: the chosen epoch was 4, plus 2 to spare (a shorter run)",
                       "network_dim 32 -> 24: 3/4 of the rank",
                       "network_alpha 16 -> 12: 3/4 of the alpha, with the rank"]
    half, reasons = compare.next_run_settings(hero, rank_factor=0.5)
    assert (half["network_dim"], half["network_alpha"]) == (16, 8.0) and "1/2 of the rank" in reasons[1]
    TrainConfig.from_dict(half)
    with pytest.raises(ValueError, match="3/4 or 1/2"):
        compare.next_run_settings(hero, rank_factor=0.3)


def test_next_run_without_a_chosen_epoch_uses_the_best_loss(project, two_runs):
    v2 = compare.project_runs(project)[0]
    settings, reasons = compare.next_run_settings(v2)
    assert settings["max_train_epochs"] == 3  # best epoch 2 + 2 is not shorter than 3: kept
    assert [r.split(" ")[0] for r in reasons] == ["network_dim", "network_alpha"]
    assert (settings["network_dim"], settings["network_alpha"]) == (18, 9.0)


def test_next_run_without_a_chosen_epoch_uses_the_scored_pick_before_the_loss(project, two_runs):
    from lora_trainer.review.scores import ColumnScore, GridScores, scores_json_text
    from lora_trainer.runs.layout import scores_file

    old, _new = two_runs
    save_note(old, 4, chosen=False)
    columns = [ColumnScore(f"epoch {e}", e, False, 2, 0, 0.1 * e, 0.8, 0.0) for e in (2, 5)]
    scores_file(old).write_text(scores_json_text(GridScores(columns, [], 5, "epoch 5: the closest face")))
    hero = next(r for r in compare.project_runs(project) if r.output_name == "hero")
    assert hero.chosen_epoch is None and hero.best_epoch == 3
    assert hero.scored.epoch == 5 and hero.scored.likeness == pytest.approx(0.5)
    settings, reasons = compare.next_run_settings(hero)
    assert settings["max_train_epochs"] == 7
    assert reasons[0] == "max_train_epochs 8 -> 7: the epoch the grid's scores suggest was 5, plus 2 to spare (a shorter run)"
    scores_file(old).write_text("{ not json")
    damaged = next(r for r in compare.project_runs(project) if r.output_name == "hero")
    assert damaged.scores is None and any("damaged epoch scores" in p for p in damaged.problems)


def test_dataset_changes_since_a_run(project, write_lora, two_runs):
    make_character_dataset(project.img, name="p", count=3, size=32, repeats=1, seed=0)
    hero = next(r for r in compare.project_runs(project) if r.output_name == "hero")
    assert compare.dataset_changes_since(hero) == ([], compare.NO_RECORD)
    hero.state_dir.mkdir()
    (hero.state_dir / DATASET_FILE).write_text(json.dumps(dataset_record(project.img, ".txt")))
    assert compare.dataset_changes_since(hero) == ([], "")
    images = sorted((project.img / "1_p").glob("*.png"))
    images[0].unlink()
    images[1].with_suffix(".txt").write_text("a new caption")
    changes, note = compare.dataset_changes_since(hero)
    assert note == "" and changes == [f"removed: 1_p/{images[0].name}", f"changed caption: 1_p/{images[1].name}"]
