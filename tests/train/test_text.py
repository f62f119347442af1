"""SDXL prompt encoding with two tiny CLIP text encoders, and the caption -> embedding cache."""

import json

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
from transformers.models.clip.tokenization_clip import bytes_to_unicode

from lora_trainer.train.text import TextEmbeddingCache, encode_prompts

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
    (embeds.sum() + pooled.sum()).backward()
    for encoder in text_encoders:
        assert encoder.text_model.encoder.layers[0].self_attn.q_proj.weight.grad is not None
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
