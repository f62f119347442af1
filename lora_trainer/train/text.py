"""SDXL prompt encoding: two CLIP text encoders, long captions in 75-token chunks, and an in-memory cache
for when the encoders are frozen.

The SDXL way (diffusers' StableDiffusionXLPipeline and kohya agree): each encoder's penultimate hidden
state, concatenated on the feature axis, is the U-Net's cross-attention input; the second encoder's
projected pooled output (`text_embeds`) joins the time ids as the extra conditioning.

Long captions are encoded the way Forge and A1111 encode long prompts (Forge:
backend/text_processing/classic_engine.py), so a caption trains as the same text renders in the WebUI:
- the caption's tokens are split into chunks of at most 75; a chunk that fills up ends after its last
  comma when that comma is within the last 20 tokens, so a tag is not split across two chunks;
- each chunk becomes 77 ids, `<BOS> tokens <EOS> <pad>...`, and is encoded on its own;
- the chunks' hidden states are concatenated along the sequence axis: [B, 77 * chunks, D];
- the pooled output (`text_embeds`) is the first chunk's;
- a caption uses as many chunks as it needs, up to `max_token_length / 75`; in a batch, shorter captions
  are padded with the empty prompt's chunk (`<BOS> <EOS> <pad>...`), as the WebUI pads prompts of
  unequal length. A caption of 75 tokens or fewer is one chunk, identical to plain CLIP encoding.
Tokens that do not fit in `max_token_length / 75` chunks are cut; `count_cut_tokens` says how many.

kohya's sd-scripts (`max_token_length` 150/225) differs in two details: it always pads to the full
chunk count and drops the inner chunks' BOS/EOS states ([B, 75 * n + 2, D]); it takes the pool from
the first chunk too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

CHUNK_TOKENS = 75  # caption tokens per chunk; with BOS and EOS a chunk is CLIP's 77-token context
CHUNK_LENGTH = CHUNK_TOKENS + 2
COMMA_BACKTRACK = 20  # the WebUIs' default: a full chunk ends after a comma this close to its end
DEFAULT_MAX_TOKEN_LENGTH = 75


def max_chunks(max_token_length: int) -> int:
    if max_token_length < CHUNK_TOKENS or max_token_length % CHUNK_TOKENS:
        raise ValueError(f"max_token_length must be a multiple of {CHUNK_TOKENS}, got {max_token_length}")
    return max_token_length // CHUNK_TOKENS


def caption_token_ids(tokenizer, captions: Sequence[str]) -> list[list[int]]:
    """Each caption's token ids without BOS/EOS and without any length limit."""
    return tokenizer(list(captions), add_special_tokens=False, truncation=False, verbose=False).input_ids


def split_into_chunks(ids: Sequence[int], comma_id: int | None) -> list[list[int]]:
    """The WebUI's split of one caption's tokens into chunks of at most CHUNK_TOKENS (no BOS/EOS yet).
    An empty caption is one empty chunk."""
    chunks: list[list[int]] = []
    chunk: list[int] = []
    last_comma = -1  # index in `chunk` of its last comma
    for token in ids:
        if token == comma_id:
            last_comma = len(chunk)
        elif len(chunk) == CHUNK_TOKENS and last_comma != -1 and CHUNK_TOKENS - last_comma <= COMMA_BACKTRACK:
            # The chunk is full: end it after its last comma and carry the tag that follows over.
            chunks.append(chunk[:last_comma + 1])
            chunk, last_comma = chunk[last_comma + 1:], -1
        if len(chunk) == CHUNK_TOKENS:
            chunks.append(chunk)
            chunk, last_comma = [], -1
        chunk.append(token)
    if chunk or not chunks:
        chunks.append(chunk)
    return chunks


def chunk_ids(tokenizer, chunk: Sequence[int]) -> list[int]:
    """One chunk as the encoder reads it: `<BOS> tokens <EOS>`, padded to CHUNK_LENGTH with the
    tokenizer's pad id (CLIP-L pads with EOS, SDXL's second tokenizer with "!")."""
    ids = [tokenizer.bos_token_id, *chunk, tokenizer.eos_token_id]
    return ids + [tokenizer.pad_token_id] * (CHUNK_LENGTH - len(ids))


def _comma_id(tokenizer) -> int | None:
    return tokenizer.get_vocab().get(",</w>")


def tokenize_chunks(tokenizer, captions: Sequence[str], max_token_length: int = DEFAULT_MAX_TOKEN_LENGTH
                    ) -> list[list[list[int]]]:
    """Per caption, its chunks of CHUNK_LENGTH ids (at most max_token_length / 75 of them)."""
    limit, comma = max_chunks(max_token_length), _comma_id(tokenizer)
    return [[chunk_ids(tokenizer, c) for c in split_into_chunks(ids, comma)[:limit]]
            for ids in caption_token_ids(tokenizer, captions)]


def count_cut_tokens(tokenizer, captions: Sequence[str], max_token_length: int = DEFAULT_MAX_TOKEN_LENGTH
                     ) -> list[int]:
    """Per caption, how many of its tokens do not fit in max_token_length / 75 chunks and are cut."""
    limit, comma = max_chunks(max_token_length), _comma_id(tokenizer)
    return [sum(len(c) for c in split_into_chunks(ids, comma)[limit:])
            for ids in caption_token_ids(tokenizer, captions)]


def encode_prompts(tokenizers: Sequence, text_encoders: Sequence[torch.nn.Module], captions: Sequence[str],
                   max_token_length: int = DEFAULT_MAX_TOKEN_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds [B, 77 * chunks, te1_dim + te2_dim], pooled [B, te2_projection_dim]); `chunks` is
    the longest caption's chunk count (1 for captions of 75 tokens or fewer).

    Gradients flow when the caller has them enabled (text-encoder training); wrap in `torch.no_grad()`
    otherwise."""
    tokenized = [tokenize_chunks(tokenizer, captions, max_token_length) for tokenizer in tokenizers]
    count = max(len(chunks) for per_caption in tokenized for chunks in per_caption)
    hidden_states, pooled = [], None
    for tokenizer, encoder, per_caption in zip(tokenizers, text_encoders, tokenized):
        empty = chunk_ids(tokenizer, [])
        ids = torch.tensor([chunks + [empty] * (count - len(chunks)) for chunks in per_caption])  # [B, n, 77]
        # parameters() also works through a DistributedDataParallel wrapper, which has no .device
        out = encoder(ids.reshape(-1, CHUNK_LENGTH).to(next(encoder.parameters()).device), output_hidden_states=True)
        states = out.hidden_states[-2]
        hidden_states.append(states.reshape(len(captions), count * CHUNK_LENGTH, states.shape[-1]))
        pooled = out[0].reshape(len(captions), count, -1)[:, 0]  # the second encoder's text_embeds: chunk 1's
    return torch.cat(hidden_states, dim=-1), pooled


class TextEmbeddingCache:
    """Caption text -> (prompt_embeds [77 * chunks, D], pooled [P]) on the CPU, encoded once without grad.

    `prepare` encodes every caption ahead of training so the text encoders can leave the GPU;
    `get` encodes any caption it has not seen (e.g. a new shuffle order) on demand, and pads a batch's
    shorter captions with the empty prompt's chunk, as `encode_prompts` does."""

    def __init__(self, tokenizers: Sequence, text_encoders: Sequence[torch.nn.Module],
                 max_token_length: int = DEFAULT_MAX_TOKEN_LENGTH):
        self.tokenizers = tokenizers
        self.text_encoders = text_encoders
        self.max_token_length = max_token_length
        max_chunks(max_token_length)  # checks it
        self._store: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._empty_chunk: torch.Tensor | None = None
        # False: captions `get` meets for the first time are encoded but not kept (a shuffled order is
        # rarely seen twice: keeping each would grow by megabytes a step)
        self.keep_new = True
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def prepare(self, captions: Sequence[str], batch_size: int = 16) -> None:
        missing = list(dict.fromkeys(c for c in captions if c not in self._store))
        for start in range(0, len(missing), batch_size):
            self._store.update(self._encode(missing[start:start + batch_size]))
        if max_chunks(self.max_token_length) > 1:
            self._empty()  # now, so that padding a batch later needs no encoder

    def get(self, captions: Sequence[str], device: torch.device | str | None = None,
            dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        captions = list(captions)
        missing = list(dict.fromkeys(c for c in captions if c not in self._store))
        self.hits += len(captions) - sum(captions.count(c) for c in missing)
        store = self._store
        if missing:
            new = self._encode(missing)
            if self.keep_new:
                self._store.update(new)
            else:
                store = {**self._store, **new}
        embeds = [store[c][0] for c in captions]
        length = max(e.shape[0] for e in embeds)
        if any(e.shape[0] < length for e in embeds):
            empty = self._empty()
            embeds = [torch.cat([e, *[empty] * ((length - e.shape[0]) // CHUNK_LENGTH)]) for e in embeds]
        pooled = torch.stack([store[c][1] for c in captions]).to(device=device, dtype=dtype)
        return torch.stack(embeds).to(device=device, dtype=dtype), pooled

    def _empty(self) -> torch.Tensor:
        """The empty prompt's chunk [77, D], what a shorter caption is padded with."""
        if self._empty_chunk is None:
            with torch.no_grad():
                self._empty_chunk = encode_prompts(self.tokenizers, self.text_encoders, [""])[0][0].cpu()
        return self._empty_chunk

    @torch.no_grad()
    def _encode(self, captions: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        # One caption at a time would waste the batch; encoding them together pads shorter ones with
        # empty chunks, which are dropped again here (each chunk is encoded on its own, so the rest is equal).
        embeds, pooled = encode_prompts(self.tokenizers, self.text_encoders, captions, self.max_token_length)
        counts = [tokenize_chunks(t, captions, self.max_token_length) for t in self.tokenizers]
        chunks = [max(len(per_caption[i]) for per_caption in counts) for i in range(len(captions))]
        self.misses += len(captions)
        return {caption: (e[:n * CHUNK_LENGTH].clone(), p)
                for caption, n, e, p in zip(captions, chunks, embeds.cpu(), pooled.cpu())}
