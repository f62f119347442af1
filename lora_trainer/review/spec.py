"""What a review grid is: columns (a run's LoRA epochs, plus a no-LoRA baseline), rows (prompts, or
LoRA weights for one prompt), seeds, and the txt2img settings every cell shares. A cell is one
`RenderJob`, the call a host's `render` takes. Plain data, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True)
class RenderSettings:
    """txt2img settings shared by every cell (a WebUI's defaults unless changed)."""

    negative_prompt: str = ""
    steps: int = 20
    cfg_scale: float = 5.0
    sampler: str = "Euler"
    scheduler: str = "Automatic"
    width: int = 1024
    height: int = 1024
    checkpoint: str = ""  # the base model (a path, or the host's checkpoint title); "" = the host's current
    adetailer_model: str = ""  # ADetailer's detection model, where the host has ADetailer; "" = off

    def __post_init__(self):
        if self.steps < 1 or self.cfg_scale <= 0 or self.width < 8 or self.height < 8:
            raise ValueError(f"render settings out of range: steps {self.steps}, cfg {self.cfg_scale}, "
                             f"size {self.width}x{self.height}")


@dataclass(frozen=True)
class RenderOptions:
    """What a host's renderer offers: its samplers and schedule types, and the settings its txt2img
    starts with (`webui_size`: its size too; else the Review starts at the run's training size)."""

    samplers: tuple[str, ...]
    schedulers: tuple[str, ...]
    defaults: RenderSettings = field(default_factory=RenderSettings)
    webui_size: bool = False


@dataclass(frozen=True)
class LoraRef:
    """A saved LoRA file and the name the host lists it under (`<lora:NAME:WEIGHT>` in a prompt)."""

    path: Path
    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class RenderJob:
    """One image: a prompt (without any `<lora:...>` tag: the host adds the LoRA) and a seed."""

    prompt: str
    seed: int
    settings: RenderSettings
    lora: LoraRef | None = None  # None: the baseline, the base model alone

    @property
    def webui_prompt(self) -> str:
        """The prompt as typed into a WebUI's txt2img, the LoRA as its tag."""
        if self.lora is None:
            return self.prompt
        return f"{self.prompt} <lora:{self.lora.name}:{self.lora.weight:g}>"


@dataclass(frozen=True)
class Column:
    label: str  # "epoch 3 (step 24)" or "no LoRA"
    lora: LoraRef | None  # None: the baseline column
    epoch: int = 0
    step: int = 0


@dataclass(frozen=True)
class Row:
    label: str  # the prompt, shortened, or "weight 0.8"
    prompt: str
    weight: float = 1.0  # multiplies the column's LoRA weight


@dataclass(frozen=True)
class GridSpec:
    columns: list[Column]
    rows: list[Row]
    seeds: list[int]
    settings: RenderSettings = field(default_factory=RenderSettings)

    def __post_init__(self):
        if not self.columns or not self.rows or not self.seeds:
            raise ValueError("a grid needs at least one column, one row and one seed")

    def cells(self) -> list[tuple[int, int, int, RenderJob]]:
        """(seed index, row, column, job) for every cell, seed by seed, row by row."""
        out = []
        for s, seed in enumerate(self.seeds):
            for r, row in enumerate(self.rows):
                for c, column in enumerate(self.columns):
                    lora = None if column.lora is None else replace(column.lora,
                                                                    weight=column.lora.weight * row.weight)
                    out.append((s, r, c, RenderJob(row.prompt, seed, self.settings, lora)))
        return out


class RenderError(RuntimeError):
    """A cell could not be rendered (the host does not list the LoRA, the model failed, ...): the
    message says which and why; the grid shows it in that cell and goes on."""
