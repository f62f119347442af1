"""Where a WD14 tagger's two files come from: a local folder, or the Hugging Face hub through
huggingface-hub's cache (inside Forge, Forge's cache).

A tagger is `model.onnx` + `selected_tags.csv`. `resolve_model` accepts
- a folder holding both files, or the path of the `.onnx` file with `selected_tags.csv` beside it;
- a hub repository id ("SmilingWolf/wd-vit-tagger-v3") or its short name ("wd-vit-tagger-v3");
- "tiny-demo": the tiny tagger shipped for the demo and the tests.
The cache is looked at first (no network); a download happens only when the files are not cached and
downloads are allowed. When neither works, `ModelNotFoundError` says which files are needed and where.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"

# SmilingWolf's WD14 taggers on the hub: short name -> repository id.
KNOWN_MODELS = {
    name: f"SmilingWolf/{name}"
    for name in (
        "wd-vit-tagger-v3",
        "wd-swinv2-tagger-v3",
        "wd-convnext-tagger-v3",
        "wd-eva02-large-tagger-v3",
        "wd-vit-large-tagger-v3",
        "wd-v1-4-moat-tagger-v2",
        "wd-v1-4-swinv2-tagger-v2",
        "wd-v1-4-convnext-tagger-v2",
        "wd-v1-4-convnextv2-tagger-v2",
        "wd-v1-4-vit-tagger-v2",
    )
}
DEFAULT_MODEL = "SmilingWolf/wd-vit-tagger-v3"
# The tiny tagger shipped for the demo and the tests (tags by mean colour; see tools/make_tiny_wd14_tagger.py).
DEMO_MODEL = "tiny-demo"
DEMO_MODEL_DIR = Path(__file__).resolve().parents[1] / "demo" / "assets" / "tiny-wd14-tagger"


class ModelNotFoundError(FileNotFoundError):
    """The tagger's files are neither on disk nor obtainable; the message tells the user what to do."""


@dataclass(frozen=True)
class ModelFiles:
    name: str  # what the user asked for: a repository id or a folder
    model_path: Path
    tags_path: Path


def resolve_model(spec: str | os.PathLike = DEFAULT_MODEL, *, cache_dir: str | os.PathLike | None = None,
                  local_files_only: bool = False) -> ModelFiles:
    """Find (or download) a tagger; see the module docstring. `cache_dir` None: huggingface-hub's default
    cache (HF_HOME / HF_HUB_CACHE). HF_HUB_OFFLINE=1 implies `local_files_only`."""
    text = str(spec)
    if text == DEMO_MODEL:
        return _local_model(DEMO_MODEL_DIR)
    path = Path(text).expanduser()
    if text in KNOWN_MODELS or not path.exists() and _looks_like_repo_id(text):
        return _hub_model(KNOWN_MODELS.get(text, text), cache_dir, local_files_only or _offline())
    return _local_model(path)


def _looks_like_repo_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and not text.endswith(".onnx")


def _local_model(path: Path) -> ModelFiles:
    folder, model = (path.parent, path) if path.suffix == ".onnx" else (path, path / MODEL_FILE)
    tags = folder / TAGS_FILE
    missing = [p for p in (model, tags) if not p.is_file()]
    if not folder.is_dir():
        raise ModelNotFoundError(
            f"WD14 tagger folder {folder} does not exist. A tagger is a folder with {MODEL_FILE} and "
            f"{TAGS_FILE}, or a hub repository id such as {DEFAULT_MODEL}.")
    if missing:
        raise ModelNotFoundError(
            f"WD14 tagger folder {folder} is missing {', '.join(p.name for p in missing)}. A tagger needs "
            f"{MODEL_FILE} and {TAGS_FILE} side by side in one folder (both files are in each of "
            f"SmilingWolf's repositories on huggingface.co, e.g. https://huggingface.co/{DEFAULT_MODEL}).")
    return ModelFiles(str(path), model, tags)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_model(repo_id: str, cache_dir, local_files_only: bool) -> ModelFiles:
    # Imported here: huggingface-hub reads HF_HOME / HF_HUB_OFFLINE when it is first imported.
    from huggingface_hub import constants, hf_hub_download

    files = {}
    for filename in (MODEL_FILE, TAGS_FILE):
        try:
            files[filename] = Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir, local_files_only=True))
            continue
        except Exception:  # not cached (or a broken cache entry): try the network if allowed
            pass
        if local_files_only:
            raise ModelNotFoundError(_missing_message(repo_id, cache_dir or constants.HF_HUB_CACHE,
                                                      "downloads are off (offline)")) from None
        try:
            files[filename] = Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir))
        except Exception as e:
            reason = f"the download failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            raise ModelNotFoundError(_missing_message(repo_id, cache_dir or constants.HF_HUB_CACHE,
                                                      reason)) from None
    return ModelFiles(repo_id, files[MODEL_FILE], files[TAGS_FILE])


def _missing_message(repo_id: str, cache, reason: str) -> str:
    return (
        f"WD14 tagger {repo_id!r} is not in the Hugging Face cache ({cache}) and {reason}. "
        f"It needs two files, {MODEL_FILE} and {TAGS_FILE}, from https://huggingface.co/{repo_id}/tree/main. "
        f"Either go online and run again (they are downloaded into the cache once), or download both files "
        f"into one folder and give that folder as the model (e.g. --model /path/to/{repo_id.split('/')[-1]}).")
