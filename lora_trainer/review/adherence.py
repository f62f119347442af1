"""Prompt adherence and leakage of a rendered image, read by the WD14 tagger the Captions panel uses.

Adherence: the share of the prompt's tags (those the tagger knows: not the trigger word, not free
text) the tagger finds in the image. Leakage: tags common in the training captions (a background, a
dress: at least `LEAK_MIN_SHARE` of them) that the tagger finds although the prompt did not ask for
them: a LoRA that paints its training photos' background into every prompt is over-trained. Tags that
only say who is in the picture ("1girl", "solo") describe the character, not the photos, and never
count as leakage. No torch, no gradio.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lora_trainer.captions.tagger import CHARACTER, GENERAL, Labels, Tagger, TagSettings
from lora_trainer.captions.tagtext import tag_key, tag_to_text

LEAK_MIN_SHARE = 0.25  # a training tag in at least this share of the captions can leak
SUBJECT_TAGS = frozenset({
    "1girl", "1boy", "1other", "2girls", "2boys", "multiple girls", "multiple boys", "solo", "solo focus",
    "male focus", "female focus", "realistic", "photorealistic", "looking at viewer",
})

_EXTRA_NETWORK = re.compile(r"<[^<>]*>")  # <lora:name:0.8>, <hypernet:...>
_WEIGHT = re.compile(r":\s*-?\d+(?:\.\d+)?\s*(?=\))")  # (tag:1.2) -> (tag)
_BRACKET = re.compile(r"(?<!\\)[()\[\]{}]")  # attention brackets; escaped ones belong to the tag
_SEPARATOR = re.compile(r",|\bBREAK\b|\n")


def prompt_tags(prompt: str) -> list[str]:
    """The tags of a WebUI prompt, compared like caption tags (`tag_key`), in order, once each:
    extra-network tags, attention brackets and weights dropped."""
    text = _BRACKET.sub("", _WEIGHT.sub("", _EXTRA_NETWORK.sub(",", prompt)))
    out: list[str] = []
    for part in _SEPARATOR.split(text):
        key = tag_key(part)
        if key and key not in out:
            out.append(key)
    return out


def training_tags(captions: Iterable[list[str]], min_share: float = LEAK_MIN_SHARE) -> dict[str, float]:
    """The tags in at least `min_share` of the captions, with their share."""
    captions = [{tag_key(t) for t in tags} for tags in captions]
    if not captions:
        return {}
    counts = Counter(tag for tags in captions for tag in tags)
    return {tag: n / len(captions) for tag, n in counts.items() if n / len(captions) >= min_share}


@dataclass(frozen=True)
class TagCheck:
    prompted: tuple[str, ...]  # the prompt's tags the tagger knows
    found: tuple[str, ...]  # ... and finds in the image
    unseen: tuple[str, ...]  # the prompt's tags the tagger cannot see (the trigger word, free text)
    leaked: tuple[str, ...]  # common training tags found without being prompted

    @property
    def adherence(self) -> float | None:
        return len(self.found) / len(self.prompted) if self.prompted else None


def check_tags(found: set[str], prompt: str, known: set[str], training: dict[str, float]) -> TagCheck:
    """What the tagger found (`found`, tag keys) measured against `prompt` and the training tags."""
    tags = prompt_tags(prompt)
    prompted = tuple(t for t in tags if t in known)
    leaked = tuple(sorted(t for t in found if t in training and t not in tags and t not in SUBJECT_TAGS))
    return TagCheck(prompted, tuple(t for t in prompted if t in found),
                    tuple(t for t in tags if t not in known), leaked)


class TagReader:
    """The tags a WD14 tagger finds in an image, as tag keys (its general and character tags, each
    over the Captions panel's default threshold for its kind)."""

    def __init__(self, tagger: Tagger, settings: TagSettings | None = None):
        self.tagger = tagger
        settings = settings or TagSettings()
        labels: Labels = tagger.labels
        kept = [i for i, c in enumerate(labels.categories) if c in (GENERAL, CHARACTER)]
        self._index = np.array(kept, dtype=np.int64)
        self._keys = [tag_key(tag_to_text(labels.names[i])) for i in kept]
        self._thresholds = np.array([settings.character_threshold if labels.categories[i] == CHARACTER
                                     else settings.general_threshold for i in kept], np.float32)
        self.known = set(self._keys)

    def read(self, images: list[Image.Image]) -> list[set[str]]:
        scores = self.tagger.predict(images)[:, self._index] if images else np.zeros((0, len(self._keys)))
        return [{self._keys[i] for i in np.flatnonzero(row > self._thresholds)} for row in scores]
