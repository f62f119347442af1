"""Training settings: one frozen, validated dataclass whose field names are the kohya_ss GUI's JSON keys.

Using kohya's names means a user's kohya_ss JSON mostly reads as-is (see `kohya_import.py` for the
tolerant import) and our own JSON files look familiar to anyone who has used that GUI. Our own format is
strict: unknown keys and wrong types are errors that name the key, so a typo never passes silently.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import shlex
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_trainer.captions.encoding import CaptionFileError, decode_text
from lora_trainer.fsutil import write_json_atomic

OPTIMIZERS = ("AdamW", "AdamW8bit", "Adafactor", "Prodigy", "AdamWScheduleFree")
# The keyword arguments each optimizer's constructor takes besides `params` and `lr` (the trainer passes
# those itself), so a wrong optimizer_args key is refused when the config is read, not with a TypeError at
# the first step. Kept here as a table because config/ must not import torch; tests/config checks it against
# the installed optimizers' signatures (torch.optim.AdamW, transformers' Adafactor, bitsandbytes'
# AdamW8bit, prodigyopt's Prodigy).
OPTIMIZER_ARGS: dict[str, tuple[str, ...]] = {
    "AdamW": ("betas", "eps", "weight_decay", "amsgrad", "maximize", "foreach", "capturable", "differentiable",
              "fused"),
    "AdamW8bit": ("betas", "eps", "weight_decay", "amsgrad", "optim_bits", "args", "min_8bit_size",
                  "percentile_clipping", "block_wise", "is_paged"),
    "Adafactor": ("eps", "clip_threshold", "decay_rate", "beta1", "weight_decay", "scale_parameter",
                  "relative_step", "warmup_init"),
    "Prodigy": ("betas", "beta3", "eps", "weight_decay", "decouple", "use_bias_correction", "safeguard_warmup",
                "d0", "d_coef", "growth_rate", "fsdp_in_use", "slice_p"),
    # warmup_steps is not here: lr_warmup / lr_warmup_steps set it.
    "AdamWScheduleFree": ("betas", "eps", "weight_decay", "r", "weight_lr_power", "foreach"),
}
# Optimizers that schedule themselves: the lr_scheduler must be constant (its warmup goes to the optimizer).
SELF_SCHEDULING_OPTIMIZERS = ("AdamWScheduleFree",)
# kohya_ss GUI's LoRA_type values we train. LoCon adds the convolutions (conv_dim); LoHa and LoKr are
# LyCORIS's Hadamard and Kronecker products; dora_wd adds DoRA's magnitude to Standard and LoCon.
NETWORK_TYPES = ("Standard", "LyCORIS/LoCon", "LyCORIS/LoHa", "LyCORIS/LoKr")
# Seeds go to torch.manual_seed and random.Random, and (in kohya's sd-scripts, which reads our files too)
# to numpy, whose limit is the smallest: 2^32 - 1.
MAX_SEED = 2**32 - 1
LR_SCHEDULERS = (
    "constant", "constant_with_warmup", "cosine", "cosine_with_restarts", "linear", "polynomial", "adafactor",
)
MIXED_PRECISIONS = ("no", "fp16", "bf16")
SAVE_PRECISIONS = ("fp16", "bf16", "float")
ATTENTIONS = ("none", "sdpa", "xformers")
LOSS_TYPES = ("l2", "huber", "smooth_l1")
HUBER_SCHEDULES = ("constant", "exponential", "snr")
EMA_SAVES = ("instead", "alongside")
MAX_TOKEN_LENGTHS = (75, 150, 225)  # CLIP chunks of 75 tokens, as kohya and the WebUIs encode long prompts
# Optimizers that can step fp16 weights: Adafactor computes in fp32, bitsandbytes' AdamW8bit keeps its
# own state; torch's AdamW and Prodigy compute in the weights' dtype, where their epsilon is 0.
FULL_FP16_OPTIMIZERS = ("Adafactor", "AdamW8bit")

# SDXL's U-Net halves the latent twice (VAE factor 8 x 4): any other image side fails at the skip
# connections, so sizes and bucket steps must be multiples of 32 (sd-scripts warns the same for SDXL).
SIZE_MULTIPLE = 32


class ConfigError(ValueError):
    """A setting is wrong; the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class TrainConfig:
    # --- paths ---
    pretrained_model_name_or_path: str = ""  # single-file .safetensors, diffusers folder or hub id
    vae: str = ""  # optional VAE file; "" = the checkpoint's own VAE
    train_data_dir: str = ""  # the folder holding `<repeats>_<name>/` subfolders
    output_dir: str = ""
    logging_dir: str = ""
    output_name: str = "lora"
    sdxl: bool = True  # kept so kohya files read as-is; only SDXL is supported
    # --- network ---
    network_dim: int = 32
    network_alpha: float = 16.0
    network_train_unet_only: bool = False
    LoRA_type: str = "Standard"  # kohya_ss's key: Standard, LyCORIS/LoCon, LyCORIS/LoHa, LyCORIS/LoKr
    conv_dim: int = 0  # rank for the U-Net's convolutions (ResNet, down/upsamplers); 0 = not trained
    conv_alpha: float = 1.0
    dora_wd: bool = False  # DoRA: a learned magnitude per output channel (Standard and LoCon)
    factor: int = -1  # LoKr: the Kronecker factor's size; -1 = as square as the layer allows
    # --- learning ---
    learning_rate: float = 1e-4
    unet_lr: float | None = None  # None = learning_rate
    text_encoder_lr: float | None = None  # None = learning_rate; 0 = do not train the text encoders
    loraplus_lr_ratio: float = 0.0  # LoRA+: the up weights learn this many times faster; 0 = off, 16 usual
    optimizer: str = "AdamW"
    optimizer_args: str = ""  # kohya style "key=value key=value", values are Python literals
    lr_scheduler: str = "constant"
    lr_warmup: int = 0  # percent of the total steps (kohya GUI)
    lr_warmup_steps: int = 0  # absolute; use this or lr_warmup, not both
    lr_scheduler_num_cycles: int = 1
    lr_scheduler_power: float = 1.0
    max_grad_norm: float = 1.0  # 0 = no clipping
    # --- run ---
    max_train_epochs: int = 10
    max_train_steps: int = 0  # 0 = max_train_epochs decides
    train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    seed: int = 42
    save_every_n_epochs: int = 1
    mixed_precision: str = "bf16"
    full_bf16: bool = False
    full_fp16: bool = False
    save_precision: str = "fp16"
    gradient_checkpointing: bool = False
    fp8_base: bool = False  # the frozen U-Net weights stored in float8 (half of bf16), upcast per layer
    ema_decay: float = 0.0  # an exponential moving average of the LoRA weights; 0 = off, 0.99-0.999 usual
    ema_update_every: int = 1  # optimizer steps between EMA updates
    ema_save: str = "instead"  # "instead": the saved files hold the EMA; "alongside": also <name>_ema-NNNNNN
    xformers: str = "sdpa"  # attention: none, sdpa, xformers (the trainer may run xformers as sdpa)
    sdxl_no_half_vae: bool = True
    noise_offset: float = 0.0
    multires_noise_iterations: int = 0  # 0 = off; 6-10 is usual (kohya's key)
    multires_noise_discount: float = 0.3
    min_snr_gamma: float = 0.0
    debiased_estimation_loss: bool = False
    loss_type: str = "l2"  # l2, huber, smooth_l1
    huber_schedule: str = "snr"  # constant, exponential, snr (how huber_c follows the timestep)
    huber_c: float = 0.1
    # --- data ---
    caption_extension: str = ".txt"
    shuffle_caption: bool = False
    keep_tokens: int = 0
    caption_dropout_rate: float = 0.0  # chance an image trains with an empty caption
    caption_dropout_every_n_epochs: int = 0  # every Nth epoch trains without captions; 0 = never
    caption_tag_dropout_rate: float = 0.0  # chance each tag after the first keep_tokens is left out
    flip_aug: bool = False
    masked_loss: bool = False  # weight the loss by <project>/masks/<stem>.png: learn the subject, not the background
    alpha_mask: bool = False  # ... by the image's alpha channel instead
    masked_loss_background: float = 0.0  # how much the background still counts (0 = not at all, 1 = fully)
    cache_latents: bool = True
    cache_latents_to_disk: bool = True
    sdxl_cache_text_encoder_outputs: bool = False
    enable_bucket: bool = True
    min_bucket_reso: int = 256
    max_bucket_reso: int = 2048
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False
    max_resolution: str = "1024,1024"  # "width,height" or one number for a square
    max_token_length: int = 75  # kohya's default; the presets use 225 (see docs/config.md)
    # --- validation ---
    validation_split: float = 0.0  # images held out: a fraction (0.1) or a count (8); 0 = none
    validation_data_dir: str = ""  # or a folder of held-out images (the <repeats>_<name>/ layout)
    validation_seed: int | None = None  # which images are held out and the validation noise; None = seed
    validate_every_n_epochs: int = 1
    training_comment: str = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = _checked_type(f.name, f.type, getattr(self, f.name))
            object.__setattr__(self, f.name, value)  # ints given for floats become floats
        for name, (is_ok, allowed) in _RULES.items():
            value = getattr(self, name)
            if value is not None and not is_ok(value):
                raise ConfigError(f"{name} = {value!r}: must be {allowed}")
        parse_resolution(self.max_resolution)
        self._check_optimizer_args()
        self._check_combinations()

    def _check_optimizer_args(self) -> None:
        accepted = OPTIMIZER_ARGS[self.optimizer]
        for key in parse_optimizer_args(self.optimizer_args):
            if key == "lr":
                raise ConfigError(f"optimizer_args = {self.optimizer_args!r}: set the learning rate with "
                                  "learning_rate (unet_lr, text_encoder_lr), not 'lr'")
            if key not in accepted:
                raise ConfigError(f"optimizer_args = {self.optimizer_args!r}: {self.optimizer} has no argument "
                                  f"{key!r}; it takes {', '.join(accepted)}")

    def _check_combinations(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(self.sdxl, "sdxl = False: only SDXL is supported")
        need(not self.full_bf16 or self.mixed_precision == "bf16",
             f"full_bf16 = True needs mixed_precision 'bf16', not {self.mixed_precision!r}")
        need(not self.full_fp16 or self.mixed_precision == "fp16",
             f"full_fp16 = True needs mixed_precision 'fp16', not {self.mixed_precision!r}")
        need(not self.full_fp16 or self.optimizer in FULL_FP16_OPTIMIZERS,
             f"full_fp16 = True keeps the LoRA weights and their optimizer state in fp16, where "
             f"{self.optimizer}'s epsilon (1e-8) rounds to 0 and a zero gradient turns a weight into NaN: "
             f"use optimizer {' or '.join(FULL_FP16_OPTIMIZERS)}, or full_fp16 = False (LoRA weights in fp32, "
             "which needs more memory), or mixed_precision 'bf16' with full_bf16 if the GPU has bf16")
        need(self.lr_scheduler != "adafactor" or self.optimizer == "Adafactor",
             f"lr_scheduler 'adafactor' needs optimizer 'Adafactor', not {self.optimizer!r}")
        need(not (self.lr_warmup and self.lr_warmup_steps),
             f"lr_warmup = {self.lr_warmup} (percent) and lr_warmup_steps = {self.lr_warmup_steps}: set only one")
        need(not (self.lr_scheduler in ("constant", "adafactor") and (self.lr_warmup or self.lr_warmup_steps)),
             f"lr_scheduler {self.lr_scheduler!r} has no warmup: set lr_warmup/lr_warmup_steps to 0 "
             "or use 'constant_with_warmup'")
        need(not (self.validation_split and self.validation_data_dir),
             f"validation_split = {self.validation_split:g} and validation_data_dir = {self.validation_data_dir!r}: "
             "hold out images from the training folder or give a folder of them, not both")
        self._check_network()
        self._check_self_scheduling()
        self._check_text_encoder_cache()
        self._check_buckets()

    def _check_network(self) -> None:
        if self.dora_wd and self.LoRA_type not in ("Standard", "LyCORIS/LoCon"):
            raise ConfigError(f"dora_wd = True works with LoRA_type 'Standard' or 'LyCORIS/LoCon', not "
                              f"{self.LoRA_type!r} (peft trains DoRA only on LoRA layers)")
        if self.factor != -1 and self.LoRA_type != "LyCORIS/LoKr":
            raise ConfigError(f"factor = {self.factor} is a LoKr setting: use LoRA_type 'LyCORIS/LoKr' or factor -1")
        if self.loraplus_lr_ratio and self.LoRA_type in ("LyCORIS/LoHa", "LyCORIS/LoKr"):
            raise ConfigError(f"loraplus_lr_ratio works on LoRA's up weights: LoRA_type {self.LoRA_type!r} has "
                              "none; set it to 0, or use 'Standard' / 'LyCORIS/LoCon'")
        if self.fp8_base and self.dora_wd:
            raise ConfigError("fp8_base = True with dora_wd = True: DoRA reads the full-precision base weights "
                              "every step; turn one of them off")

    def _check_self_scheduling(self) -> None:
        if self.optimizer in SELF_SCHEDULING_OPTIMIZERS and self.ema_decay:
            raise ConfigError(f"optimizer {self.optimizer} already averages the weights it saves: set "
                              "ema_decay = 0, or choose another optimizer for an EMA")
        if self.optimizer in SELF_SCHEDULING_OPTIMIZERS and self.lr_scheduler not in ("constant",
                                                                                       "constant_with_warmup"):
            raise ConfigError(f"optimizer {self.optimizer} schedules its own learning rate: set lr_scheduler "
                              f"'constant' (or 'constant_with_warmup'; its warmup goes to the optimizer), "
                              f"not {self.lr_scheduler!r}")

    def _check_text_encoder_cache(self) -> None:
        # Cached text-encoder outputs are computed once per caption: they cannot follow encoders that
        # are being trained, nor captions whose tag order changes every step.
        if not self.sdxl_cache_text_encoder_outputs:
            return
        if self.train_text_encoder:
            raise ConfigError(
                "sdxl_cache_text_encoder_outputs = True cannot be used while the text encoders are trained: "
                "set network_train_unet_only = True (or text_encoder_lr = 0), or turn the cache off")
        if self.shuffle_caption:
            raise ConfigError(
                "sdxl_cache_text_encoder_outputs = True cannot be used with shuffle_caption = True "
                "(the cached outputs are for one fixed tag order): turn one of them off")
        if self.caption_tag_dropout_rate:
            raise ConfigError(
                "sdxl_cache_text_encoder_outputs = True cannot be used with caption_tag_dropout_rate > 0 "
                "(the cached outputs are for the whole captions): turn one of them off")

    def _check_buckets(self) -> None:
        if self.min_bucket_reso > self.max_bucket_reso:
            raise ConfigError(
                f"min_bucket_reso = {self.min_bucket_reso} is larger than max_bucket_reso = {self.max_bucket_reso}")
        width, height = self.resolution
        if self.enable_bucket and not self.min_bucket_reso <= min(width, height):
            raise ConfigError(f"min_bucket_reso = {self.min_bucket_reso} is larger than the resolution's "
                              f"smaller side {min(width, height)} (max_resolution {self.max_resolution!r})")
        if self.enable_bucket and not max(width, height) <= self.max_bucket_reso:
            raise ConfigError(f"max_bucket_reso = {self.max_bucket_reso} is smaller than the resolution's "
                              f"larger side {max(width, height)} (max_resolution {self.max_resolution!r})")

    # --- derived values ---
    @property
    def validates(self) -> bool:
        return bool(self.validation_split or self.validation_data_dir)

    @property
    def resolution(self) -> tuple[int, int]:
        """(width, height) from max_resolution."""
        return parse_resolution(self.max_resolution)

    @property
    def unet_learning_rate(self) -> float:
        return self.learning_rate if self.unet_lr is None else self.unet_lr

    @property
    def text_encoder_learning_rate(self) -> float:
        return self.learning_rate if self.text_encoder_lr is None else self.text_encoder_lr

    @property
    def train_text_encoder(self) -> bool:
        # As kohya_ss: a text-encoder learning rate of 0 means "U-Net only".
        return not self.network_train_unet_only and self.text_encoder_learning_rate != 0

    @property
    def optimizer_kwargs(self) -> dict[str, Any]:
        """optimizer_args as keyword arguments for the optimizer (a new dict each time)."""
        return parse_optimizer_args(self.optimizer_args)

    def warmup_steps(self, total_steps: int) -> int:
        """Warmup length in optimizer steps: lr_warmup_steps, or lr_warmup percent of total_steps
        (rounded, as the kohya_ss GUI computes it)."""
        if self.lr_warmup_steps:
            return self.lr_warmup_steps
        return round(self.lr_warmup * total_steps / 100)

    # --- our JSON format ---
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Strict: unknown keys are an error naming each; missing keys take their defaults."""
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a JSON object of settings, not {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            hint = ""
            if {"LoRA_type", "epoch", "clip_skip"} & set(unknown):
                hint = " (this looks like a kohya_ss GUI file: import it with `python -m lora_trainer config --import-kohya`)"
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}{hint}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        data = read_json(path)
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save_json(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some settings changed, validated again (unknown names are errors)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})


def _checked_type(name: str, annotation: str, value: Any) -> Any:
    """The value if it has the field's type (ints accepted for floats, as JSON writes 16 for 16.0)."""
    optional = annotation.endswith("| None")
    base = annotation.removesuffix("| None").strip()
    if value is None and optional:
        return None
    if base == "bool" and isinstance(value, bool):
        return value
    if base == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base == "str" and isinstance(value, str):
        return value
    wanted = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}[base]
    if optional:
        wanted += " or null"
    raise ConfigError(f"{name} = {value!r}: must be {wanted}")


def _choice(options: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in options), "one of " + ", ".join(repr(o) for o in options)


def _at_least(low: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= low), f">= {low}"


def _above(low: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v > low), f"> {low}"


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text)


def _multiple_of_size(v: int) -> bool:
    return v > 0 and v % SIZE_MULTIPLE == 0


# Per-field range and choice rules, checked after the types (None values of optional fields are skipped).
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "output_name": ((lambda v: bool(v.strip()) and not any(c in v for c in '/\\:*?"<>|') and not _has_control(v)),
                    "a non-empty file name without / \\ : * ? \" < > | or control characters (newline, tab)"),
    "network_dim": _at_least(1),
    "network_alpha": _above(0),
    "LoRA_type": _choice(NETWORK_TYPES),
    "conv_dim": _at_least(0),
    "conv_alpha": _above(0),
    "factor": ((lambda v: v == -1 or v >= 1), "-1 (automatic) or a positive factor, e.g. 4 or 8"),
    "learning_rate": _above(0),
    "unet_lr": (lambda v: v > 0, "> 0, or null to use learning_rate"),
    "text_encoder_lr": (lambda v: v >= 0, ">= 0 (0 = do not train the text encoders), or null to use learning_rate"),
    "optimizer": _choice(OPTIMIZERS),
    "lr_scheduler": _choice(LR_SCHEDULERS),
    "lr_warmup": ((lambda v: 0 <= v <= 100), "a percentage from 0 to 100"),
    "lr_warmup_steps": _at_least(0),
    "lr_scheduler_num_cycles": _at_least(1),
    "lr_scheduler_power": _above(0),
    "max_grad_norm": _at_least(0),
    "max_train_epochs": _at_least(1),
    "max_train_steps": _at_least(0),
    "train_batch_size": _at_least(1),
    "gradient_accumulation_steps": _at_least(1),
    "seed": ((lambda v: 0 <= v <= MAX_SEED), f"from 0 to {MAX_SEED} (2^32 - 1)"),
    "save_every_n_epochs": _at_least(1),
    "mixed_precision": _choice(MIXED_PRECISIONS),
    "save_precision": _choice(SAVE_PRECISIONS),
    "xformers": _choice(ATTENTIONS),
    "noise_offset": ((lambda v: 0 <= v <= 1), "from 0 to 1"),
    "min_snr_gamma": _at_least(0),
    "multires_noise_iterations": _at_least(0),
    "multires_noise_discount": ((lambda v: 0 < v <= 1), "above 0, at most 1"),
    "loss_type": _choice(LOSS_TYPES),
    "huber_schedule": _choice(HUBER_SCHEDULES),
    "huber_c": ((lambda v: 0 < v <= 1), "above 0, at most 1"),
    "caption_dropout_rate": ((lambda v: 0 <= v <= 1), "from 0 to 1"),
    "caption_dropout_every_n_epochs": _at_least(0),
    "caption_tag_dropout_rate": ((lambda v: 0 <= v <= 1), "from 0 to 1"),
    "validation_split": ((lambda v: 0 <= v < 1 or float(v).is_integer()),
                         "a fraction of the images below 1 (0.1 = 10%), a whole number of images (8), or 0"),
    "validation_seed": ((lambda v: 0 <= v <= MAX_SEED), f"from 0 to {MAX_SEED} (2^32 - 1), or null to use seed"),
    "validate_every_n_epochs": _at_least(1),
    "loraplus_lr_ratio": ((lambda v: v == 0 or v >= 1), "0 (off) or at least 1, e.g. 16"),
    "masked_loss_background": ((lambda v: 0 <= v <= 1), "from 0 (the background does not count) to 1"),
    "ema_decay": ((lambda v: 0 <= v < 1), "from 0 (off) to below 1, e.g. 0.999"),
    "ema_update_every": _at_least(1),
    "ema_save": _choice(EMA_SAVES),
    "caption_extension": ((lambda v: len(v) > 1 and v.startswith(".")), "an extension starting with '.', e.g. '.txt'"),
    "keep_tokens": _at_least(0),
    "min_bucket_reso": (_multiple_of_size, f"a positive multiple of {SIZE_MULTIPLE}"),
    "max_bucket_reso": (_multiple_of_size, f"a positive multiple of {SIZE_MULTIPLE}"),
    "bucket_reso_steps": (_multiple_of_size, f"a positive multiple of {SIZE_MULTIPLE} (SDXL needs it; 64 is usual)"),
    "max_token_length": ((lambda v: v in MAX_TOKEN_LENGTHS),
                         "one of 75, 150, 225 (captions are encoded in chunks of 75 CLIP tokens)"),
}


# The paths a run cannot start without, with what each one is (for the message naming it).
REQUIRED_PATHS = {
    "pretrained_model_name_or_path": "the base model: an SDXL .safetensors file, a diffusers folder or a hub id",
    "train_data_dir": "the img/ folder that holds the <repeats>_<name>/ image folders",
    "output_dir": "the folder for the LoRA files (model/)",
    "logging_dir": "the folder for the logs (log/)",
}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_MODEL_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def check_paths(cfg: TrainConfig) -> list[str]:
    """What is wrong with the config's paths before a run may start, one message per key (empty
    list: nothing). Empty required paths (a run would write into the current folder), a model that
    is neither a file, a folder nor a hub id `owner/name`, a missing train_data_dir or vae. Relative
    paths are taken from the current folder, as the trainer takes them."""
    problems = []
    for key, what in REQUIRED_PATHS.items():
        value = getattr(cfg, key)
        if not value.strip():
            problems.append(f"{key} is empty: set {what}")
        elif key != "pretrained_model_name_or_path" and value.startswith("~"):
            # the model loader expands "~"; the dataset and output folders are taken literally
            problems.append(f"{key} = {value!r}: write the full path (a leading '~' is not expanded here)")
    model = cfg.pretrained_model_name_or_path
    if model.strip() and not Path(model).expanduser().exists() and not _looks_like_hub_id(model):
        problems.append(f"pretrained_model_name_or_path = {model!r}: no such file or folder "
                        "(and not a hub id such as 'stabilityai/stable-diffusion-xl-base-1.0')")
    data = cfg.train_data_dir
    if data.strip() and not data.startswith("~") and not Path(data).is_dir():
        problems.append(f"train_data_dir = {data!r}: no such folder (the training images go in "
                        f"{Path(data) / '<repeats>_<name>'}, each with its .txt caption)")
    if cfg.vae.strip() and not Path(cfg.vae).expanduser().exists():
        problems.append(f"vae = {cfg.vae!r}: no such file or folder")
    held_out = cfg.validation_data_dir
    if held_out.strip() and not Path(held_out).is_dir():
        problems.append(f"validation_data_dir = {held_out!r}: no such folder (held-out images go in "
                        f"{Path(held_out) / '<repeats>_<name>'}, as in train_data_dir)")
    return problems


def _looks_like_hub_id(text: str) -> bool:
    return _HUB_ID.fullmatch(text) is not None and not text.lower().endswith(_MODEL_FILE_SUFFIXES)


def read_json(path: Path) -> Any:
    """A JSON file's content, or a ConfigError naming the file and what is wrong with it."""
    try:
        return json.loads(decode_text(path.read_bytes(), path, hint="save it as UTF-8"))
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from e
    except CaptionFileError as e:
        raise ConfigError(f"cannot read config {e}") from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from e


def parse_resolution(text: str) -> tuple[int, int]:
    """"1024,1024" or "1024" -> (width, height)."""
    parts = [p.strip() for p in text.split(",")]
    allowed = f"'width,height' or one size, each a positive multiple of {SIZE_MULTIPLE}, e.g. '1024,1024'"
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise ConfigError(f"max_resolution = {text!r}: must be {allowed}")
    sizes = [int(p) for p in parts]
    if not all(_multiple_of_size(s) for s in sizes):
        raise ConfigError(f"max_resolution = {text!r}: must be {allowed}")
    return (sizes[0], sizes[-1])


def parse_optimizer_args(text: str) -> dict[str, Any]:
    """kohya's optimizer_args, "scale_parameter=False betas=0.9,0.99" -> {"scale_parameter": False,
    "betas": (0.9, 0.99)}. Tokens may be quoted as the kohya GUI writes them ('"d0=1e-5" "decouple=True"')."""
    try:
        tokens = shlex.split(text)
    except ValueError as e:
        raise ConfigError(f"optimizer_args = {text!r}: {e}") from e
    kwargs: dict[str, Any] = {}
    for token in tokens:
        key, sep, raw = token.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"optimizer_args = {text!r}: {token!r} is not key=value")
        try:
            kwargs[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError) as e:
            raise ConfigError(
                f"optimizer_args = {text!r}: the value of {key!r}, {raw!r}, is not a Python literal "
                "(a number, True/False/None, a tuple like 0.9,0.99, or a quoted string)") from e
    return kwargs
