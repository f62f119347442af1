"""Which epochs to render first, from the run's loss: the local minima of loss/epoch (and of the
smoothed per-step loss, when given) between under- and over-training, deepest first, each with the
reason it was picked. A flat curve, a curve still falling, or a curve rising from the start each get
a reasoned fallback. Noise is smoothed away first, so one noisy epoch is not a minimum. No torch.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lora_trainer.runs import layout


def _field(kind: str, name: str) -> str:
    """An event field's name, checked against layout.EVENT_FIELDS (fails at import if it changes)."""
    if name not in layout.EVENT_FIELDS[kind]:
        raise RuntimeError(f"event {kind!r} has no field {name!r} in runs/layout.py")
    return name


_EVENT = "event"
_END_EPOCH, _END_LOSS = _field(layout.EPOCH_END, "epoch"), _field(layout.EPOCH_END, "loss")
_STEP_EPOCH, _STEP_LOSS = _field(layout.STEP, "epoch"), _field(layout.STEP, "loss")
_VAL_EPOCH, _VAL_LOSS = _field(layout.VALIDATION, "epoch"), _field(layout.VALIDATION, "loss")

SMOOTH_FROM = 5  # curves of at least this many epochs are smoothed (a centered 3-epoch mean)
NOISE_FACTOR = 2.5  # a minimum must be this many times deeper than the curve's noise
MIN_RELATIVE = 0.005  # ... and at least 0.5% below the loss around it
FLAT_RELATIVE = 0.01  # a curve whose whole range is within 1% (or its noise) is flat


@dataclass(frozen=True)
class Candidate:
    epoch: int
    reason: str


@dataclass(frozen=True)
class _Minimum:
    epoch: int
    percent: float
    source: str
    value: float


def _finite(pairs: Iterable[tuple[int, float]]) -> list[tuple[int, float]]:
    out = []
    for key, value in pairs:
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            out.append((int(key), value))
    return out


def _smooth(values: list[float]) -> list[float]:
    if len(values) < SMOOTH_FROM:
        return list(values)
    out = []
    for i in range(len(values)):
        window = values[max(0, i - 1):i + 2]
        out.append(sum(window) / len(window))
    return out


def _noise(values: list[float], smooth: list[float]) -> float:
    """How far single values stray from the smoothed curve (median, so a real dip does not count)."""
    if len(values) < SMOOTH_FROM:
        return 0.0
    return statistics.median(abs(v - s) for v, s in zip(values[1:-1], smooth[1:-1]))


def _percent_text(percent: float) -> str:
    return f"{percent:.0f}%" if percent >= 1 else f"{percent:.1f}%"


def _minima(epochs: list[int], values: list[float], source: str) -> tuple[list[_Minimum], list[float], float]:
    """The significant interior minima of a curve (deepest first), the smoothed curve and its noise."""
    smooth = _smooth(values)
    noise = _noise(values, smooth)
    scale = abs(statistics.fmean(values)) if values else 0.0
    found = []
    for i in range(1, len(smooth) - 1):
        if not (smooth[i] < smooth[i - 1] and smooth[i] <= smooth[i + 1]):
            continue
        # the highest loss on each side before the curve goes lower than this minimum again
        left = i - 1
        left_ref = smooth[left]
        while left >= 0 and smooth[left] >= smooth[i]:
            left_ref = max(left_ref, smooth[left])
            left -= 1
        right = i + 1
        right_ref = smooth[right]
        while right < len(smooth) and smooth[right] >= smooth[i]:
            right_ref = max(right_ref, smooth[right])
            right += 1
        ref = min(left_ref, right_ref)
        depth = ref - smooth[i]
        if depth <= NOISE_FACTOR * noise or depth < MIN_RELATIVE * scale or depth <= 0:
            continue
        percent = 100.0 * depth / abs(ref) if ref else 100.0
        # the smoothed curve may move a sharp minimum by one epoch: take the lowest raw epoch beside it
        j = min((k for k in (i - 1, i, i + 1)), key=lambda k: (values[k], k != i))
        found.append(_Minimum(epochs[j], percent, source, values[j]))
    found.sort(key=lambda m: (-round(m.percent, 6), m.epoch))
    return found, smooth, noise


def _fallback(epochs: list[int], values: list[float], smooth: list[float], noise: float) -> list[Candidate]:
    last, middle = epochs[-1], epochs[(len(epochs) - 1) // 2]
    scale = abs(statistics.fmean(values))
    spread = max(smooth) - min(smooth)
    if spread <= max(NOISE_FACTOR * noise, FLAT_RELATIVE * scale):
        out = [Candidate(last, f"epoch {last}: flat loss (within {_percent_text(100 * spread / scale if scale else 0)}"
                               f"): the last epoch")]
        if middle != last:
            out.append(Candidate(middle, f"epoch {middle}: flat loss: the middle epoch"))
        return out
    lowest = min(range(len(smooth)), key=lambda k: (smooth[k], -k))
    if lowest == len(smooth) - 1:
        out = [Candidate(last, f"epoch {last}: still falling: the last epoch (more epochs may help)")]
        if len(epochs) > 1:
            before = epochs[-2]
            out.append(Candidate(before, f"epoch {before}: still falling: the epoch before the last"))
        return out
    if lowest == 0:
        first = epochs[0]
        out = [Candidate(first, f"epoch {first}: loss rising from the start: the first epoch "
                                f"(over-trained early? try a lower learning rate)")]
        if middle != first:
            out.append(Candidate(middle, f"epoch {middle}: loss rising from the start: the middle epoch"))
        return out
    low = epochs[lowest]
    out = [Candidate(low, f"epoch {low}: lowest loss/epoch, though not clearly below its neighbours")]
    if last != low:
        out.append(Candidate(last, f"epoch {last}: the last epoch"))
    return out


def _epoch_curve_from_steps(step_losses: list[tuple[int, float]]) -> dict[int, float]:
    """The per-step loss smoothed (exponential moving average, bias-corrected, spanning about an epoch's
    steps), read at each epoch's last step."""
    steps = _finite(step_losses)
    if not steps:
        return {}
    epochs = {e for e, _ in steps}
    span = max(5, len(steps) // max(1, len(epochs)))
    alpha = 2.0 / (span + 1)
    average, weight, out = 0.0, 0.0, {}
    for epoch, loss in steps:
        average = (1 - alpha) * average + alpha * loss
        weight = (1 - alpha) * weight + alpha
        out[epoch] = average / weight
    return out


def suggest_epochs(epoch_losses: dict[int, float], step_losses: list[tuple[int, float]] | None = None,
                   most: int = 3, source: str = "loss/epoch") -> list[Candidate]:
    """At most `most` epochs worth rendering first, best first, each with its reason.

    `epoch_losses`: the mean loss of each epoch (EPOCH_END events, `epoch_losses_from_events`).
    `step_losses`: optionally (epoch, loss) of every optimizer step in order (STEP events,
    `step_losses_from_events`); its smoothed curve adds its own minima (an epoch both curves find is
    given once, with both reasons)."""
    if most <= 0:
        return []
    pairs = sorted(_finite(epoch_losses.items()))
    if not pairs:
        return []
    epochs, values = [e for e, _ in pairs], [v for _, v in pairs]
    if len(pairs) == 1:
        return [Candidate(epochs[0], f"epoch {epochs[0]}: the only epoch with a loss")]
    minima, smooth, noise = _minima(epochs, values, source)
    if step_losses:
        curve = sorted(_epoch_curve_from_steps(step_losses).items())
        if len(curve) >= 3:
            from_steps, _, _ = _minima([e for e, _ in curve], [v for _, v in curve], "smoothed loss/step")
            minima = minima + from_steps
    merged: dict[int, tuple[_Minimum, list[str]]] = {}
    for m in sorted(minima, key=lambda m: (-round(m.percent, 6), m.epoch)):
        near = next((e for e in merged if abs(e - m.epoch) <= 1), None)
        text = f"local minimum of {m.source}, {_percent_text(m.percent)} under its neighbours"
        if near is None:
            merged[m.epoch] = (m, [text])
        elif m.source not in " ".join(merged[near][1]):
            where = "" if near == m.epoch else f" at epoch {m.epoch}"
            merged[near][1].append(f"also {m.source}{where}")
    if not merged:
        return _fallback(epochs, values, smooth, noise)[:most]
    out = [Candidate(epoch, f"epoch {epoch}: " + "; ".join(texts)) for epoch, (_, texts) in merged.items()]
    lowest_minimum = min(m.value for m, _ in merged.values())
    if len(smooth) >= 2 and smooth[-1] < smooth[-2] and values[-1] < lowest_minimum and epochs[-1] not in merged:
        out.append(Candidate(epochs[-1], f"epoch {epochs[-1]}: still falling at the end, below every "
                                         f"minimum: the last epoch"))
    return out[:most]


def epoch_losses_from_events(events: Iterable[dict[str, Any]]) -> dict[int, float]:
    """Each epoch's mean loss from a run's EPOCH_END events (a resumed run's later value wins)."""
    return _per_epoch(events, layout.EPOCH_END, _END_EPOCH, _END_LOSS)


def validation_losses_from_events(events: Iterable[dict[str, Any]]) -> dict[int, float]:
    """Each validated epoch's loss on the held-out images (VALIDATION events)."""
    return _per_epoch(events, layout.VALIDATION, _VAL_EPOCH, _VAL_LOSS)


def suggest_from_events(events: Iterable[dict[str, Any]], most: int = 3) -> list[Candidate]:
    """The candidates of a run: from its validation loss when it has one (images it never trained on
    say more than its training loss), else from its training loss per epoch and per step."""
    events = list(events)
    validation = validation_losses_from_events(events)
    if validation:
        return suggest_epochs(validation, most=most, source="loss/validation")
    return suggest_epochs(epoch_losses_from_events(events), step_losses_from_events(events), most=most)


def _per_epoch(events: Iterable[dict[str, Any]], kind: str, epoch_field: str, loss_field: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for event in events:
        if event.get(_EVENT) != kind:
            continue
        epoch, loss = event.get(epoch_field), event.get(loss_field)
        if isinstance(epoch, int) and isinstance(loss, (int, float)) and math.isfinite(loss):
            out[epoch] = float(loss)
    return out


def step_losses_from_events(events: Iterable[dict[str, Any]]) -> list[tuple[int, float]]:
    """(epoch, loss) of every STEP event in order, for `suggest_epochs(step_losses=...)`."""
    out = []
    for event in events:
        if event.get(_EVENT) != layout.STEP:
            continue
        epoch, loss = event.get(_STEP_EPOCH), event.get(_STEP_LOSS)
        if isinstance(epoch, int) and isinstance(loss, (int, float)) and math.isfinite(loss):
            out.append((epoch, float(loss)))
    return out
