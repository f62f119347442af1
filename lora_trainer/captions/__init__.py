"""Captions: WD14 auto-tagging and the guide's caption editing ("Create the tags").

    models      where a tagger's model.onnx + selected_tags.csv come from (folder or hub cache)
    preprocess  an image as the taggers expect it
    tagger      the onnxruntime tagger and threshold/category selection
    autotag     tag a dataset folder into caption files
    files       caption files beside images
    tagtext     one tag's text: underscores, kaomoji, prompt escaping, caption split/join
    tagops      pure edits of one caption's tags (dedupe, replace, add, remove, trigger, frequency)
    order       the guide's order: subject, switch on/off, negative, pose, hands, camera
    edit        batch edits over a folder with undo
    cli         `python -m lora_trainer tag ...` and `... tags ...`

Names are imported on first use (`from lora_trainer.captions import Tagger` works as usual): the
command line builds its parser from `cli` without numpy, Pillow or onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the submodule that defines it
_EXPORTS = {
    "TagFolderResult": "autotag", "tag_folder": "autotag", "EditResult": "edit", "UndoResult": "edit",
    "edit_captions": "edit", "last_edit": "edit", "set_caption": "edit", "undo": "edit",
    "caption_path": "files", "list_images": "files", "read_caption": "files", "select_images": "files",
    "DEFAULT_MODEL": "models", "DEMO_MODEL": "models", "KNOWN_MODELS": "models", "ModelFiles": "models",
    "ModelNotFoundError": "models", "resolve_model": "models", "TagGroups": "order", "order_tags": "order",
    "load_image": "preprocess", "prepare_image": "preprocess", "Prediction": "tagger", "Tagger": "tagger",
    "TagSettings": "tagger", "select_tags": "tagger", "add_tags": "tagops", "dedupe": "tagops",
    "near_duplicates": "tagops", "put_first": "tagops", "remove_tags": "tagops", "replace_tag": "tagops",
    "tag_frequency": "tagops", "caption_to_prompt": "tagtext", "escape_prompt": "tagtext",
    "split_caption": "tagtext", "tag_key": "tagtext", "tag_to_text": "tagtext",
}
__all__ = [
    "DEFAULT_MODEL", "DEMO_MODEL", "KNOWN_MODELS", "EditResult", "ModelFiles", "ModelNotFoundError", "Prediction",
    "TagFolderResult", "TagGroups", "TagSettings", "Tagger", "UndoResult", "add_tags", "caption_path",
    "caption_to_prompt", "dedupe", "edit_captions", "escape_prompt", "last_edit", "list_images",
    "load_image", "near_duplicates", "order_tags", "prepare_image", "put_first", "read_caption",
    "remove_tags", "replace_tag", "resolve_model", "select_images", "select_tags", "set_caption",
    "split_caption", "tag_folder", "tag_frequency", "tag_key", "tag_to_text", "undo",
]

if TYPE_CHECKING:
    from .autotag import TagFolderResult, tag_folder
    from .edit import EditResult, UndoResult, edit_captions, last_edit, set_caption, undo
    from .files import caption_path, list_images, read_caption, select_images
    from .models import DEFAULT_MODEL, DEMO_MODEL, KNOWN_MODELS, ModelFiles, ModelNotFoundError, resolve_model
    from .order import TagGroups, order_tags
    from .preprocess import load_image, prepare_image
    from .tagger import Prediction, Tagger, TagSettings, select_tags
    from .tagops import add_tags, dedupe, near_duplicates, put_first, remove_tags, replace_tag, tag_frequency
    from .tagtext import caption_to_prompt, escape_prompt, split_caption, tag_key, tag_to_text


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
