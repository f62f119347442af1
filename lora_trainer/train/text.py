"""SDXL prompt encoding: two CLIP text encoders, and an in-memory cache for when they are frozen.

The SDXL way (diffusers' StableDiffusionXLPipeline and kohya agree): each encoder's penultimate hidden
state, concatenated on the feature axis, is the U-Net's cross-attention input; the second encoder's
projected pooled output (`text_embeds`) joins the time ids as the extra conditioning.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

MAX_LENGTH = 77  # CLIP's context; longer captions are truncated as in the WebUI's plain (non-chunked) path


def encode_prompts(tokenizers: Sequence, text_encoders: Sequence[torch.nn.Module],
                   captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds [B, 77, te1_dim + te2_dim], pooled [B, te2_projection_dim]).

    Gradients flow when the caller has them enabled (text-encoder training); wrap in `torch.no_grad()`
    otherwise."""
    hidden_states, pooled = [], None
    for tokenizer, encoder in zip(tokenizers, text_encoders):
        ids = tokenizer(list(captions), padding="max_length", max_length=MAX_LENGTH, truncation=True,
                        return_tensors="pt").input_ids
        # parameters() also works through a DistributedDataParallel wrapper, which has no .device
        out = encoder(ids.to(next(encoder.parameters()).device), output_hidden_states=True)
        hidden_states.append(out.hidden_states[-2])
        pooled = out[0]  # for CLIPTextModelWithProjection (the second encoder): text_embeds
    return torch.cat(hidden_states, dim=-1), pooled


class TextEmbeddingCache:
    """Caption text -> (prompt_embeds [77, D], pooled [P]) on the CPU, encoded once without grad.

    `prepare` encodes every caption ahead of training so the text encoders can leave the GPU;
    `get` encodes any caption it has not seen (e.g. a new shuffle order) on demand."""

    def __init__(self, tokenizers: Sequence, text_encoders: Sequence[torch.nn.Module]):
        self.tokenizers = tokenizers
        self.text_encoders = text_encoders
        self._store: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def prepare(self, captions: Sequence[str], batch_size: int = 16) -> None:
        missing = list(dict.fromkeys(c for c in captions if c not in self._store))
        for start in range(0, len(missing), batch_size):
            self._encode(missing[start:start + batch_size])

    def get(self, captions: Sequence[str], device: torch.device | str | None = None,
            dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        captions = list(captions)
        missing = list(dict.fromkeys(c for c in captions if c not in self._store))
        self.hits += len(captions) - sum(captions.count(c) for c in missing)
        if missing:
            self._encode(missing)
        embeds = torch.stack([self._store[c][0] for c in captions]).to(device=device, dtype=dtype)
        pooled = torch.stack([self._store[c][1] for c in captions]).to(device=device, dtype=dtype)
        return embeds, pooled

    @torch.no_grad()
    def _encode(self, captions: list[str]) -> None:
        embeds, pooled = encode_prompts(self.tokenizers, self.text_encoders, captions)
        for caption, e, p in zip(captions, embeds.cpu(), pooled.cpu()):
            self._store[caption] = (e, p)
        self.misses += len(captions)
