"""Operations on one caption's tag list. Pure functions: a list in, a new list out.

Tags are matched like `tagtext.tag_key` (case, underscores vs spaces and prompt escapes do not matter);
`remove_tags` also takes shell wildcards ("* background"). `edit.edit_captions` applies any of these to
a whole dataset (or a selection) with undo.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Iterable

from .tagtext import tag_key


def dedupe(tags: list[str], near: bool = False) -> list[str]:
    """Drop repeated tags, keeping the first. `near`: also drop tags whose words differ only by an
    English ending from an earlier tag ("smiling" after "smile", "looking at viewers" after
    "looking at viewer")."""
    seen: set[str] = set()
    out = []
    for tag in tags:
        key = near_key(tag) if near else tag_key(tag)
        if key not in seen:
            seen.add(key)
            out.append(tag)
    return out


def near_duplicates(tags: list[str]) -> list[tuple[str, str]]:
    """(kept, dropped) pairs that `dedupe(tags, near=True)` would produce, for showing the user."""
    first: dict[str, str] = {}
    pairs = []
    for tag in tags:
        key = near_key(tag)
        if key in first:
            pairs.append((first[key], tag))
        else:
            first[key] = tag
    return pairs


_ENDINGS = ("ing", "es", "ed", "s", "e")


def _stem(word: str) -> str:
    """A crude English stem: enough to tell that "smile", "smiles", "smiling", "smiled" belong together."""
    for ending in _ENDINGS:
        if word.endswith(ending) and len(word) - len(ending) >= 3:
            word = word[: -len(ending)]
            break
    if len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "aeiouls":  # "sitting" -> "sitt" -> "sit"
        word = word[:-1]
    return word


def near_key(tag: str) -> str:
    return " ".join(_stem(w) for w in re.split(r"[\s-]+", tag_key(tag)) if w)


def matches(tag: str, pattern: str) -> bool:
    """Whether a tag is `pattern` (as `tag_key`), or matches it when it holds * ? [ wildcards."""
    key, pat = tag_key(tag), tag_key(pattern)
    if any(c in pattern for c in "*?") and not pattern.startswith("\\"):
        return fnmatch.fnmatchcase(key, pat)
    return key == pat


def remove_tags(tags: list[str], patterns: Iterable[str]) -> list[str]:
    patterns = list(patterns)
    return [t for t in tags if not any(matches(t, p) for p in patterns)]


def add_tags(tags: list[str], new: Iterable[str], front: bool = False) -> list[str]:
    """Add tags not already present, at the end (or at the front, in the given order)."""
    present = {tag_key(t) for t in tags}
    added = []
    for tag in new:
        tag = tag.strip()
        if tag and tag_key(tag) not in present:
            present.add(tag_key(tag))
            added.append(tag)
    return added + list(tags) if front else list(tags) + added


def replace_tag(tags: list[str], old: str, new: str) -> list[str]:
    """Replace every `old` with `new` in place (an empty `new` removes it); no duplicate results."""
    out = [new.strip() if matches(t, old) else t for t in tags]
    return dedupe([t for t in out if t])


def put_first(tags: list[str], trigger: str) -> list[str]:
    """The trigger word first, exactly once (added when missing)."""
    trigger = trigger.strip()
    if not trigger:
        raise ValueError("the trigger word is empty")
    key = tag_key(trigger)
    return [trigger] + [t for t in tags if tag_key(t) != key]


def tag_frequency(captions: Iterable[list[str]]) -> list[tuple[str, int]]:
    """How many captions hold each tag, most frequent first (ties by name). A tag counts once per
    caption; it is shown as first written."""
    counts: Counter[str] = Counter()
    shown: dict[str, str] = {}
    for tags in captions:
        for key in {tag_key(t) for t in tags}:
            counts[key] += 1
        for tag in tags:
            shown.setdefault(tag_key(tag), tag)
    return sorted(((shown[k], n) for k, n in counts.items()), key=lambda item: (-item[1], tag_key(item[0])))
