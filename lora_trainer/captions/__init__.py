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
"""

from .autotag import TagFolderResult, tag_folder
from .edit import EditResult, UndoResult, edit_captions, last_edit, set_caption, undo
from .files import caption_path, list_images, read_caption, select_images
from .models import DEFAULT_MODEL, DEMO_MODEL, KNOWN_MODELS, ModelFiles, ModelNotFoundError, resolve_model
from .order import TagGroups, order_tags
from .preprocess import load_image, prepare_image
from .tagger import Prediction, Tagger, TagSettings, select_tags
from .tagops import add_tags, dedupe, near_duplicates, put_first, remove_tags, replace_tag, tag_frequency
from .tagtext import caption_to_prompt, escape_prompt, split_caption, tag_key, tag_to_text

__all__ = [
    "DEFAULT_MODEL", "DEMO_MODEL", "KNOWN_MODELS", "EditResult", "ModelFiles", "ModelNotFoundError", "Prediction",
    "TagFolderResult", "TagGroups", "TagSettings", "Tagger", "UndoResult", "add_tags", "caption_path",
    "caption_to_prompt", "dedupe", "edit_captions", "escape_prompt", "last_edit", "list_images",
    "load_image", "near_duplicates", "order_tags", "prepare_image", "put_first", "read_caption",
    "remove_tags", "replace_tag", "resolve_model", "select_images", "select_tags", "set_caption",
    "split_caption", "tag_folder", "tag_frequency", "tag_key", "tag_to_text", "undo",
]
