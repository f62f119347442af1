"""review/grid.py: the labelled grid image, its PNG parameters, the cells, the spec round trip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from lora_trainer.review import grid as G
from lora_trainer.review.spec import Column, GridSpec, LoraRef, RenderJob, RenderSettings, Row


def parse_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """(prompt, negative prompt, {key: value}) of a WebUI infotext (our own tiny reader)."""
    lines = text.split("\n")
    params_line = lines[-1]
    negative = ""
    prompt_lines = lines[:-1]
    if prompt_lines and prompt_lines[-1].startswith("Negative prompt: "):
        negative = prompt_lines.pop()[len("Negative prompt: "):]
    fields: dict[str, str] = {}
    rest = params_line
    while rest:
        key, _, rest = rest.partition(": ")
        if rest.startswith('"'):
            end = 1
            while rest[end] != '"' or rest[end - 1] == "\\":
                end += 1
            value, rest = json.loads(rest[:end + 1]), rest[end + 1:]
        else:
            value, _, rest = rest.partition(",")
            rest = "," + rest if rest else ""
        fields[key] = value
        rest = rest[2:] if rest.startswith(", ") else ""
    return "\n".join(prompt_lines), negative, fields


def make_spec(seeds=(11, 22)) -> GridSpec:
    settings = RenderSettings(negative_prompt="blurry, lowres", steps=12, cfg_scale=4.5, sampler="DPM++ 2M",
                              scheduler="Karras", width=64, height=64,
                              checkpoint="/models/sd_xl_base_1.0.safetensors")
    columns = [Column("no LoRA", None),
               Column("epoch 3", LoraRef(Path("/out/hero-000003.safetensors"), "hero-000003"), epoch=3, step=24),
               Column("epoch 6", LoraRef(Path("/out/hero-000006.safetensors"), "hero-000006", 0.9),
                      epoch=6, step=48)]
    rows = [Row("a photo of hero in a garden, smiling", "a photo of hero in a garden, smiling"),
            Row("weight 0.5", "hero portrait", weight=0.5)]
    return GridSpec(columns, rows, list(seeds), settings)


def solid(color) -> Image.Image:
    return Image.new("RGB", (64, 64), color)


def all_cells(spec: GridSpec) -> dict:
    return {(s, r, c): solid((0, 40 * c, 200)) for s, r, c, _ in spec.cells()}


def blank(image: Image.Image, box, color=G.BACKGROUND) -> bool:
    region = image.crop(box)
    return all(px == color for px in region.getdata())


def test_infotext_in_the_webui_format():
    spec = make_spec()
    _, _, _, job = spec.cells()[1]  # seed 11, row 0, column "epoch 3"
    prompt, negative, fields = parse_infotext(G.infotext(job))
    assert prompt == "a photo of hero in a garden, smiling <lora:hero-000003:1>"
    assert negative == "blurry, lowres"
    assert fields == {"Steps": "12", "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": "4.5",
                      "Seed": "11", "Size": "64x64", "Model": "sd_xl_base_1.0"}
    assert G.infotext(job).split("\n")[-1].startswith("Steps: 12, Sampler: DPM++ 2M, Schedule type: Karras, ")


def test_infotext_without_negative_prompt_or_model_and_quoted_values():
    job = RenderJob("hero", 5, RenderSettings(sampler="Odd, name", width=832, height=1216),
                    LoraRef(Path("x.safetensors"), "x", 0.8))
    text = G.infotext(job)
    assert "Negative prompt" not in text
    prompt, negative, fields = parse_infotext(text)
    assert prompt == "hero <lora:x:0.8>" and negative == ""
    assert fields["Sampler"] == "Odd, name" and fields["Size"] == "832x1216" and "Model" not in fields
    assert fields["CFG scale"] == "5"


def test_model_name_from_a_checkpoint_title():
    assert G.model_name("sd_xl_base_1.0.safetensors [31e35c80fc]") == "sd_xl_base_1.0"
    assert G.model_name(r"C:\models\juggernaut.safetensors") == "juggernaut"


def test_grid_size_is_what_the_layout_implies():
    spec = make_spec()
    cells = all_cells(spec)
    image = G.compose_grid(spec, cells)
    layout, _ = G.grid_layout(spec, cells)
    assert (layout.cell_width, layout.cell_height) == (64, 64)
    width = G.GAP + layout.label_width + G.GAP + 3 * (64 + G.GAP)
    block = layout.caption_height + layout.header_height + 2 * (64 + G.GAP)
    assert image.size == (width, G.GAP + 2 * (block + G.GAP))
    # cells at native size, in their boxes
    for s, r, c, _ in spec.cells():
        box = layout.cell_box(s, r, c)
        assert image.getpixel((box[0] + 32, box[1] + 32)) == (0, 40 * c, 200)
        assert image.getpixel((box[0], box[1])) == (0, 40 * c, 200)
        assert image.getpixel((box[2] - 1, box[3] - 1)) == (0, 40 * c, 200)


def test_labels_are_drawn():
    spec = make_spec()
    image = G.compose_grid(spec, all_cells(spec))
    layout, _ = G.grid_layout(spec, all_cells(spec))
    for s in range(2):
        assert not blank(image, layout.caption_box(s), G.CAPTION_BACKGROUND)
        for c in range(3):
            assert not blank(image, layout.header_box(s, c))
        for r in range(2):
            assert not blank(image, layout.row_label_box(s, r))


def test_epoch_header_has_its_step():
    spec = make_spec()
    assert G.column_header(spec.columns[0]) == ["no LoRA"]
    assert G.column_header(spec.columns[1]) == ["epoch 3", "step 24"]
    assert G.column_header(Column("epoch 3 (step 24)", spec.columns[1].lora, 3, 24)) == ["epoch 3", "step 24"]
    assert G.column_header(Column("", None)) == ["no LoRA"]


def test_error_and_missing_cells_are_distinct():
    spec = make_spec()
    cells = all_cells(spec)
    cells[(0, 1, 2)] = "the host does not list LoRA hero-000006: copy it into models/Lora"
    del cells[(1, 0, 1)]
    image = G.compose_grid(spec, cells)
    layout, _ = G.grid_layout(spec, cells)
    error_box, missing_box, fine_box = layout.cell_box(0, 1, 2), layout.cell_box(1, 0, 1), layout.cell_box(0, 0, 2)

    def colors(box):
        return set(image.crop(box).getdata())

    assert G.ERROR_BACKGROUND in colors(error_box) and len(colors(error_box)) > 1  # red, with its message
    assert G.MISSING_BACKGROUND in colors(missing_box) and len(colors(missing_box)) > 1  # grey, with text
    assert colors(fine_box) == {(0, 80, 200)}
    assert G.ERROR_BACKGROUND not in colors(missing_box) and G.MISSING_BACKGROUND not in colors(error_box)


def test_nothing_rendered_uses_the_settings_size():
    spec = make_spec(seeds=(1,))
    image = G.compose_grid(spec, {})
    layout, _ = G.grid_layout(spec, {})
    assert image.size == (layout.width, layout.height) and layout.cell_width == 64


def test_wrap_keeps_within_width():
    font = G.label_font(12)
    lines = G.wrap("a " * 40 + "averyveryverylongwordthatdoesnotfitanywhere", font, 60)
    assert all(G.text_width(font, line) <= 60 for line in lines)
    assert G.wrap("one two three four five six seven", font, 30, max_lines=2)[-1].endswith("…")


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_save_grid_writes_grid_cells_and_parameters(tmp_path, umask_022):
    spec = make_spec()
    cells = all_cells(spec)
    cells[(1, 1, 1)] = "out of memory"
    files = G.save_grid(spec, cells, tmp_path / "review", "hero-grid")
    assert files.grid == tmp_path / "review" / "hero-grid.png"
    assert set(files.cells) == set(cells) - {(1, 1, 1)}
    with Image.open(files.grid) as grid:
        text = dict(grid.text)
        assert grid.size == G.compose_grid(spec, cells).size
    prompt, negative, fields = parse_infotext(text[G.PARAMETERS_CHUNK])
    assert prompt == "a photo of hero in a garden, smiling" and fields["Seed"] == "11"
    saved = json.loads(text[G.SPEC_CHUNK])
    assert saved["columns"][1] == {"label": "epoch 3", "lora": {"path": "/out/hero-000003.safetensors",
                                                               "name": "hero-000003", "weight": 1.0},
                                   "epoch": 3, "step": 24}
    assert saved["seeds"] == [11, 22] and saved["settings"]["sampler"] == "DPM++ 2M"
    jobs = {(s, r, c): job for s, r, c, job in spec.cells()}
    for key, path in files.cells.items():
        assert path == tmp_path / "review" / "hero-grid" / f"s{key[0]}_r{key[1]}_c{key[2]}.png"
        with Image.open(path) as cell:
            assert cell.size == (64, 64)
            assert cell.text[G.PARAMETERS_CHUNK] == G.infotext(jobs[key])
    prompt, _, fields = parse_infotext(Image.open(files.cells[(1, 1, 2)]).text["parameters"])
    assert prompt == "hero portrait <lora:hero-000006:0.45>" and fields["Seed"] == "22"
    for path in [files.grid, *files.cells.values()]:
        assert (path.stat().st_mode & 0o777) == 0o644
    assert not [p for p in (tmp_path / "review").rglob("*.tmp")]


def test_load_grid_spec_round_trips(tmp_path):
    spec = make_spec()
    files = G.save_grid(spec, all_cells(spec), tmp_path, "g")
    assert G.load_grid_spec(files.grid) == spec


def test_load_grid_spec_refuses_other_pngs(tmp_path):
    path = tmp_path / "plain.png"
    solid((1, 2, 3)).save(path)
    with pytest.raises(ValueError, match="plain.png"):
        G.load_grid_spec(path)


def test_save_grid_refuses_a_path_as_name(tmp_path):
    spec = make_spec()
    with pytest.raises(ValueError):
        G.save_grid(spec, {}, tmp_path, "../x")
