"""SDXL prompt encoding with two tiny CLIP text encoders, and the caption -> embedding cache."""

import json

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
from transformers.models.clip.tokenization_clip import bytes_to_unicode

from lora_trainer.train.buckets import Bucketer, bucket_report
from lora_trainer.train.text import (
    CHUNK_LENGTH,
    TextEmbeddingCache,
    count_cut_tokens,
    encode_prompts,
    split_into_chunks,
    tokenize_chunks,
)

TE1_DIM, TE2_DIM, PROJ_DIM = 32, 48, 24  # unequal, like CLIP-L (768) and bigG (1280)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """Byte-level CLIP tokenizers with no merges: every character is a token."""
    folder = tmp_path_factory.mktemp("tokenizer")
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    files = dict(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))
    # SDXL's second tokenizer pads with "!" instead of the end token.
    return CLIPTokenizer(**files), CLIPTokenizer(**files, pad_token="!")


@pytest.fixture(scope="module")
def text_encoders(tokenizers):
    torch.manual_seed(0)
    common = dict(vocab_size=len(tokenizers[0]), num_hidden_layers=3, num_attention_heads=4,
                  max_position_embeddings=77, bos_token_id=tokenizers[0].bos_token_id,
                  eos_token_id=tokenizers[0].eos_token_id)
    te1 = CLIPTextModel(CLIPTextConfig(hidden_size=TE1_DIM, intermediate_size=64, **common))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=TE2_DIM, intermediate_size=96,
                                                     projection_dim=PROJ_DIM, **common))
    return te1.eval(), te2.eval()


CAPTIONS = ["myLoRA, 1girl, red hair", "myLoRA, close-up, outdoors, " + "very long caption " * 20]


def test_shapes_follow_sdxl(tokenizers, text_encoders):
    with torch.no_grad():
        embeds, pooled = encode_prompts(tokenizers, text_encoders, CAPTIONS)
    assert embeds.shape == (2, 77, TE1_DIM + TE2_DIM)  # the long caption is truncated to 77
    assert pooled.shape == (2, PROJ_DIM)
    # The penultimate layer of each encoder, side by side.
    ids = tokenizers[1](CAPTIONS, padding="max_length", max_length=77, truncation=True,
                        return_tensors="pt").input_ids
    with torch.no_grad():
        out = text_encoders[1](ids, output_hidden_states=True)
    torch.testing.assert_close(embeds[..., TE1_DIM:], out.hidden_states[-2])
    torch.testing.assert_close(pooled, out.text_embeds)


def test_gradients_reach_a_trained_text_encoder(tokenizers, text_encoders):
    embeds, pooled = encode_prompts(tokenizers, text_encoders, CAPTIONS[:1])
    (embeds.square().sum() + pooled.square().sum()).backward()
    for encoder in text_encoders:
        grad = encoder.text_model.encoder.layers[0].self_attn.q_proj.weight.grad
        assert grad is not None and grad.abs().sum() > 0, "a zero gradient would train nothing"
        encoder.zero_grad(set_to_none=True)


def test_cache_matches_uncached_and_encodes_each_caption_once(tokenizers, text_encoders):
    cache = TextEmbeddingCache(tokenizers, text_encoders)
    cache.prepare(CAPTIONS + CAPTIONS[:1])
    assert cache.misses == 2 and len(cache) == 2
    embeds, pooled = cache.get([CAPTIONS[1], CAPTIONS[0], CAPTIONS[1]])
    assert cache.misses == 2 and cache.hits == 3
    assert not embeds.requires_grad
    with torch.no_grad():
        direct = encode_prompts(tokenizers, text_encoders, [CAPTIONS[1], CAPTIONS[0], CAPTIONS[1]])
    torch.testing.assert_close(embeds, direct[0])
    torch.testing.assert_close(pooled, direct[1])
    new_embeds, _ = cache.get(["a caption never prepared"], dtype=torch.float16)
    assert cache.misses == 3 and new_embeds.dtype == torch.float16 and new_embeds.shape == (1, 77, 80)


# --- long captions: 75-token chunks, as Forge encodes long prompts ------------------------------------

def words(count: int, start: int = 0) -> str:
    """`count` one-letter words: exactly `count` tokens with these tokenizers, no commas."""
    return " ".join(chr(ord("a") + (start + i) % 26) for i in range(count))


D = TE1_DIM + TE2_DIM


def encode(tokenizers, text_encoders, captions, max_token_length):
    with torch.no_grad():
        return encode_prompts(tokenizers, text_encoders, captions, max_token_length)


def test_a_100_token_caption_is_two_chunks_at_150_and_cut_at_75(tokenizers, text_encoders):
    caption = words(100)
    assert count_cut_tokens(tokenizers[0], [caption], 150) == [0]
    assert count_cut_tokens(tokenizers[0], [caption], 75) == [25]
    assert count_cut_tokens(tokenizers[0], [caption, words(10)], 225) == [0, 0]

    long, long_pooled = encode(tokenizers, text_encoders, [caption], 150)
    cut, cut_pooled = encode(tokenizers, text_encoders, [caption], 75)
    assert long.shape == (1, 154, D) and cut.shape == (1, 77, D)
    torch.testing.assert_close(long[:, :77], cut)  # the first chunk is the 75-token encoding
    torch.testing.assert_close(long_pooled, cut_pooled)  # the pool comes from the first chunk
    # The second chunk carries tokens 76-100, not padding: it differs from the empty prompt's chunk,
    # and a word past token 75 changes it (and only it).
    empty, _ = encode(tokenizers, text_encoders, [""], 150)
    assert empty.shape == (1, 77, D)
    assert (long[0, 77:] - empty[0]).abs().max() > 1e-3
    changed, _ = encode(tokenizers, text_encoders, [words(90) + " z " + words(9, 91)], 150)
    assert (changed[0, 77:] - long[0, 77:]).abs().max() > 1e-3
    torch.testing.assert_close(changed[:, :77], long[:, :77])
    # The chunk ids are <BOS> 75 tokens <EOS>, then <BOS> 25 tokens <EOS> and padding.
    first, second = tokenize_chunks(tokenizers[1], [caption], 150)[0]
    bos, eos, pad = tokenizers[1].bos_token_id, tokenizers[1].eos_token_id, tokenizers[1].pad_token_id
    assert len(first) == len(second) == CHUNK_LENGTH
    assert (first[0], first[76], second[0], second[26], second[27:]) == (bos, eos, bos, eos, [pad] * 50)
    # Nothing is longer than three chunks: 225 still gives two for this caption.
    assert encode(tokenizers, text_encoders, [caption], 225)[0].shape == (1, 154, D)


def test_short_captions_are_one_chunk_and_pad_a_batch_with_the_empty_prompt(tokenizers, text_encoders):
    short, long = CAPTIONS[0], words(100)
    alone, alone_pooled = encode(tokenizers, text_encoders, [short], 150)
    assert alone.shape == (1, 77, D)  # as many chunks as the caption needs
    torch.testing.assert_close(alone, encode(tokenizers, text_encoders, [short], 75)[0])
    batch, batch_pooled = encode(tokenizers, text_encoders, [short, long], 150)
    assert batch.shape == (2, 154, D)
    torch.testing.assert_close(batch[0, :77], alone[0])
    torch.testing.assert_close(batch[0, 77:], encode(tokenizers, text_encoders, [""], 150)[0][0])
    torch.testing.assert_close(batch_pooled[0], alone_pooled[0])
    torch.testing.assert_close(batch[1:], encode(tokenizers, text_encoders, [long], 150)[0])


def test_a_full_chunk_ends_after_its_last_comma_as_in_the_webui(tokenizers):
    comma = tokenizers[0].get_vocab()[",</w>"]
    # 70 words, a comma (token 71), 14 more words: the chunk fills at 75 with the comma 4 tokens back,
    # so the chunk ends after the comma and the tag after it moves to the next chunk whole.
    ids = tokenizers[0](words(70) + ", " + words(14), add_special_tokens=False).input_ids
    assert len(ids) == 85 and ids[70] == comma
    assert [len(c) for c in split_into_chunks(ids, comma)] == [71, 14]
    assert count_cut_tokens(tokenizers[0], [words(70) + ", " + words(14)], 75) == [14]
    # A comma further back than 20 tokens does not move the cut.
    far = words(40) + ", " + words(44)
    assert [len(c) for c in split_into_chunks(tokenizers[0](far, add_special_tokens=False).input_ids, comma)] \
        == [75, 10]
    assert split_into_chunks([], comma) == [[]]


def test_cache_keeps_long_captions_whole_and_pads_like_a_batch(tokenizers, text_encoders):
    long, short = words(100), CAPTIONS[0]
    cache = TextEmbeddingCache(tokenizers, text_encoders, max_token_length=150)
    cache.prepare([long, short])
    calls = []
    hooks = [e.register_forward_hook(lambda *args: calls.append(1)) for e in text_encoders]
    try:
        embeds, pooled = cache.get([short, long])
    finally:
        for hook in hooks:
            hook.remove()
    assert not calls, "padding with the empty chunk needs no encoder once prepared"
    direct = encode(tokenizers, text_encoders, [short, long], 150)
    assert embeds.shape == (2, 154, D)
    torch.testing.assert_close(embeds, direct[0])
    torch.testing.assert_close(pooled, direct[1])
    assert cache.get([short])[0].shape == (1, 77, D)
    assert (cache.misses, len(cache)) == (2, 2)


def test_bucket_report_lists_cut_captions_with_their_tokens():
    geometries = [Bucketer((64, 64), enable_bucket=False).assign((64, 64))] * 3
    report = bucket_report(geometries, [1, 1, 1], [("1_a/004.txt", 12), ("1_a/001.txt", 3)], 75)
    assert "captions longer than 75 tokens: 2 (cut):\n  1_a/004.txt (+12 tokens)\n  1_a/001.txt (+3 tokens)" \
        in report
    assert bucket_report(geometries, [1, 1, 1], [], 225).endswith("captions longer than 225 tokens: none")
    assert "captions" not in bucket_report(geometries, [1, 1, 1])


def test_a_cache_that_keeps_no_new_captions_encodes_them_alike_and_does_not_grow(tokenizers, text_encoders):
    cache = TextEmbeddingCache(tokenizers, text_encoders)
    cache.prepare(CAPTIONS)
    cache.keep_new = False  # shuffled or dropped tags: a new caption each step
    embeds, pooled = cache.get(["a shuffled, caption", CAPTIONS[0]])
    with torch.no_grad():
        direct = encode_prompts(tokenizers, text_encoders, ["a shuffled, caption", CAPTIONS[0]])
    torch.testing.assert_close(embeds, direct[0])
    torch.testing.assert_close(pooled, direct[1])
    assert len(cache) == len(CAPTIONS) and "a shuffled, caption" not in cache._store
