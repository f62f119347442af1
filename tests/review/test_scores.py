"""Epoch scores: prompt tags, adherence and leakage read by the (tiny) WD14 tagger on images whose tags
are known, the suggested epoch on synthetic score curves, and the files scores are kept in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from lora_trainer.captions import DEMO_MODEL, Tagger, resolve_model
from lora_trainer.review.adherence import TagReader, check_tags, prompt_tags, training_tags
from lora_trainer.review.scores import (
    SCORES_CHUNK,
    CellScore,
    ColumnScore,
    GridScores,
    column_scores,
    load_scores,
    scores_json_text,
    scores_table,
    suggest_epoch,
)
from lora_trainer.review.spec import Column, GridSpec, LoraRef, Row


@pytest.fixture(scope="module")
def reader() -> TagReader:
    return TagReader(Tagger(resolve_model(DEMO_MODEL)))


def plain(colour) -> Image.Image:
    return Image.new("RGB", (64, 64), colour)


def test_prompt_tags_leave_out_lora_tags_weights_and_brackets():
    prompt = "hero, (red shirt:1.3), [blue eyes], ((smile)), Upper_Body, <lora:hero-000004:0.8>, demo girl \\(tiny\\)"
    assert prompt_tags(prompt) == ["hero", "red shirt", "blue eyes", "smile", "upper body", "demo girl (tiny)"]
    assert prompt_tags("a, b BREAK c,, a\n d") == ["a", "b", "c", "d"]
    assert prompt_tags("") == []


def test_the_tagger_reads_known_tags_of_known_images(reader):
    red, magenta, white = reader.read([plain((255, 0, 0)), plain((255, 0, 255)), plain((255, 255, 255))])
    assert {"red shirt", "demo girl (tiny)", "1girl", "solo"} <= red and "blue eyes" not in red
    assert {"red shirt", "blue eyes"} <= magenta and "green hair" not in magenta
    assert "white background" in white and "white background" not in red
    assert "general" not in red  # ratings are no prompt tags


def test_adherence_is_the_share_of_prompted_tags_found(reader):
    prompt = "hero, red shirt, blue eyes, upper body"  # "hero", the trigger word, is no tagger tag
    red, magenta = reader.read([plain((255, 0, 0)), plain((255, 0, 255))])
    on_red = check_tags(red, prompt, reader.known, {})
    assert on_red.prompted == ("red shirt", "blue eyes", "upper body") and on_red.unseen == ("hero",)
    assert on_red.found == ("red shirt",) and on_red.adherence == pytest.approx(1 / 3)
    assert check_tags(magenta, prompt, reader.known, {}).adherence == pytest.approx(2 / 3)
    assert check_tags(red, "hero, a castle at dusk", reader.known, {}).adherence is None  # nothing it can see


def test_leakage_counts_common_training_tags_found_unprompted(reader):
    captions = [["hero", "white background", "1girl", "solo", "green hair"]] * 3 + [["hero", "red shirt", "1girl"]]
    common = training_tags(captions)
    assert common == {"hero": 1.0, "white background": 0.75, "1girl": 1.0, "solo": 0.75, "green hair": 0.75,
                      "red shirt": 0.25}
    assert training_tags(captions, min_share=0.5).keys() == {"hero", "white background", "1girl", "solo", "green hair"}
    white = reader.read([plain((255, 255, 255))])[0]  # white: the tiny tagger sees most colour tags in it
    check = check_tags(white, "hero, red shirt", reader.known, common)
    # "1girl"/"solo" say who is there (never leakage); red shirt was prompted
    assert check.leaked == ("green hair", "white background")
    # prompted, they are no leakage; red shirt (in a quarter of the captions: at the threshold) is
    assert check_tags(white, "hero, white background, green hair", reader.known, common).leaked == ("red shirt",)
    assert check_tags(white, "hero, white background, green hair", reader.known,
                      training_tags(captions, min_share=0.5)).leaked == ()


def column(epoch, likeness, adherence, baseline=False, leakage=0.0) -> ColumnScore:
    return ColumnScore(label="no LoRA" if baseline else f"epoch {epoch}", epoch=0 if baseline else epoch,
                       baseline=baseline, cells=4, no_face=0, likeness=likeness, adherence=adherence,
                       leakage=leakage)


def curve(likeness, adherence) -> list[ColumnScore]:
    return [column(e, li, ad) for e, (li, ad) in enumerate(zip(likeness, adherence), start=1)]


def test_the_pick_is_the_closest_face_before_adherence_falls():
    columns = curve([0.20, 0.35, 0.48, 0.55, 0.61, 0.64], [0.80, 0.82, 0.78, 0.75, 0.60, 0.50])
    epoch, reason = suggest_epoch(columns)
    assert epoch == 4  # 5 and 6 look closer but no longer follow the prompt
    assert reason.startswith("epoch 4: the closest face (likeness 0.55) among epochs 1-4")
    assert "prompt adherence fell after them (0.82 at epoch 2, 0.60 at epoch 5)" in reason


def test_when_adherence_holds_the_closest_face_wins():
    epoch, reason = suggest_epoch(curve([0.2, 0.5, 0.45, 0.3], [0.7, 0.72, 0.7, 0.69]))
    assert epoch == 2 and "held through the last epoch" in reason


def test_near_equal_likeness_keeps_the_earlier_epoch_and_the_baseline_is_named():
    columns = [column(0, 0.10, 0.9, baseline=True), *curve([0.5, 0.503, 0.2], [0.8, 0.8, 0.8])]
    epoch, reason = suggest_epoch(columns)
    assert epoch == 1 and reason.endswith("(no LoRA: likeness 0.10)")


def test_without_faces_adherence_alone_decides_and_without_anything_nothing_is_picked():
    epoch, reason = suggest_epoch(curve([None, None, None], [0.5, 0.7, 0.65]))
    assert epoch == 2 and "no face found" in reason and "adherence alone (0.70)" in reason
    assert suggest_epoch(curve([None, None], [None, None]))[0] is None
    assert suggest_epoch([column(0, 0.5, 0.5, baseline=True)]) == (None, "no epoch in the grid to score")


def test_without_a_tagger_all_epochs_are_eligible():
    epoch, reason = suggest_epoch(curve([0.2, 0.6, 0.4], [None, None, None]))
    assert epoch == 2 and "adherence" not in reason


def spec_of(epochs: list[int], baseline: bool = True, rows: int = 2) -> GridSpec:
    columns = [Column("no LoRA", None)] if baseline else []
    columns += [Column(f"epoch {e}", LoraRef(Path(f"/x/hero-{e:06d}.safetensors"), f"hero-{e:06d}"), epoch=e)
                for e in epochs]
    return GridSpec(columns, [Row(f"p{r}", f"hero, prompt {r}") for r in range(rows)], [1])


def test_column_means_count_cells_without_a_face():
    spec = spec_of([1, 2])
    cells = {(0, 0, 1): CellScore((0, 0, 1), 1, 0.5, 1.0, ("white background",)),
             (0, 1, 1): CellScore((0, 1, 1), 0, None, 0.5, ()),
             (0, 0, 2): CellScore((0, 0, 2), 2, 0.7, 0.0, ("a", "b"))}
    baseline_missing, one, two = None, *column_scores(spec, cells, {1: (0.12, "validation")})
    assert baseline_missing is None  # the baseline has no scored cell: no column
    assert (one.epoch, one.cells, one.no_face, one.likeness, one.adherence, one.leakage) == (1, 2, 1, 0.5, 0.75, 0.5)
    assert (one.loss, one.loss_kind) == (0.12, "validation")
    assert (two.cells, two.no_face, two.leakage, two.loss) == (1, 0, 2.0, None)
    assert column_scores(spec, cells, leakage_measured=False)[0].leakage is None


def test_scores_read_back_from_json_and_png(tmp_path):
    scores = GridScores([column(0, 0.1, 0.9, baseline=True), *curve([0.3, 0.6], [0.8, 0.4])],
                        [CellScore((0, 0, 1), 1, 0.3, 0.8, ("white background",), ("smile",))], 1, "because",
                        {"likeness": "yunet + sface"}, 5, 6)
    text = scores_json_text(scores)
    (tmp_path / "scores.json").write_text(text)
    assert load_scores(tmp_path / "scores.json") == scores
    from PIL.PngImagePlugin import PngInfo
    info = PngInfo()
    info.add_text(SCORES_CHUNK, text)
    Image.new("RGB", (8, 8)).save(tmp_path / "grid.png", pnginfo=info)
    assert load_scores(tmp_path / "grid.png") == scores
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    assert load_scores(tmp_path / "plain.png") is None
    assert load_scores(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text(json.dumps({"version": 1, "columns": [{"label": 1}]}))
    with pytest.raises(ValueError, match="bad.json: damaged epoch scores"):
        load_scores(tmp_path / "bad.json")
    table = scores_table(scores)
    assert "| **epoch 1** | 0.30 | 0/4 | 0.80 |" in table and "| no LoRA | 0.10 |" in table
    assert table.splitlines()[0].endswith("| loss |")  # no loss: no kind in the header
    mixed = GridScores([ColumnScore("epoch 1", 1, False, 1, 0, None, None, None, 0.5, "validation"),
                        ColumnScore("epoch 2", 2, False, 1, 0, None, None, None, 0.25, "training")], [], None, "")
    assert scores_table(mixed).splitlines()[2].endswith("| 0.5000 (validation) |")
