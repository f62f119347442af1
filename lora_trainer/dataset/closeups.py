"""Custom face close-ups (the guide does them by hand in GIMP): a square crop around a detected face,
taken from half and full body shots when the set has too few close-ups."""

from __future__ import annotations

import math

from .framing import Box, expand_box

DEFAULT_MARGIN = 0.6   # of the face box's side on each side: hair, chin and a little neck and shoulder
MIN_SIDE = 384         # a smaller crop would be mostly upscaled or padded: not worth a training image


def closeup_box(face: Box, image_size: tuple[int, int], margin: float = DEFAULT_MARGIN) -> Box:
    """A square box around `face`, grown by `margin`, kept inside the image."""
    return expand_box(face, margin, image_size, square=True)


def closeups_needed(shots: list[str], target: float = 1 / 3) -> int:
    """How many extra close-ups bring the close-up share of the set up to `target`.

    Each extra close-up also adds one image: solve (c + k) / (n + k) >= target for k.
    """
    n, c = len(shots), shots.count("close-up")
    if n == 0 or c / n >= target:
        return 0
    return math.ceil((target * n - c) / (1 - target))


def pick_closeups(candidates: list[tuple[str, str, Box, tuple[int, int]]], mode: str,
                  margin: float = DEFAULT_MARGIN, min_side: int = MIN_SIDE, target: float = 1 / 3) -> dict[str, Box]:
    """Choose which images get an extra close-up and its box (see `plan_closeups`)."""
    return plan_closeups(candidates, mode, margin, min_side, target)[0]


def plan_closeups(candidates: list[tuple[str, str, Box, tuple[int, int]]], mode: str,
                  margin: float = DEFAULT_MARGIN, min_side: int = MIN_SIDE, target: float = 1 / 3, *,
                  size: int | None = None, upscale: bool = False) -> tuple[dict[str, Box], dict[str, str]]:
    """Choose which images get an extra close-up and its box; and which would have had one but for
    the crop's size, with the reason.

    candidates: (name, shot, largest face box or None, upright image size) for every image of the set,
    the shot as it will be trained (`faces.framed_shot`).
    mode "all": every half/full body shot; "auto": only as many as `closeups_needed`, largest faces
    first; "off": none. A close-up is made at the training `size`: a crop smaller than that is enlarged
    only with `upscale` (and never one under `min_side`); otherwise it is not made and reported.
    """
    if mode not in ("off", "auto", "all"):
        raise ValueError(f"close-ups mode must be off, auto or all, got {mode!r}")
    if mode == "off":
        return {}, {}
    usable, too_small = [], []
    for name, shot, face, image_size in candidates:
        if face is None or shot not in ("half body", "full body"):
            continue
        box = closeup_box(face, image_size, margin)
        side = box[2] - box[0]
        crop = f"the face crop is {side}x{box[3] - box[1]} px"
        if side < min_side:
            too_small.append((side, name, f"{crop}, under {min_side} px: too small for a close-up"
                                          + (f" even enlarged to {size} px" if size and upscale else "")))
        elif size is not None and side < size and not upscale:
            too_small.append((side, name, f"{crop}, below the {size} px training size: not made "
                                          "(--upscale-small enlarges such crops to the training size)"))
        else:
            usable.append((side, name, box))
    usable.sort(key=lambda x: (-x[0], x[1]))
    too_small.sort(key=lambda x: (-x[0], x[1]))
    if mode == "auto":
        needed = closeups_needed([c[1] for c in candidates], target)
        usable = usable[:needed]
        too_small = too_small[:needed - len(usable)]
    return {name: box for _, name, box in usable}, {name: why for _, name, why in too_small}
