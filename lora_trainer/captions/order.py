"""The guide's caption order:

    subject, switch on/off tags, negative tags, pose, position of hands, camera shot/view

The trigger word (the subject, e.g. "myLoRA") comes first, then the group lists below decide where a
tag goes; a tag in no list is a "switch on/off" tag (clothes, hair, accessories, expressions: what the
user turns on or off in a prompt). Inside a group the caption's own order is kept. The lists are
editable (`TagGroups.load` reads a JSON file with any of the five keys) and may hold shell wildcards.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields

from ..fsutil import write_json_atomic
from .tagops import matches, put_first

SUBJECT = ("1girl", "1boy", "1other", "solo", "woman", "man", "girl", "boy", "female", "male", "person")
NEGATIVE = (
    "simple background", "* background", "border", "* border", "letterboxed", "pillarboxed", "watermark",
    "signature", "text", "english text", "artist name", "dated", "web address", "twitter username",
    "blurry", "jpeg artifacts", "lowres", "monochrome", "greyscale", "sepia", "film grain", "censored",
)
POSE = (
    "standing", "sitting", "lying", "kneeling", "squatting", "walking", "running", "jumping", "dancing",
    "leaning forward", "leaning back", "leaning to the side", "bent over", "arched back", "all fours",
    "on back", "on stomach", "on side", "crossed legs", "crossed ankles", "legs together", "spread legs",
    "knees up", "seiza", "indian style", "contrapposto", "head tilt", "stretching", "fighting stance",
)
HANDS = (
    "hands up", "hand up", "arms up", "arm up", "arms behind back", "arms behind head", "arm behind head",
    "crossed arms", "arms at sides", "arm at side", "outstretched arm", "outstretched arms", "hand on hip",
    "hands on hips", "hand on own hip", "hand on own face", "hand on own chin", "hand on own chest",
    "hand on own head", "hand in own hair", "hand to own mouth", "finger to mouth", "hand in pocket",
    "hands in pockets", "own hands together", "hands together", "clenched hand", "clenched hands",
    "v", "peace sign", "thumbs up", "waving", "pointing", "pointing at viewer", "salute", "heart hands",
    "reaching", "reaching towards viewer", "holding", "holding *",
)
CAMERA = (
    "looking at viewer", "looking away", "looking to the side", "looking back", "looking up",
    "looking down", "looking at another", "eye contact", "facing viewer", "facing away",
    "full body", "upper body", "lower body", "cowboy shot", "close-up", "portrait", "head out of frame",
    "feet out of frame", "from side", "from behind", "from above", "from below", "profile",
    "straight-on", "dutch angle", "pov", "wide shot", "very wide shot",
)


@dataclass(frozen=True)
class TagGroups:
    """Word lists for the guide's groups (tags in none of them are switch on/off tags)."""
    subject: tuple[str, ...] = SUBJECT
    negative: tuple[str, ...] = NEGATIVE
    pose: tuple[str, ...] = POSE
    hands: tuple[str, ...] = HANDS
    camera: tuple[str, ...] = CAMERA

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"tag group {f.name!r} must be a list of tags")
            object.__setattr__(self, f.name, tuple(v.strip() for v in value if v.strip()))

    @classmethod
    def load(cls, path: str | os.PathLike) -> TagGroups:
        """Read a JSON object with any of the keys subject, negative, pose, hands, camera (lists of tags);
        keys left out keep their defaults."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read tag groups {path}: {e}") from e
        return cls.from_dict(data, f"tag groups {path}")

    @classmethod
    def from_dict(cls, data, where: str = "tag groups") -> TagGroups:
        """Groups from a JSON object of lists (keys left out keep their defaults); ValueError starting
        with `where` says what is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object of lists")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from e

    def save(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, {k: list(v) for k, v in asdict(self).items()})

    def group_of(self, tag: str) -> str:
        """'subject', 'negative', 'pose', 'hands', 'camera' or 'switch'."""
        for f in fields(self):
            if any(matches(tag, pattern) for pattern in getattr(self, f.name)):
                return f.name
        return "switch"


ORDER = ("subject", "switch", "negative", "pose", "hands", "camera")


def order_tags(tags: list[str], groups: TagGroups = TagGroups(), trigger: str | None = None) -> list[str]:
    """Tags in the guide's order; with `trigger`, that word first (added when missing)."""
    by_group: dict[str, list[str]] = {name: [] for name in ORDER}
    for tag in tags:
        by_group[groups.group_of(tag)].append(tag)
    ordered = [t for name in ORDER for t in by_group[name]]
    return put_first(ordered, trigger) if trigger else ordered
