"""A synthetic "character" dataset: something consistent for a LoRA to learn, made locally in a second.

The character never changes: red hair, green eyes, a purple dress with a yellow belt and a yellow
diamond on the chest, dark boots. What changes from image to image is what a real dataset varies:
framing (close-up, upper body, full body), pose, position, and background. Captions name the trigger
word, the fixed traits and the varying ones, in the WD14 tag style:
"myLoRA, 1girl, red hair, green eyes, purple dress, close-up, arms up, simple background".
Deterministic: the same arguments give byte-identical files; `keep_existing` leaves the ones already
there (each file is written whole or not at all, so one that exists is complete).
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from PIL import Image, ImageDraw

from ..fsutil import atomic_path, write_text_atomic

SKIN, HAIR, EYES = (241, 200, 170), (200, 40, 35), (30, 150, 60)
DRESS, TRIM, BOOTS = (110, 50, 160), (245, 205, 40), (50, 35, 30)
FRAMINGS = {  # tag -> (figure height / canvas, how far down the canvas the head's top sits)
    "full body": (0.85, 0.08),
    "upper body": (1.7, 0.10),
    "close-up": (3.4, 0.12),
}
POSES = {"standing": (20, 20), "arms up": (150, 150), "waving": (20, 140)}  # arm raise: 0 hangs down
BACKGROUNDS = ("simple background", "white background", "gradient background", "outdoors", "indoors")


def make_character_dataset(img_root: Path, *, name: str = "myLoRA", count: int = 8, size: int = 64,
                           repeats: int = 1, seed: int = 0, keep_existing: bool = False) -> Path:
    """Write `img_root/<repeats>_<name>/NNN.png` + `NNN.txt` and return `img_root`. With
    `keep_existing`, an image whose PNG and caption are both there already is left as it is."""
    folder = Path(img_root) / f"{repeats}_{name}"
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        png, txt = folder / f"{index:03d}.png", folder / f"{index:03d}.txt"
        if keep_existing and png.is_file() and txt.is_file():
            continue
        rng = random.Random(f"{seed}-{index}")
        framing = list(FRAMINGS)[index % len(FRAMINGS)]  # every set of 3+ holds all three framings
        pose = rng.choice(list(POSES))
        background = rng.choice(BACKGROUNDS)
        image = _render(size, framing, pose, background, rng)
        with atomic_path(png) as tmp:
            image.save(tmp, format="PNG")
        caption = f"{name}, 1girl, red hair, green eyes, purple dress, {framing}, {pose}, {background}"
        write_text_atomic(txt, caption + "\n")
    return Path(img_root)


def _render(size: int, framing: str, pose: str, background: str, rng: random.Random) -> Image.Image:
    scale = 4 if size <= 256 else 2  # draw larger, then shrink: smooth edges like a photo
    canvas = size * scale
    image = _background(canvas, background, rng)
    height_ratio, top_ratio = FRAMINGS[framing]
    figure_h = canvas * height_ratio
    center_x = canvas * rng.uniform(0.35, 0.65)
    top = canvas * top_ratio * rng.uniform(0.6, 1.4)
    _draw_character(ImageDraw.Draw(image), center_x, top, figure_h, POSES[pose])
    return image.resize((size, size), Image.Resampling.LANCZOS)


def _background(canvas: int, kind: str, rng: random.Random) -> Image.Image:
    if kind == "white background":
        return Image.new("RGB", (canvas, canvas), (255, 255, 255))
    # Muted mid-tones, unlike the character's saturated colours, so the character stays the constant.
    color = tuple(rng.randint(90, 210) for _ in range(3))
    image = Image.new("RGB", (canvas, canvas), color)
    draw = ImageDraw.Draw(image)
    if kind == "gradient background":
        other = tuple(rng.randint(90, 210) for _ in range(3))
        for y in range(canvas):
            t = y / canvas
            draw.line([(0, y), (canvas, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(color, other)))
    elif kind == "outdoors":
        horizon = canvas * rng.uniform(0.55, 0.75)
        draw.rectangle([0, 0, canvas, horizon], fill=(135, 190, 235))
        draw.rectangle([0, horizon, canvas, canvas], fill=(90, 160, 70))
        sun_x, r = canvas * rng.uniform(0.1, 0.9), canvas * 0.07
        draw.ellipse([sun_x - r, canvas * 0.05, sun_x + r, canvas * 0.05 + 2 * r], fill=(250, 235, 150))
    elif kind == "indoors":
        floor = canvas * rng.uniform(0.65, 0.8)
        draw.rectangle([0, floor, canvas, canvas], fill=(150, 110, 80))
        x = canvas * rng.uniform(0.05, 0.6)
        draw.rectangle([x, canvas * 0.15, x + canvas * 0.3, canvas * 0.45], fill=(200, 225, 245),
                       outline=(240, 240, 240), width=max(1, canvas // 100))
    return image


def _draw_character(draw: ImageDraw.ImageDraw, cx: float, top: float, h: float,
                    arm_raise: tuple[int, int]) -> None:
    """The figure in units of its height `h`: head at the top, feet at `top + h`."""
    def pt(x: float, y: float) -> tuple[float, float]:
        return cx + x * h, top + y * h

    def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [*pt(x0, y0), *pt(x1, y1)]

    limb = max(1, round(h * 0.035))
    # Long hair behind the shoulders, then legs, body, arms, head.
    draw.rectangle(box(-0.1, 0.08, 0.1, 0.36), fill=HAIR)
    for x in (-0.045, 0.045):
        draw.line([pt(x, 0.6), pt(x, 0.93)], fill=SKIN, width=limb)
        draw.rectangle(box(x - 0.03, 0.88, x + 0.03, 1.0), fill=BOOTS)
    draw.polygon([pt(-0.07, 0.22), pt(0.07, 0.22), pt(0.15, 0.64), pt(-0.15, 0.64)], fill=DRESS)
    draw.rectangle(box(-0.095, 0.38, 0.095, 0.42), fill=TRIM)  # belt
    draw.polygon([pt(0, 0.25), pt(0.035, 0.3), pt(0, 0.35), pt(-0.035, 0.3)], fill=TRIM)  # chest diamond
    for side, raised in zip((-1, 1), arm_raise):
        shoulder = (side * 0.075, 0.25)
        rad = math.radians(raised)
        hand = (shoulder[0] + side * 0.26 * math.sin(rad), shoulder[1] + 0.26 * math.cos(rad))
        draw.line([pt(*shoulder), pt(*hand)], fill=SKIN, width=limb)
    draw.ellipse(box(-0.1, 0.0, 0.1, 0.2), fill=SKIN)  # face
    draw.chord(box(-0.11, -0.01, 0.11, 0.17), 180, 360, fill=HAIR)  # bangs
    for x in (-0.04, 0.04):
        draw.ellipse(box(x - 0.018, 0.1, x + 0.018, 0.136), fill=EYES)
