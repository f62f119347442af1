"""A project's saved LoRA files, read back from its model folder, and the output names they take.

The names a run writes are `runs/layout.py`'s (one file per saved epoch, one when stopped, the final
copy); each file's metadata (`ss_output_name`, `ss_epoch`, `ss_steps`) says which.
A file without that metadata is judged by its name.

WebUIs know a LoRA by its file name and keep one they have loaded until they restart, so a new run
must not write files under an output name that already has some: `files_using_output_name` finds
them and `next_free_output_name` proposes `<name>_v2` (`_v3`, ...).
"""

from __future__ import annotations

import functools
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from lora_trainer.runs.layout import FINAL, LORA_SUFFIX, lora_stem_pattern, parse_lora_stem

_VERSION = re.compile(r"(?P<base>.+)_v(?P<number>\d+)")
_MAX_HEADER = 100_000_000


@dataclass(frozen=True)
class LoraFile:
    path: Path
    output_name: str
    kind: str  # "epoch", "stop" (saved when stopped) or "final" (<output_name>.safetensors)
    epoch: int  # epochs done when it was saved (0 when unknown)
    step: int  # steps done when it was saved (0 when unknown)
    modified: float


def project_lora_files(model_dir: Path) -> list[LoraFile]:
    """The LoRA files in `model_dir`, grouped by output name, the group with the newest file first;
    each group in the order the runs saved them (by step, the final copy last)."""
    groups: dict[str, list[LoraFile]] = {}
    for lora in map(read_lora_file, _lora_paths(model_dir)):
        groups.setdefault(lora.output_name, []).append(lora)
    newest_first = sorted(groups.values(), key=lambda g: max(f.modified for f in g), reverse=True)
    return [f for group in newest_first for f in sorted(group, key=_training_order)]


def lora_metadata(path: Path) -> dict[str, str]:
    """The file's `__metadata__` ({} when it has none or is not a safetensors file)."""
    stat = Path(path).stat()
    return dict(_metadata(str(path), stat.st_mtime_ns, stat.st_size))


def read_lora_file(path: Path) -> LoraFile:
    """What the file's metadata (or else its name) says about it."""
    stat = path.stat()
    metadata = _metadata(str(path), stat.st_mtime_ns, stat.st_size)
    output_name, kind, epoch, step = parse_lora_stem(path.stem, metadata.get("ss_output_name"))
    return LoraFile(path=path, output_name=output_name, kind=kind, epoch=_int(metadata.get("ss_epoch"), epoch),
                    step=_int(metadata.get("ss_steps"), step), modified=stat.st_mtime)


def files_using_output_name(model_dir: Path, output_name: str) -> list[Path]:
    """Files in `model_dir` with a name a run called `output_name` writes (case ignored: on Windows
    and macOS `Hero.safetensors` and `hero.safetensors` are the same file)."""
    pattern = lora_stem_pattern(output_name)
    return [p for p in _lora_paths(model_dir) if pattern.fullmatch(p.stem)]


def next_free_output_name(model_dir: Path, output_name: str) -> str:
    """`output_name` if no file uses it, else the first free `<base>_v2`, `_v3`, ... (`hero_v2` goes
    on with `hero_v3`)."""
    stems = [p.stem for p in _lora_paths(model_dir)]
    if not _uses(stems, output_name):
        return output_name
    match = _VERSION.fullmatch(output_name)
    base, number = (match["base"], int(match["number"]) + 1) if match else (output_name, 2)
    while _uses(stems, f"{base}_v{number}"):
        number += 1
    return f"{base}_v{number}"


def _uses(stems: list[str], output_name: str) -> bool:
    pattern = lora_stem_pattern(output_name)
    return any(pattern.fullmatch(stem) for stem in stems)


def _lora_paths(model_dir: Path) -> list[Path]:
    folder = Path(model_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == LORA_SUFFIX and p.is_file())


def _training_order(lora: LoraFile) -> tuple:
    return lora.kind == FINAL, lora.step, lora.path.name


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


@functools.lru_cache(maxsize=4096)
def _metadata(path: str, _mtime_ns: int, _size: int) -> dict[str, str]:
    """The `__metadata__` of a safetensors file (cached per file version: the UI lists them every
    second); {} for a file that is not readable as one."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > _MAX_HEADER:
                return {}
            metadata = json.loads(f.read(length)).get("__metadata__") or {}
    except (OSError, ValueError, struct.error, AttributeError):
        return {}
    return metadata if isinstance(metadata, dict) else {}
