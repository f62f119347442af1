"""A labelled grid image from rendered cells, saved with its parameters.

The grid reads top to bottom: one block per seed (a caption "seed N"), each with the column headers
("epoch 3" / "step 24", "no LoRA" for the baseline) above and the row labels (the prompts, or
"weight 0.8") on the left. Cells keep their native size. A cell that failed shows its message on dark
red; a cell not rendered (a stopped grid) is grey. `save_grid` writes the grid and every rendered cell
as PNGs with the WebUI's infotext in their text chunks (so a cell dropped into PNG Info gives its exact
prompt, LoRA tag and seed) and the whole spec as JSON (`load_grid_spec` reads it back). No torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from lora_trainer.fsutil import atomic_path
from lora_trainer.review.spec import Column, GridSpec, LoraRef, RenderJob, RenderSettings, Row

PARAMETERS_CHUNK = "parameters"  # the WebUI's PNG Info reads this text chunk
SPEC_CHUNK = "lora_trainer_grid"
SPEC_VERSION = 1
NOT_RENDERED = "not rendered"

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
CAPTION_BACKGROUND = (230, 230, 230)
ERROR_BACKGROUND = (110, 0, 0)
ERROR_TEXT = (255, 255, 255)
MISSING_BACKGROUND = (128, 128, 128)
MISSING_TEXT = (235, 235, 235)
GAP = 2  # pixels between cells and around the blocks


# --- infotext ------------------------------------------------------------------------------------

def _quote(value: str) -> str:
    """A value as the WebUI writes it into infotext: quoted (JSON) when it holds ',', ':' or a newline."""
    if "," not in value and "\n" not in value and ":" not in value:
        return value
    return json.dumps(value, ensure_ascii=False)


def model_name(checkpoint: str) -> str:
    """The "Model" a WebUI writes for a checkpoint: its file name without extension or " [hash]"."""
    name = re.sub(r"\s*\[[0-9a-fA-F]+\]$", "", checkpoint.strip())
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return re.sub(r"\.(safetensors|ckpt|pt|bin|gguf)$", "", name, flags=re.IGNORECASE)


def infotext(job: RenderJob) -> str:
    """The WebUI's (Forge's) generation parameters text for one image: the prompt with its LoRA tag, the
    negative prompt line (left out when empty, as the WebUI does), then "Steps: ..., Seed: ..."."""
    s = job.settings
    fields = [("Steps", str(s.steps)), ("Sampler", s.sampler), ("Schedule type", s.scheduler),
              ("CFG scale", f"{s.cfg_scale:g}"), ("Seed", str(job.seed)), ("Size", f"{s.width}x{s.height}")]
    if s.checkpoint:
        fields.append(("Model", model_name(s.checkpoint)))
    if s.adetailer_model:  # the field ADetailer writes, and reads back when pasted into txt2img
        fields.append(("ADetailer model", s.adetailer_model))
    lines = [job.webui_prompt]
    if s.negative_prompt:
        lines.append(f"Negative prompt: {s.negative_prompt}")
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in fields))
    return "\n".join(lines)


# --- the spec as JSON ----------------------------------------------------------------------------

def spec_to_json(spec: GridSpec) -> dict:
    def column(c: Column) -> dict:
        lora = None if c.lora is None else {"path": str(c.lora.path), "name": c.lora.name,
                                            "weight": c.lora.weight}
        return {"label": c.label, "lora": lora, "epoch": c.epoch, "step": c.step}

    return {"version": SPEC_VERSION,
            "columns": [column(c) for c in spec.columns],
            "rows": [{"label": r.label, "prompt": r.prompt, "weight": r.weight} for r in spec.rows],
            "seeds": list(spec.seeds),
            "settings": asdict(spec.settings)}


def spec_from_json(data: dict) -> GridSpec:
    """The GridSpec `spec_to_json` wrote; ValueError naming what is wrong otherwise."""
    try:
        if data.get("version") != SPEC_VERSION:
            raise ValueError(f"unknown grid spec version {data.get('version')!r}")
        columns = [Column(label=str(c["label"]),
                          lora=None if c["lora"] is None else LoraRef(Path(c["lora"]["path"]),
                                                                      str(c["lora"]["name"]),
                                                                      float(c["lora"]["weight"])),
                          epoch=int(c["epoch"]), step=int(c["step"])) for c in data["columns"]]
        rows = [Row(label=str(r["label"]), prompt=str(r["prompt"]), weight=float(r["weight"]))
                for r in data["rows"]]
        seeds = [int(s) for s in data["seeds"]]
        settings = RenderSettings(**data["settings"])
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"not a grid spec: {e!r}") from e
    return GridSpec(columns, rows, seeds, settings)


def load_grid_spec(png_path: str | Path) -> GridSpec:
    """The spec a grid saved by `save_grid` was made with (to reopen it or render it again)."""
    with Image.open(png_path) as image:
        image.load()
        text = dict(getattr(image, "text", {}) or image.info)
    if SPEC_CHUNK not in text:
        raise ValueError(f"{png_path} holds no review grid parameters (no {SPEC_CHUNK!r} text chunk)")
    try:
        return spec_from_json(json.loads(text[SPEC_CHUNK]))
    except ValueError as e:
        raise ValueError(f"{png_path}: damaged review grid parameters: {e}") from e


# --- drawing -------------------------------------------------------------------------------------

def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default()  # Pillow 9.5: a fixed small bitmap font


def _line_height(font) -> int:
    left, top, right, bottom = font.getbbox("Hgjy|")
    return bottom + 3


def text_width(font, text: str) -> float:
    left, top, right, bottom = font.getbbox(text) if text else (0, 0, 0, 0)
    return right


def wrap(text: str, font, width: int, max_lines: int | None = None) -> list[str]:
    """`text` broken into lines no wider than `width` pixels (words longer than a line are cut);
    with `max_lines`, the last kept line ends in '…' when some were left out."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if text_width(font, candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            while text_width(font, word) > width and len(word) > 1:
                cut = len(word) - 1
                while cut > 1 and text_width(font, word[:cut]) > width:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and text_width(font, last + "…") > width:
            last = last[:-1]
        lines[-1] = last + "…"
    return lines


def column_header(column: Column) -> list[str]:
    """A column's header lines: its label ("epoch 3", "no LoRA") and, for an epoch, "step N"."""
    label = column.label or ("no LoRA" if column.lora is None else column.lora.name)
    split = re.fullmatch(r"(.+?)\s*\((step \d+)\)", label)
    if split:  # "epoch 3 (step 24)": on two lines
        return [split[1], split[2]]
    lines = [label]
    if column.lora is not None and column.step and "step" not in label:
        lines.append(f"step {column.step}")
    return lines


@dataclass(frozen=True)
class GridLayout:
    """Where everything goes: the grid is `width` x `height`; a block per seed, one below the other."""

    cell_width: int
    cell_height: int
    label_width: int  # the row labels' column on the left
    header_height: int  # the column headers above each block's cells
    caption_height: int  # the "seed N" line above each block
    columns: int
    rows: int
    seeds: int
    line_height: int

    @property
    def block_height(self) -> int:
        return self.caption_height + self.header_height + self.rows * (self.cell_height + GAP)

    @property
    def width(self) -> int:
        return GAP + self.label_width + GAP + self.columns * (self.cell_width + GAP)

    @property
    def height(self) -> int:
        return GAP + self.seeds * (self.block_height + GAP)

    def block_top(self, s: int) -> int:
        return GAP + s * (self.block_height + GAP)

    def cell_box(self, s: int, r: int, c: int) -> tuple[int, int, int, int]:
        left = GAP + self.label_width + GAP + c * (self.cell_width + GAP)
        top = self.block_top(s) + self.caption_height + self.header_height + r * (self.cell_height + GAP)
        return left, top, left + self.cell_width, top + self.cell_height

    def header_box(self, s: int, c: int) -> tuple[int, int, int, int]:
        left, top, right, _ = self.cell_box(s, 0, c)
        return left, top - self.header_height, right, top - GAP

    def row_label_box(self, s: int, r: int) -> tuple[int, int, int, int]:
        _, top, _, bottom = self.cell_box(s, r, 0)
        return GAP, top, GAP + self.label_width, bottom

    def caption_box(self, s: int) -> tuple[int, int, int, int]:
        top = self.block_top(s)
        return 0, top, self.width, top + self.caption_height - GAP


def _cell_size(spec: GridSpec, cells: dict) -> tuple[int, int]:
    images = [v for v in cells.values() if isinstance(v, Image.Image)]
    if not images:
        return spec.settings.width, spec.settings.height
    return max(i.width for i in images), max(i.height for i in images)


def grid_layout(spec: GridSpec, cells: dict, font=None) -> tuple[GridLayout, object]:
    """The layout of `spec`'s grid for these cells, and the font its labels are drawn with."""
    cell_w, cell_h = _cell_size(spec, cells)
    if font is None:
        font = label_font(max(12, min(40, cell_w // 28)))
    line = _line_height(font)
    pad = max(2, line // 4)
    label_w = max(120, min(cell_w, 480))
    header_lines = max(len(wrap("\n".join(column_header(c)), font, cell_w - 2 * pad, 4)) for c in spec.columns)
    layout = GridLayout(cell_width=cell_w, cell_height=cell_h, label_width=label_w,
                        header_height=header_lines * line + 2 * pad + GAP, caption_height=line + 2 * pad + GAP,
                        columns=len(spec.columns), rows=len(spec.rows), seeds=len(spec.seeds),
                        line_height=line)
    return layout, font


def _draw_lines(draw: ImageDraw.ImageDraw, box, lines: list[str], font, fill, line_h: int,
                center: bool = True) -> None:
    left, top, right, bottom = box
    y = top + max(0, (bottom - top - len(lines) * line_h) // 2)
    for text in lines:
        if y + line_h > bottom + line_h // 2:
            break
        x = left + 4 if not center else left + max(0, int((right - left - text_width(font, text)) // 2))
        draw.text((x, y), text, font=font, fill=fill)
        y += line_h


def compose_grid(spec: GridSpec, cells: dict[tuple[int, int, int], Image.Image | str]) -> Image.Image:
    """The grid image: for each (seed index, row, column) of `spec.cells()` the rendered image, an
    error message (drawn on dark red), or nothing (grey, "not rendered")."""
    layout, font = grid_layout(spec, cells)
    line = layout.line_height
    grid = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    text_w = layout.cell_width - 8
    max_cell_lines = max(1, (layout.cell_height - 8) // line)
    for s, seed in enumerate(spec.seeds):
        caption = layout.caption_box(s)
        draw.rectangle(caption, fill=CAPTION_BACKGROUND)
        _draw_lines(draw, caption, [f"seed {seed}"], font, TEXT, line, center=False)
        for c, column in enumerate(spec.columns):
            lines = wrap("\n".join(column_header(column)), font, text_w, 4)
            _draw_lines(draw, layout.header_box(s, c), lines, font, TEXT, line)
        for r, row in enumerate(spec.rows):
            box = layout.row_label_box(s, r)
            lines = wrap(row.label, font, layout.label_width - 8, max(1, (box[3] - box[1]) // line))
            _draw_lines(draw, box, lines, font, TEXT, line, center=False)
    for s, r, c, _job in spec.cells():
        box = layout.cell_box(s, r, c)
        value = cells.get((s, r, c))
        if isinstance(value, Image.Image):
            image = value if value.mode == "RGB" else value.convert("RGB")
            x = box[0] + (layout.cell_width - image.width) // 2
            y = box[1] + (layout.cell_height - image.height) // 2
            grid.paste(image, (x, y))
        elif isinstance(value, str):
            draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=ERROR_BACKGROUND)
            _draw_lines(draw, box, wrap(value or "failed", font, text_w, max_cell_lines), font, ERROR_TEXT, line)
        else:
            draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=MISSING_BACKGROUND)
            _draw_lines(draw, box, wrap(NOT_RENDERED, font, text_w, max_cell_lines), font, MISSING_TEXT, line)
    return grid


# --- saving --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GridFiles:
    grid: Path  # <folder>/<name>.png
    cells_dir: Path  # <folder>/<name>/
    cells: dict[tuple[int, int, int], Path]  # the rendered cells: s<seed index>_r<row>_c<column>.png


def cell_file_name(s: int, r: int, c: int) -> str:
    return f"s{s}_r{r}_c{c}.png"


def save_png_with_text(image: Image.Image, target: Path, text: dict[str, str]) -> None:
    """`image` as a PNG with these text chunks (iTXt for non-ASCII), written atomically."""
    info = PngInfo()
    for key, value in text.items():
        if value.isascii():
            info.add_text(key, value)
        else:
            info.add_itxt(key, value)
    with atomic_path(target) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)


def save_grid(spec: GridSpec, cells: dict[tuple[int, int, int], Image.Image | str], folder: str | Path,
              name: str, extra_text: dict[str, str] | None = None) -> GridFiles:
    """Write the grid as `<folder>/<name>.png` (the first cell's infotext as its "parameters", like
    the WebUI's own X/Y plot, and the spec as JSON) and every rendered cell as
    `<folder>/<name>/s<seed index>_r<row>_c<column>.png` with its own infotext. `extra_text`: more text
    chunks for the grid PNG (its epoch scores). Each file is written atomically (never half a PNG)."""
    folder = Path(folder)
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"not a file name for a grid: {name!r}")
    jobs = {(s, r, c): job for s, r, c, job in spec.cells()}
    cells_dir = folder / name
    written: dict[tuple[int, int, int], Path] = {}
    for key, job in jobs.items():
        value = cells.get(key)
        if isinstance(value, Image.Image):
            path = cells_dir / cell_file_name(*key)
            save_png_with_text(value if value.mode in ("RGB", "RGBA", "L") else value.convert("RGB"), path,
                      {PARAMETERS_CHUNK: infotext(job)})
            written[key] = path
    grid_path = folder / f"{name}.png"
    first = jobs[(0, 0, 0)]
    save_png_with_text(compose_grid(spec, cells), grid_path,
              {PARAMETERS_CHUNK: infotext(first), SPEC_CHUNK: json.dumps(spec_to_json(spec), ensure_ascii=False),
               **(extra_text or {})})
    return GridFiles(grid=grid_path, cells_dir=cells_dir, cells=written)
