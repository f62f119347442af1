"""review/candidates.py: which epochs to render first, from synthetic loss curves."""

from __future__ import annotations

import math
import random

from lora_trainer.review.candidates import (
    Candidate,
    epoch_losses_from_events,
    step_losses_from_events,
    suggest_epochs,
)
from lora_trainer.runs import layout


def curve(values) -> dict[int, float]:
    return {e: v for e, v in enumerate(values, start=1)}


def test_clear_minimum_first_with_its_percentage():
    losses = curve([0.140, 0.128, 0.118, 0.110, 0.104, 0.098, 0.103, 0.108, 0.112, 0.115])
    found = suggest_epochs(losses)
    assert found[0].epoch == 6
    assert "local minimum of loss/epoch" in found[0].reason and "% under its neighbours" in found[0].reason
    assert found[0].reason.startswith("epoch 6: ")
    percent = int(found[0].reason.split(", ")[1].split("%")[0])
    assert 3 <= percent <= 15


def test_deeper_minimum_ranks_first():
    losses = curve([0.14, 0.12, 0.108, 0.100, 0.098, 0.104, 0.112, 0.118, 0.110, 0.096, 0.090, 0.088, 0.095,
                    0.105, 0.115])
    found = suggest_epochs(losses)
    assert [c.epoch for c in found][:2] == [12, 5]


def test_flat_curve():
    losses = curve([0.1000, 0.1003, 0.0998, 0.1001, 0.0999, 0.1002, 0.1000, 0.1001])
    found = suggest_epochs(losses)
    assert [c.epoch for c in found] == [8, 4]
    assert all("flat loss" in c.reason for c in found)
    assert "last epoch" in found[0].reason and "middle" in found[1].reason


def test_falling_curve():
    losses = curve([0.2 * 0.9 ** e for e in range(10)])
    found = suggest_epochs(losses)
    assert found[0] == Candidate(10, found[0].reason) and "still falling: the last epoch" in found[0].reason
    assert len(found) <= 3


def test_rising_curve():
    found = suggest_epochs(curve([0.1 + 0.01 * e for e in range(8)]))
    assert found[0].epoch == 1 and "rising" in found[0].reason


def test_noisy_curve_with_one_real_minimum():
    rng = random.Random(3)
    base = [0.10 + 0.004 * (e - 12) ** 2 / 12 for e in range(1, 25)]  # lowest at epoch 12
    noisy = [v + rng.uniform(-0.0025, 0.0025) for v in base]
    # the raw curve has several dips of its own
    dips = [i for i in range(1, len(noisy) - 1) if noisy[i] < noisy[i - 1] and noisy[i] < noisy[i + 1]]
    assert len(dips) > 2
    found = suggest_epochs(curve(noisy))
    assert found and abs(found[0].epoch - 12) <= 1
    assert all("local minimum" not in c.reason or abs(c.epoch - 12) <= 1 for c in found)


def test_ties_are_ordered_by_epoch():
    losses = curve([0.12, 0.11, 0.10, 0.11, 0.12, 0.11, 0.10, 0.11, 0.12])
    found = suggest_epochs(losses)
    assert [c.epoch for c in found][:2] == [3, 7]
    assert found[0].reason.split(": ", 1)[1] == found[1].reason.split(": ", 1)[1]


def test_one_epoch_and_empty_input():
    assert suggest_epochs({}) == []
    assert suggest_epochs({}, step_losses=[]) == []
    assert suggest_epochs({4: 0.1}) == [Candidate(4, "epoch 4: the only epoch with a loss")]
    assert suggest_epochs({1: float("nan"), 2: math.inf}) == []
    assert suggest_epochs(curve([0.2, 0.1, 0.15]), most=0) == []


def test_two_epochs():
    found = suggest_epochs({1: 0.2, 2: 0.1})
    assert found[0].epoch == 2 and "still falling" in found[0].reason


def test_most_limits_and_last_epoch_added_when_lowest():
    losses = curve([0.14, 0.12, 0.11, 0.105, 0.112, 0.118, 0.11, 0.10, 0.095, 0.09])
    found = suggest_epochs(losses)
    assert [c.epoch for c in found] == [4, 10]
    assert "still falling at the end" in found[1].reason
    assert len(suggest_epochs(losses, most=1)) == 1


def test_step_losses_add_their_minima():
    rng = random.Random(1)
    epoch_values = [0.14, 0.128, 0.118, 0.110, 0.104, 0.098, 0.103, 0.108, 0.112, 0.115]
    steps = [(e, v + rng.uniform(-0.02, 0.02)) for e, v in enumerate(epoch_values, start=1) for _ in range(40)]
    found = suggest_epochs(curve(epoch_values), step_losses=steps)
    assert found[0].epoch == 6 and "also smoothed loss/step" in found[0].reason
    only_steps = suggest_epochs({1: 0.1, 2: 0.1, 3: 0.1, 4: 0.1, 5: 0.1, 6: 0.1, 7: 0.1, 8: 0.1, 9: 0.1, 10: 0.1},
                                step_losses=steps)
    assert any("smoothed loss/step" in c.reason and 5 <= c.epoch <= 8 for c in only_steps)


def test_losses_from_events():
    events = [
        {"event": layout.START, "time": 0},
        {"event": layout.STEP, "time": 1, "step": 1, "epoch": 1, "loss": 0.2, "average_loss": 0.2, "lr": {}},
        {"event": layout.STEP, "time": 2, "step": 2, "epoch": 1, "loss": 0.18, "average_loss": 0.19, "lr": {}},
        {"event": layout.EPOCH_END, "time": 3, "epoch": 1, "loss": 0.19, "step": 2},
        {"event": layout.STEP, "time": 4, "step": 3, "epoch": 2, "loss": float("nan"), "average_loss": 0.2,
         "lr": {}},
        {"event": layout.EPOCH_END, "time": 5, "epoch": 2, "loss": 0.17, "step": 4},
        {"event": layout.EPOCH_END, "time": 6, "epoch": 2, "loss": 0.16, "step": 4},  # resumed: later wins
        {"event": layout.EPOCH_END, "time": 7, "epoch": 3, "loss": None, "step": 6},
    ]
    assert epoch_losses_from_events(events) == {1: 0.19, 2: 0.16}
    assert step_losses_from_events(events) == [(1, 0.2), (1, 0.18)]
    for kind in (layout.STEP, layout.EPOCH_END):
        assert {"epoch", "loss"} <= set(layout.EVENT_FIELDS[kind])


def test_the_validation_loss_is_preferred_when_a_run_has_one():
    from lora_trainer.review.candidates import suggest_from_events, validation_losses_from_events

    training = [0.14, 0.12, 0.10, 0.09, 0.08, 0.07, 0.06, 0.05]       # falls to the end: memorising
    validation = [0.30, 0.25, 0.21, 0.18, 0.20, 0.23, 0.26, 0.28]     # best at epoch 4
    events = [{"event": layout.EPOCH_END, "time": e, "epoch": e, "loss": v, "step": e}
              for e, v in enumerate(training, start=1)]
    assert suggest_from_events(events)[0].epoch == 8
    events += [{"event": layout.VALIDATION, "time": e, "epoch": e, "loss": v, "step": e, "images": 4}
               for e, v in enumerate(validation, start=1)]
    assert validation_losses_from_events(events) == dict(enumerate(validation, start=1))
    best = suggest_from_events(events)[0]
    assert best.epoch == 4 and "loss/validation" in best.reason
