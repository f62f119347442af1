"""Import a kohya_ss GUI JSON: tolerant where our own format is strict.

The kohya_ss GUI writes numbers as strings ("max_train_epochs": "50", "seed": ""), uses "" for "not set",
has synonyms ("epoch" vs "max_train_epochs", "xformers": true vs "sdpa") and holds many settings this
trainer does not have. Everything we apply becomes a validated `TrainConfig`; every key we do not apply
is listed in `KohyaImport.ignored` with a short reason, so nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_trainer.config.settings import (
    ATTENTIONS,
    LR_SCHEDULERS,
    MAX_TOKEN_LENGTHS,
    OPTIMIZER_ARGS,
    OPTIMIZERS,
    SIZE_MULTIPLE,
    ConfigError,
    TrainConfig,
    read_json,
)

_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(TrainConfig)}

# Optimizers kohya offers that we do not: the closest one we have. D-Adaptation and Prodigy share the
# "learning rate 1.0, the optimizer finds the step size" convention, so their learning rates carry over;
# any other optimizer falls back to AdamW with the file's learning rates.
_OPTIMIZER_SUBSTITUTES = {
    "DAdaptAdam": "Prodigy", "DAdaptAdamPreprint": "Prodigy", "DAdaptation": "Prodigy",
    "DAdaptAdaGrad": "Prodigy", "DAdaptAdan": "Prodigy", "DAdaptLion": "Prodigy", "DAdaptSGD": "Prodigy",
    "PagedAdamW8bit": "AdamW8bit", "PagedAdamW": "AdamW", "PagedAdamW32bit": "AdamW",
}
# Keyword arguments of prodigyopt.Prodigy: D-Adaptation's other arguments would make it fail.

_REASON_GROUPS = {
    "LoCon/LyCORIS only": (
        "LyCORIS_preset", "conv_dims", "conv_alphas", "conv_block_dims",
        "conv_block_alphas", "use_cp", "use_tucker", "use_scalar", "decompose_both", "train_norm",
        "rescaled", "constrain", "rank_dropout_scale", "train_on_input", "bypass_mode"),
    "DyLoRA only": ("unit",),
    "not supported: block-wise dims and learning rates": (
        "block_dims", "block_alphas", "block_lr_zero_threshold", "down_lr_weight", "mid_lr_weight",
        "up_lr_weight"),
    "not supported: network dropout": ("network_dropout", "rank_dropout", "module_dropout"),
    "not supported: this augmentation": ("color_aug", "random_crop"),
    "not supported: adaptive noise scale": ("adaptive_noise_scale",),
    "not supported: separate LoRA+ ratios (loraplus_lr_ratio applies to the U-Net and the text encoders)": (
        "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio"),
    "SD1/2 only": ("v2", "v_parameterization", "clip_skip", "scale_v_pred_loss_like_noise_pred",
                   "v_pred_like_loss", "no_token_padding"),
    "launcher setting: run `accelerate launch --num_processes N python -m lora_trainer train ...`": (
        "num_processes", "num_machines", "multi_gpu", "gpu_ids", "num_cpu_threads_per_process",
        "main_process_port", "dynamo_backend"),
    "no effect in this trainer": (
        "max_data_loader_n_workers", "persistent_data_loader_workers", "vae_batch_size", "lowram"),
    "no effect in this trainer (PyTorch SDPA attention is already memory-efficient)": ("mem_eff_attn",),
    "not supported: logs go to TensorBoard only": ("log_with", "wandb_api_key", "wandb_run_name",
                                                   "log_tracker_name", "log_tracker_config"),
    "not supported: starting from existing LoRA weights": ("lora_network_weights", "dim_from_weights"),
    "not supported: saving by steps (this trainer saves every save_every_n_epochs)": (
        "save_every_n_steps", "save_last_n_steps", "save_last_n_steps_state"),
    "not supported: regularization images": ("prior_loss_weight", "reg_data_dir"),
    "not supported: max-norm regularization": ("scale_weight_norms",),
    "not supported: stopping text-encoder training early": ("stop_text_encoder_training",
                                                            "stop_text_encoder_training_pct"),
    "not supported: timestep range (this trainer samples all 1000 timesteps)": ("min_timestep", "max_timestep"),
    "not supported": ("fp8_base", "weighted_captions", "lr_scheduler_args", "lr_scheduler_type"),
    "not supported: sample images during training": ("sample_every_n_steps", "sample_every_n_epochs",
                                                     "sample_sampler", "sample_prompts"),
    "this trainer always saves .safetensors": ("save_model_as",),
    "use `python -m lora_trainer train --resume DIR`": ("resume", "save_state"),
}
_IGNORED_REASONS = {key: reason for reason, keys in _REASON_GROUPS.items() for key in keys}

# Keys read by the special cases below rather than copied field by field.
_SPECIAL_KEYS = {
    "LoRA_type", "sdxl", "epoch", "max_train_epochs", "max_train_steps", "xformers", "optimizer",
    "optimizer_args", "lr_scheduler", "lr_warmup", "lr_warmup_steps", "max_token_length", "noise_offset_type",
    "noise_offset", "multires_noise_iterations", "multires_noise_discount", "unet_lr", "text_encoder_lr",
    "additional_parameters", "conv_dim", "conv_alpha", "dora_wd", "factor",
}

# Values that leave a kohya feature unused (besides blank, false and 0): a UI can list these keys apart
# from the ones whose settings really are lost.
_NEUTRAL_VALUES = {"clip_skip": 1, "max_timestep": 1000, "prior_loss_weight": 1, "factor": -1, "unit": 1,
                   "num_cpu_threads_per_process": 2, "num_processes": 1, "num_machines": 1,
                   "LoRA_type": "Standard", "noise_offset_type": "Original", "log_with": "tensorboard"}

_KNOWN_KEYS = _SPECIAL_KEYS | set(_FIELD_TYPES) | set(_IGNORED_REASONS)


@dataclass(frozen=True)
class KohyaImport:
    config: TrainConfig
    ignored: dict[str, str]  # kohya key -> why it was not applied
    converted: dict[str, str] = dataclasses.field(default_factory=dict)  # kohya key -> what it became and why


def import_kohya(source: str | Path | dict[str, Any]) -> KohyaImport:
    """Read a kohya_ss GUI JSON (a path or the loaded dict) into a TrainConfig plus the keys not applied."""
    data = source if isinstance(source, dict) else read_kohya_json(Path(source))
    _refuse_other_models(data)
    values: dict[str, Any] = {}
    ignored: dict[str, str] = {}
    for key, raw in data.items():
        if key in _SPECIAL_KEYS:
            continue
        if key in _FIELD_TYPES:
            _put(values, key, raw)
        else:
            ignored[key] = _IGNORED_REASONS.get(key, "unknown kohya_ss setting")
    # Order matters: the scheduler depends on the optimizer, warmup on the scheduler.
    _read_network_type(data, values, ignored)
    _read_length(data, values, ignored)
    _read_attention(data, values, ignored)
    _read_learning_rates(data, values, ignored)
    _read_optimizer(data, values, ignored)
    _read_scheduler(data, values, ignored)
    _read_noise(data, values, ignored)
    _read_token_length(data, values, ignored)
    _read_additional_parameters(data, values, ignored)
    converted = _nearest_sizes(values)
    try:
        config = TrainConfig(**values)
    except ConfigError as e:
        raise ConfigError(f"kohya_ss settings: {e}") from e
    return KohyaImport(config=config, ignored=dict(sorted(ignored.items())), converted=converted)


_SIZE_KEYS = ("bucket_reso_steps", "min_bucket_reso", "max_bucket_reso")


def _nearest_sizes(values: dict[str, Any]) -> dict[str, str]:
    """Sizes kohya accepts but SDXL cannot use (older kohya_ss presets carry `bucket_reso_steps: 1` or
    `max_resolution: "512,650"`) become the nearest multiple of 32 (at least 32), each with a line
    saying so, instead of refusing the whole file."""
    converted = {}
    for key in _SIZE_KEYS:
        value = values.get(key)
        if isinstance(value, int) and value % SIZE_MULTIPLE:
            values[key] = _nearest_multiple(value)
            converted[key] = f"{value} -> {values[key]}: SDXL sizes are multiples of {SIZE_MULTIPLE}"
    text = values.get("max_resolution")
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",")]
        if len(parts) in (1, 2) and all(p.isdigit() for p in parts) and any(int(p) % SIZE_MULTIPLE for p in parts):
            values["max_resolution"] = ",".join(str(_nearest_multiple(int(p))) for p in parts)
            converted["max_resolution"] = (f"{text!r} -> {values['max_resolution']!r}: SDXL sizes are multiples "
                                           f"of {SIZE_MULTIPLE}")
    return converted


def _nearest_multiple(value: int) -> int:
    return max(SIZE_MULTIPLE, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE)


def is_inactive(key: str, value: Any) -> bool:
    """True when a kohya value means "feature not used": blank, false, zero or the feature's neutral value."""
    if isinstance(value, str):
        value = value.strip()
        if value.lower() in ("", "false", "none"):
            return True
        try:
            value = float(value)
        except ValueError:
            pass
    return value is None or value is False or value == 0 or (key in _NEUTRAL_VALUES and value == _NEUTRAL_VALUES[key])


def read_kohya_json(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a kohya_ss config is a JSON object, not {type(data).__name__}")
    return data


def _given(data: dict[str, Any], key: str) -> Any:
    """The value of a kohya key, or None when it is absent or blank ("" means "use the default")."""
    assert key in _KNOWN_KEYS, f"not a kohya_ss key we know: {key}"  # catches typos in this module
    value = data.get(key)
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _coerce(key: str, raw: Any) -> Any:
    """kohya's value converted to the type of our field of the same name (kohya often writes strings)."""
    base = _FIELD_TYPES[key].removesuffix("| None").strip()
    try:
        if base == "bool":
            return _to_bool(raw)
        if base == "int":
            number = float(raw) if isinstance(raw, str) else raw
            if isinstance(number, bool) or not float(number).is_integer():
                raise ValueError
            return int(number)
        if base == "float":
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
            return str(raw)
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"kohya_ss key {key!r} = {raw!r}: expected {'an integer' if base == 'int' else 'a ' + base}")


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    raise ValueError


def _put(values: dict[str, Any], key: str, raw: Any) -> None:
    """Copy one kohya value into our settings; blank or null keeps our default."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return
    values[key] = _coerce(key, raw)


def _current(values: dict[str, Any], key: str) -> Any:
    """The setting as imported so far, or our default."""
    if key in values:
        return values[key]
    return getattr(TrainConfig, key)  # a field name typo fails here with AttributeError


def _refuse_other_models(data: dict[str, Any]) -> None:
    # Importing an SD1/SD2 setup as SDXL would train with settings meant for another model.
    if _given(data, "sdxl") is not None and not _to_bool_lenient(data["sdxl"]):
        raise ConfigError("this kohya_ss config is not for SDXL (sdxl = false): only SDXL is supported")
    for key in ("v2", "v_parameterization"):
        if _given(data, key) is not None and _to_bool_lenient(data[key]):
            raise ConfigError(f"this kohya_ss config is for an SD2/v-prediction model ({key} = true): "
                              "only SDXL is supported")


def _to_bool_lenient(raw: Any) -> bool:
    try:
        return _to_bool(raw)
    except ValueError:
        return bool(raw)


# kohya_ss's LoRA_type -> ours, and which of the network keys the GUI passes on for it.
_NETWORK_TYPES = {
    "Standard": ("Standard", ()),
    "Kohya LoCon": ("Standard", ("conv_dim", "conv_alpha")),  # kohya's own networks.lora with convolutions
    "LoCon": ("LyCORIS/LoCon", ("conv_dim", "conv_alpha", "dora_wd")),
    "LyCORIS/LoCon": ("LyCORIS/LoCon", ("conv_dim", "conv_alpha", "dora_wd")),
    "LyCORIS/LoHa": ("LyCORIS/LoHa", ("conv_dim", "conv_alpha")),
    "LyCORIS/LoKr": ("LyCORIS/LoKr", ("conv_dim", "conv_alpha", "factor")),
}
_NETWORK_KEYS = ("conv_dim", "conv_alpha", "dora_wd", "factor")


def _read_network_type(data: dict[str, Any], values: dict[str, Any], ignored: dict[str, str]) -> None:
    kind = _given(data, "LoRA_type") or "Standard"
    ours, passed = _NETWORK_TYPES.get(kind, ("Standard", ()))
    if kind not in _NETWORK_TYPES:
        ignored["LoRA_type"] = f"not supported: LoRA_type {kind!r} (the rest imported as a standard LoRA)"
    values["LoRA_type"] = ours
    for key in _NETWORK_KEYS:
        if _given(data, key) is None:
            continue
        if key in passed:
            _put(values, key, data[key])
        elif key == "dora_wd" and ours in ("LyCORIS/LoHa", "LyCORIS/LoKr"):
            ignored[key] = f"not supported: DoRA on {ours} (peft trains DoRA on LoRA and LoCon layers only)"
        else:
            ignored[key] = "LoCon/LyCORIS only"
    if ours == "LyCORIS/LoKr" and values.get("factor") == 0:
        values["factor"] = -1  # kohya_ss's blank factor


def _read_length(data: dict[str, Any], values: dict[str, Any], ignored: dict[str, str]) -> None:
    # kohya_ss: max_train_epochs, when set, wins over both "epoch" and max_train_steps (as in sd-scripts).
    epochs = _count(data, "max_train_epochs")
    epoch = _count(data, "epoch")
    steps = _count(data, "max_train_steps")
    if epochs is None:
        _put(values, "max_train_epochs", epoch)
        _put(values, "max_train_steps", steps)
        return
    values["max_train_epochs"] = epochs
    if epoch is not None and epoch != epochs:
        ignored["epoch"] = "max_train_epochs is set and takes precedence (as in kohya_ss)"
    if steps is not None:
        ignored["max_train_steps"] = "max_train_epochs is set and takes precedence (as in kohya_ss)"


def _count(data: dict[str, Any], key: str) -> int | None:
    """An epoch or step count; blank and 0 both mean "not set" in kohya_ss."""
    raw = _given(data, key)
    return None if raw is None else (_coerce("max_train_steps", raw) or None)


def _read_attention(data: dict[str, Any], values: dict[str, Any], ignored: dict[str, str]) -> None:
    raw = _given(data, "xformers")
    if raw is None:
        return
    if isinstance(raw, bool):  # older GUIs: a checkbox "use xformers"
        values["xformers"] = "xformers" if raw else "none"
    elif isinstance(raw, str) and raw.strip().lower() in ATTENTIONS:
        values["xformers"] = raw.strip().lower()
    else:
        ignored["xformers"] = f"unknown attention {raw!r}; using 'sdpa'"


def _read_learning_rates(data: dict[str, Any], values: dict[str, Any], ignored: dict[str, str]) -> None:
    unet = _given(data, "unet_lr")
    text = _given(data, "text_encoder_lr")
    unet = None if unet is None else _coerce("unet_lr", unet)
    text = None if text is None else _coerce("text_encoder_lr", text)
    if unet == 0 and text == 0:  # kohya_ss then uses learning_rate for both
        return
    if unet == 0:
        ignored["unet_lr"] = "0 means text-encoder-only training in kohya_ss: not supported (the U-Net uses learning_rate)"
    elif unet is not None:
        values["unet_lr"] = unet
    if text is not None:
        values["text_encoder_lr"] = text  # 0 = U-Net only, as in kohya_ss


def _read_optimizer(data: dict[str, Any], values: dict[str, Any], ignored: dict[str, str]) -> None:
    name = _given(data, "optimizer")
    args = _given(data, "optimizer_args") or ""
    if name is None:
        _put_optimizer_args(values, ignored, args)
        return
    ours = {o.lower(): o for o in OPTIMIZERS}
    if name.lower() in ours:
        values["optimizer"] = ours[name.lower()]
        _put_optimizer_args(values, ignored, args)
        return
    substitute = _OPTIMIZER_SUBSTITUTES.get(name, "AdamW")
    values["optimizer"] = substitute
    ignored["optimizer"] = f"not supported: optimizer {name!r}; using {substitute!r} instead"
    if substitute == "Prodigy":
        _put_optimizer_args(values, ignored, args)
    elif args:
        ignored["optimizer_args"] = f"arguments for {name!r}, not used with {substitute!r}"


def _put_optimizer_args(values: dict[str, Any], ignored: dict[str, str], args: str) -> None:
    """Keep the arguments the chosen optimizer takes; the others are dropped and listed."""
    allowed = OPTIMIZER_ARGS[values.get("optimizer", "AdamW")]
    try:
        tokens = shlex.split(args)
    except ValueError as e:
        ignored["optimizer_args"] = f"cannot read {args!r}: {e}"
        return
    kept = [t for t in tokens if t.partition("=")[0] in allowed]
    dropped = [t for t in tokens if t not in kept]
    candidate = shlex.join(kept)
    try:
        TrainConfig(optimizer=values.get("optimizer", "AdamW"), optimizer_args=candidate)
    except ConfigError as e:
        ignored["optimizer_args"] = f"cannot read: {e}"
        return
    values["optimizer_args"] = candidate
    if dropped:
        ignored["optimizer_args"] = f"not for {values.get('optimizer', 'AdamW')}, dropped: {' '.join(dropped)}"


def _read_scheduler(data: dict[str, Any], values: dict[str, Any], ignored: dict[str, str]) -> None:
    name = _given(data, "lr_scheduler")
    if name is not None and name not in LR_SCHEDULERS:
        ignored["lr_scheduler"] = f"not supported: lr_scheduler {name!r}; using 'constant'"
        name = None
    elif name == "adafactor" and _current(values, "optimizer") != "Adafactor":
        ignored["lr_scheduler"] = "'adafactor' needs the Adafactor optimizer; using 'constant'"
        name = None
    if name is not None:
        values["lr_scheduler"] = name
    _put(values, "lr_scheduler_num_cycles", _given(data, "lr_scheduler_num_cycles"))
    _put(values, "lr_scheduler_power", _given(data, "lr_scheduler_power"))
    _read_warmup(data, values, ignored)


def _read_warmup(data: dict[str, Any], values: dict[str, Any], ignored: dict[str, str]) -> None:
    percent = _given(data, "lr_warmup")
    steps = _given(data, "lr_warmup_steps")
    percent = 0 if percent is None else _coerce("lr_warmup", percent)
    steps = 0 if steps is None else _coerce("lr_warmup_steps", steps)
    if percent and steps:
        ignored["lr_warmup"] = "lr_warmup_steps is set and takes precedence"
        percent = 0
    scheduler = _current(values, "lr_scheduler")
    if (percent or steps) and scheduler in ("constant", "adafactor"):
        key = "lr_warmup" if percent else "lr_warmup_steps"
        ignored[key] = f"the {scheduler!r} scheduler has no warmup (kohya_ss does not warm it up either)"
        return
    values["lr_warmup"] = percent
    values["lr_warmup_steps"] = steps


def _read_noise(data: dict[str, Any], values: dict[str, Any], ignored: dict[str, str]) -> None:
    # kohya_ss passes noise_offset with the "Original" noise type and the multires keys with "Multires".
    kind = _given(data, "noise_offset_type") or "Original"
    used, unused = (("multires_noise_iterations", "multires_noise_discount"), ("noise_offset",)) \
        if kind == "Multires" else (("noise_offset",), ("multires_noise_iterations", "multires_noise_discount"))
    if kind not in ("Original", "Multires"):
        ignored["noise_offset_type"] = f"not supported: {kind!r} noise (Original or Multires)"
        used, unused = (), ("noise_offset", "multires_noise_iterations", "multires_noise_discount")
    for key in used:
        _put(values, key, _given(data, key))
    for key in unused:
        if _given(data, key) is not None and not is_inactive(key, data[key]):
            ignored[key] = f"not used by kohya_ss with noise_offset_type {kind!r}"


def _read_token_length(data: dict[str, Any], values: dict[str, Any], ignored: dict[str, str]) -> None:
    raw = _given(data, "max_token_length")
    if raw is None:
        return
    length = _coerce("max_token_length", raw)
    if length in MAX_TOKEN_LENGTHS:
        values["max_token_length"] = length
    else:
        ignored["max_token_length"] = (f"not supported: {length} tokens (kohya_ss and this trainer take "
                                       f"{', '.join(map(str, MAX_TOKEN_LENGTHS))})")


def _read_additional_parameters(data: dict[str, Any], values: dict[str, Any], ignored: dict[str, str]) -> None:
    """kohya passes these straight to sd-scripts; we apply the few flags that are our settings."""
    text = _given(data, "additional_parameters")
    if text is None:
        return
    try:
        options = _split_options(text)
    except ValueError as e:
        ignored["additional_parameters"] = f"cannot read {text!r}: {e}"
        return
    unused = []
    for flag, arguments in options:
        if flag == "--network_train_unet_only" and not arguments:
            values["network_train_unet_only"] = True
        elif flag == "--max_grad_norm" and len(arguments) == 1:
            values["max_grad_norm"] = _coerce("max_grad_norm", arguments[0])
        else:
            unused.append(shlex.join([flag, *arguments]))
    if unused:
        ignored["additional_parameters"] = "not supported: " + " ".join(unused)


def _split_options(text: str) -> list[tuple[str, list[str]]]:
    """'--a=1 --b x y --c' -> [('--a', ['1']), ('--b', ['x', 'y']), ('--c', [])]."""
    options: list[tuple[str, list[str]]] = []
    for token in shlex.split(text):
        if token.startswith("--"):
            flag, sep, value = token.partition("=")
            options.append((flag, [value] if sep else []))
        elif options:
            options[-1][1].append(token)
        else:
            options.append((token, []))
    return options
