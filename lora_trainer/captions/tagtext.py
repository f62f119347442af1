"""The text of one tag and of one caption line.

A caption is one line of tags separated by ", ". Tags are compared by `tag_key`: case, surrounding
spaces, underscores vs spaces and prompt escapes (`\\(`) do not matter, so "Short_Hair" and "short hair"
are the same tag. Kaomoji ("^_^", ">_<") keep their underscores: there they are part of the face.

Caption files keep parentheses as they are: the trainer reads captions literally, so the tag the model
learns is "demo girl (tiny)". Only where a caption becomes a WebUI prompt (a grid, the UI's "send to
txt2img") must the parentheses be escaped, because the WebUI reads "(word)" as attention: `escape_prompt`.
"""

from __future__ import annotations

import re

# Kaomoji tags of the WD14 taggers' tag lists that contain underscores: those underscores stay.
KAOMOJI = frozenset({
    "0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o",
    "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||",
})

_ESCAPABLE = re.compile(r"([()\[\]])")
_ESCAPED = re.compile(r"\\([()\[\]])")
_SPACES = re.compile(r"\s+")


def tag_to_text(name: str, underscores_to_spaces: bool = True) -> str:
    """A tagger label as caption text: "short_hair" -> "short hair"; kaomoji stay as they are."""
    name = name.strip()
    if underscores_to_spaces and name not in KAOMOJI:
        name = name.replace("_", " ")
    return name


def tag_key(tag: str) -> str:
    """What makes two tags the same tag (see the module docstring)."""
    text = _ESCAPED.sub(r"\1", tag.strip().lower())
    if text not in KAOMOJI:
        text = text.replace("_", " ")
    return _SPACES.sub(" ", text).strip()


def escape_prompt(text: str) -> str:
    """Escape parentheses and brackets for a WebUI prompt: "demo girl (tiny)" -> "demo girl \\(tiny\\)".

    Already escaped characters stay escaped once."""
    return _ESCAPABLE.sub(r"\\\1", _ESCAPED.sub(r"\1", text))


def caption_to_prompt(tags: list[str]) -> str:
    """A caption as a WebUI prompt: tags joined by ", " with parentheses escaped."""
    return ", ".join(escape_prompt(t) for t in tags)


def split_caption(text: str) -> list[str]:
    """Tags of a caption text: split on commas (and line breaks), trimmed, empty ones dropped."""
    return [t for t in (_SPACES.sub(" ", part).strip() for part in re.split(r"[,\r\n]", text)) if t]


def join_caption(tags: list[str]) -> str:
    return ", ".join(t.strip() for t in tags if t.strip())
