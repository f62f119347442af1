"""How many CLIP tokens a caption takes, as the trainer counts them (SDXL's first tokenizer, no
start/end tokens), so an editor can mark a caption over the run's `max_token_length` (75, 150 or 225:
the trainer cuts what is beyond). The tokenizer comes from the SDXL config folder (`tokenizer/`) that
single-file checkpoints load with; no torch."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from lora_trainer.imports import HEAVY_IMPORTS

TOKENIZER_SUBDIR = "tokenizer"


class TokenizerMissing(FileNotFoundError):
    """No tokenizer files where they were looked for (the message says where)."""


def tokenizer_folder(config_dir: str | os.PathLike | None) -> Path:
    """`<config_dir>/tokenizer`, checked; TokenizerMissing says what is missing."""
    if not config_dir:
        raise TokenizerMissing("token counts need the SDXL config folder (Forge has it; standalone: "
                               "--model-config-dir)")
    folder = Path(config_dir) / TOKENIZER_SUBDIR
    if not (folder / "vocab.json").is_file() or not (folder / "merges.txt").is_file():
        raise TokenizerMissing(f"no CLIP tokenizer in {folder} (vocab.json and merges.txt)")
    return folder


@functools.lru_cache(maxsize=2)
def _tokenizer(folder: str):
    with HEAVY_IMPORTS:
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(folder)


def caption_tokens(text: str, config_dir: str | os.PathLike | None) -> int:
    """The caption's token count (TokenizerMissing without a tokenizer)."""
    tokenizer = _tokenizer(str(tokenizer_folder(config_dir)))
    return len(tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids)
