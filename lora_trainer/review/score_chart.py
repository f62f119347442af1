"""The epoch scores as a chart: one strip per measure (likeness, adherence, leaked tags, loss) over the
epochs, the no-LoRA baseline as a dashed line, the suggested epoch marked. Drawn with Pillow (the grid
PNGs are too), so the chart is a file beside the grid that any viewer opens. No torch, no gradio."""

from __future__ import annotations

from PIL import Image, ImageDraw

from lora_trainer.review.grid import label_font, text_width
from lora_trainer.review.scores import ColumnScore, GridScores

WIDTH = 720
STRIP_HEIGHT = 120
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 20, 34, 40
LINE = (40, 90, 200)
BASELINE = (150, 150, 150)
PICK = (255, 236, 170)
AXIS = (90, 90, 90)
GRID = (225, 225, 225)

# (title, what is read from a column, fixed range or None to fit the values)
MEASURES = (
    ("face likeness (higher: closer)", lambda c: c.likeness, None),
    ("prompt adherence (share of prompted tags found)", lambda c: c.adherence, (0.0, 1.0)),
    ("leaked training tags per image", lambda c: c.leakage, "from zero"),
    ("loss (validation, else training)", lambda c: c.loss, None),
)


def _range(values: list[float], fixed) -> tuple[float, float]:
    if fixed == "from zero":  # a count: 0 at the bottom, at least 1 at the top
        return 0.0, max(1.0, max(values) * 1.1)
    if fixed is not None:
        return fixed
    low, high = min(values), max(values)
    if high - low < 1e-6:
        low, high = low - 0.05 * (abs(low) or 1), high + 0.05 * (abs(high) or 1)
    pad = (high - low) * 0.1
    return low - pad, high + pad


def _dashed(draw: ImageDraw.ImageDraw, y: int, left: int, right: int) -> None:
    for x in range(left, right, 10):
        draw.line((x, y, min(x + 5, right), y), fill=BASELINE, width=2)


def score_chart(scores: GridScores) -> Image.Image:
    """The chart of `scores` (strips without any value are left out)."""
    epochs = sorted((c for c in scores.columns if not c.baseline), key=lambda c: c.epoch)
    baseline = next((c for c in scores.columns if c.baseline), None)
    strips = [m for m in MEASURES if any(m[1](c) is not None for c in epochs)]
    font, small = label_font(15), label_font(12)
    height = MARGIN_TOP + max(1, len(strips)) * STRIP_HEIGHT + MARGIN_BOTTOM
    chart = Image.new("RGB", (WIDTH, height), (255, 255, 255))
    draw = ImageDraw.Draw(chart)
    title = "Epoch scores: " + (f"epoch {scores.pick} suggested" if scores.pick is not None else "no epoch suggested")
    draw.text((MARGIN_LEFT, 8), title, font=font, fill=(0, 0, 0))
    if not epochs or not strips:
        draw.text((MARGIN_LEFT, MARGIN_TOP + 20), "nothing measured", font=font, fill=AXIS)
        return chart
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    step = (right - left) / max(1, len(epochs) - 1)

    def x_of(i: int) -> int:
        return int(left + (step * i if len(epochs) > 1 else (right - left) / 2))

    for i, column in enumerate(epochs):
        if column.epoch == scores.pick:
            draw.rectangle((x_of(i) - 8, MARGIN_TOP, x_of(i) + 8, height - MARGIN_BOTTOM), fill=PICK)
    for n, (name, read, fixed) in enumerate(strips):
        top = MARGIN_TOP + n * STRIP_HEIGHT + 18
        bottom = MARGIN_TOP + (n + 1) * STRIP_HEIGHT - 8
        _strip(draw, epochs, baseline, read, _range(_values(epochs, baseline, read), fixed),
               (left, top, right, bottom), x_of, small)
        draw.text((left, top - 17), name, font=small, fill=(0, 0, 0))
    for i, column in enumerate(epochs):
        label = str(column.epoch)
        draw.text((x_of(i) - text_width(small, label) / 2, height - MARGIN_BOTTOM + 4), label, font=small,
                  fill=AXIS)
    draw.text((left, height - 18), "epoch" + ("   (dashed: no LoRA)" if baseline else ""), font=small, fill=AXIS)
    return chart


def _values(epochs: list[ColumnScore], baseline: ColumnScore | None, read) -> list[float]:
    values = [read(c) for c in epochs if read(c) is not None]
    if baseline is not None and read(baseline) is not None:
        values.append(read(baseline))
    return values


def _strip(draw, epochs, baseline, read, value_range, box, x_of, font) -> None:
    left, top, right, bottom = box
    low, high = value_range

    def y_of(value: float) -> int:
        return int(bottom - (value - low) / (high - low) * (bottom - top))

    draw.rectangle(box, outline=GRID)
    for value in (low, high):
        text = f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
        draw.text((left - 8 - text_width(font, text), y_of(value) - 7), text, font=font, fill=AXIS)
    if baseline is not None and read(baseline) is not None:
        _dashed(draw, y_of(read(baseline)), left, right)
    points = [(x_of(i), y_of(read(c))) for i, c in enumerate(epochs) if read(c) is not None]
    if len(points) > 1:
        draw.line(points, fill=LINE, width=2)
    for x, y in points:
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=LINE)
