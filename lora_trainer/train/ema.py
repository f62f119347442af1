"""An exponential moving average (EMA) of the LoRA weights: the average of the recent weights is often
smoother than the last step's (less of the last batches' noise), as OneTrainer's and ai-toolkit's EMA.

Every `every` optimizer steps: shadow = decay * shadow + (1 - decay) * weight, in fp32, kept beside the
model (same device). `swapped_in` puts the averages into the model for saving and then puts the
trained weights back, so training itself never sees them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class LoraEMA:
    def __init__(self, params: dict[str, torch.nn.Parameter], decay: float, every: int = 1):
        if not 0 < decay < 1:
            raise ValueError(f"ema_decay must be between 0 and 1, got {decay}")
        self.decay, self.every = decay, max(1, every)
        self.params = params
        self.shadow = {name: p.detach().float().clone() for name, p in params.items()}

    @torch.no_grad()
    def update(self, step: int) -> bool:
        """After optimizer step `step` (counted from 1): fold the weights in every `every` steps."""
        if step % self.every:
            return False
        for name, p in self.params.items():
            self.shadow[name].mul_(self.decay).add_(p.detach().float(), alpha=1 - self.decay)
        return True

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The averages in the model's LoRA weights for the duration (to save them); then the trained
        weights again, bit for bit."""
        with torch.no_grad():
            trained = {name: p.detach().clone() for name, p in self.params.items()}
            for name, p in self.params.items():
                p.copy_(self.shadow[name].to(p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(trained[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: t.detach().cpu() for name, t in self.shadow.items()}

    def load_state_dict(self, saved: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(saved))
        if missing:
            raise ValueError(f"the saved EMA lacks {len(missing)} weight(s), e.g. {missing[0]}")
        for name, t in self.shadow.items():
            t.copy_(saved[name].to(t.device, t.dtype))
