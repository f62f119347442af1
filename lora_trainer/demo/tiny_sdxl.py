"""A tiny random-weight model with the SDXL topology, built offline in seconds.

Used by the tests and by the demo command. It has what makes SDXL SDXL for a LoRA trainer: the
three-level U-Net (no attention in the first down / last up level, two layers per block, deeper
transformer stacks further down, `text_time` extra embedding), two CLIP text encoders of
different widths whose outputs are concatenated for cross-attention, a four-level VAE (8x
downscale) and CLIP tokenizers. Saved three ways, as users have real models:

- `diffusers_dir`: a diffusers folder (`StableDiffusionXLPipeline.from_pretrained`);
- `config_dir`: the same folder without weights, like Forge's
  `backend/huggingface/stabilityai/stable-diffusion-xl-base-1.0`;
- `single_file`: one `.safetensors` checkpoint in the original SGM key layout, what a Forge
  user has in `models/Stable-diffusion`.

`existing_tiny_sdxl` finds a model an earlier build left complete (the demo reuses it, so the
trainer's latent cache, keyed by the model file, is reused too).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from lora_trainer.fsutil import write_json_atomic
from lora_trainer.train.sgm_names import sdxl_single_file_state_dict

SEED = 20240607
BUILT_MARKER = "tiny_sdxl.json"  # written last by a build: what it was built from
TE1_HIDDEN = 32  # the two encoders must differ in width: diffusers' single-file loader
TE2_HIDDEN = 48  # tells them apart by shape and silently swaps equal ones
ADD_TIME_EMBED_DIM = 8
TOKEN_LENGTH = 77
BPE_MERGES = 300

# Words the demo captions and typical character captions use; the BPE merges are learnt on them.
_CORPUS = """
a photo of woman man girl boy person portrait face close up upper body full body standing sitting
smiling looking at viewer solo simple white grey black background red green blue yellow orange
purple pink brown cyan magenta hair long short eyes shirt dress jacket circle square triangle star
shape shapes colour color colors bright dark light outdoors indoors studio realistic photograph
mylora character 1girl 1boy blonde hat glasses earrings necklace wearing holding the and with in on
""".split()


@dataclass(frozen=True)
class TinySDXL:
    diffusers_dir: Path
    single_file: Path
    config_dir: Path


def build_tiny_sdxl(out_dir: Path, seed: int = SEED) -> TinySDXL:
    """Build the tiny model under `out_dir` (created if missing) and return where it lies."""
    from diffusers import StableDiffusionXLPipeline

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / BUILT_MARKER).unlink(missing_ok=True)  # incomplete until this build ends
    tokenizer_1, tokenizer_2 = _make_tokenizers(out_dir / "_tokenizer_source")
    vocab_size = len(tokenizer_1)
    pipe = StableDiffusionXLPipeline(
        vae=_make_vae(seed),
        text_encoder=_make_clip_l(seed + 1, vocab_size, tokenizer_1),
        text_encoder_2=_make_clip_g(seed + 2, vocab_size, tokenizer_2),
        tokenizer=tokenizer_1,
        tokenizer_2=tokenizer_2,
        unet=_make_unet(seed + 3),
        scheduler=_make_scheduler(),
    )
    diffusers_dir = out_dir / "diffusers"
    pipe.save_pretrained(diffusers_dir, safe_serialization=True)
    shutil.rmtree(out_dir / "_tokenizer_source")
    config_dir = out_dir / "config"
    _copy_without_weights(diffusers_dir, config_dir)
    single_file = out_dir / "tiny_sdxl.safetensors"
    state = sdxl_single_file_state_dict(pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2)
    save_file({k: v.contiguous() for k, v in state.items()}, str(single_file), metadata={"format": "pt"})
    write_json_atomic(out_dir / BUILT_MARKER, _build_identity(seed))
    return _layout(out_dir)


def existing_tiny_sdxl(out_dir: Path, seed: int = SEED) -> TinySDXL | None:
    """The model a finished `build_tiny_sdxl(out_dir, seed)` left there, or None when there is none,
    it is incomplete (a build stopped half-way, a file deleted) or this code would build another."""
    out_dir = Path(out_dir)
    try:
        built = json.loads((out_dir / BUILT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    model = _layout(out_dir)
    complete = (model.single_file.is_file() and (model.config_dir / "model_index.json").is_file()
                and (model.diffusers_dir / "model_index.json").is_file())
    return model if complete and built == _build_identity(seed) else None


def _layout(out_dir: Path) -> TinySDXL:
    return TinySDXL(diffusers_dir=out_dir / "diffusers", single_file=out_dir / "tiny_sdxl.safetensors",
                    config_dir=out_dir / "config")


def _build_identity(seed: int) -> dict:
    """What the built files depend on: the seed, this file's code and diffusers' save format."""
    import diffusers

    return {"seed": seed, "builder": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16],
            "diffusers": diffusers.__version__}


# ---------------------------------------------------------------------------------------------
# Models


def _make_unet(seed: int):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 128),
        layers_per_block=2,
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(2, 4, 8),  # diffusers' name for the number of heads, as in SDXL's config
        norm_num_groups=32,
        cross_attention_dim=TE1_HIDDEN + TE2_HIDDEN,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=ADD_TIME_EMBED_DIM,
        # six size/crop numbers, each embedded, plus the pooled bigG output
        projection_class_embeddings_input_dim=6 * ADD_TIME_EMBED_DIM + TE2_HIDDEN,
    )


def _make_vae(seed: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=64,
        scaling_factor=0.13025,
        force_upcast=True,
    )


def _clip_config(hidden: int, layers: int, heads: int, act: str, vocab_size: int, tokenizer):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        projection_dim=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=TOKEN_LENGTH,
        hidden_act=act,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _make_clip_l(seed: int, vocab_size: int, tokenizer):
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(_clip_config(TE1_HIDDEN, 2, 4, "quick_gelu", vocab_size, tokenizer))


def _make_clip_g(seed: int, vocab_size: int, tokenizer):
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(_clip_config(TE2_HIDDEN, 3, 4, "gelu", vocab_size, tokenizer))


def _make_scheduler():
    from diffusers import EulerDiscreteScheduler

    # SDXL base's scheduler settings
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        interpolation_type="linear",
        timestep_spacing="leading",
        steps_offset=1,
        use_karras_sigmas=False,
    )


def _copy_without_weights(src: Path, dst: Path) -> None:
    weights = ("*.safetensors", "*.bin", "*.ckpt", "*.pt")
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*weights))


# ---------------------------------------------------------------------------------------------
# Tokenizer: CLIP's byte-level BPE, with a small vocabulary learnt here


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _learn_merges(words: list[str], count: int) -> list[tuple[str, str]]:
    """Plain BPE: repeatedly merge the most frequent adjacent pair (ties by text, deterministic)."""
    byte_chars = _bytes_to_unicode()
    spelled = Counter()
    for word in words:
        symbols = [byte_chars[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"  # CLIP marks the end of a word on its last symbol
        spelled[tuple(symbols)] += 1
    merges = []
    for _ in range(count):
        pairs = Counter()
        for symbols, freq in spelled.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += freq
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        spelled = Counter({_merge(symbols, best): freq for symbols, freq in spelled.items()})
    return merges


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return tuple(merged)


def _write_bpe_files(folder: Path) -> tuple[Path, Path]:
    """vocab.json + merges.txt in CLIP's order: bytes, bytes+</w>, merges, then the two specials
    (so the end-of-text token has the highest id, as CLIP's pooling expects)."""
    folder.mkdir(parents=True, exist_ok=True)
    byte_symbols = list(_bytes_to_unicode().values())
    merges = _learn_merges(_CORPUS, BPE_MERGES)
    tokens = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(p) for p in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(p) for p in merges) + "\n", encoding="utf-8")
    return vocab_file, merges_file


def _make_tokenizers(folder: Path):
    from transformers import CLIPTokenizer

    vocab_file, merges_file = _write_bpe_files(folder)
    common = dict(vocab_file=str(vocab_file), merges_file=str(merges_file), model_max_length=TOKEN_LENGTH)
    # SDXL pads the first tokenizer with end-of-text and the second with "!"
    return CLIPTokenizer(**common), CLIPTokenizer(pad_token="!", **common)
