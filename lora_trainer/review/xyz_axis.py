"""A "LoRA epoch" axis for the WebUI's own X/Y/Z plot script, so the Review's comparison also works
from txt2img: each axis value is a LoRA name (one saved epoch, as published into the WebUI's LoRA
list), or `none` for the base model alone. Forge's `scripts/xyz_grid.py` has no LoRA axis; the Forge
glue adds this one to its `axis_options` before the UI is built. No WebUI imports here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lora_trainer.runs.layout import LORA_SUFFIX, parse_lora_stem

AXIS_LABEL = "LoRA epoch"
NO_LORA = "none"
_TAG = re.compile(r"\s*<lora:([^:>]+)(:[^>]*)?>")


def apply_lora_epoch(prompt: str, name: str, axis_values: list[str]) -> str:
    """`prompt` with the LoRA of this cell: a tag naming any of the axis's LoRAs is switched to `name`
    (its weight kept); a prompt without one gets `<lora:name:1>` appended; `none` removes the tag."""
    named = set(axis_values) - {NO_LORA}
    for match in _TAG.finditer(prompt):
        if match[1] in named:
            if name == NO_LORA:
                return (prompt[:match.start()] + prompt[match.end():]).strip()
            return prompt[:match.start(1)] + name + prompt[match.end(1):]
    return prompt if name == NO_LORA else f"{prompt} <lora:{name}:1>".strip()


def lora_epoch_choices(lora_root: str | os.PathLike, subfolder: str = "lora_trainer") -> list[str]:
    """The LoRA names this extension published (`<lora_root>/lora_trainer/<project>/`), each project's
    by run and epoch, then `none`."""
    folder = Path(lora_root) / subfolder
    if not folder.is_dir():
        return [NO_LORA]
    stems = [p.stem for p in folder.rglob(f"*{LORA_SUFFIX}") if p.is_file()]
    return sorted(stems, key=_training_order) + [NO_LORA]


def missing_names(values: list[str], listed) -> list[str]:
    """The axis values the WebUI does not list (it would render those cells without the LoRA)."""
    return [v for v in values if v != NO_LORA and v not in listed]


def _training_order(stem: str) -> tuple:
    name, kind, epoch, step = parse_lora_stem(stem)
    return name.lower(), kind == "final", epoch or step, stem
