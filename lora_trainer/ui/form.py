"""The Train panel's settings form: which TrainConfig keys it shows, and the conversions between the
form's values and a settings dict. No gradio here, so the mapping is easy to read and to test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lora_trainer.config import LR_SCHEDULERS, MIXED_PRECISIONS, OPTIMIZERS, TrainConfig
from lora_trainer.config.settings import EMA_SAVES, HUBER_SCHEDULES, LOSS_TYPES, NETWORK_TYPES


@dataclass(frozen=True)
class FormField:
    key: str  # the TrainConfig field (also the element id: lora_trainer_<key>)
    label: str
    kind: str  # "text", "int", "float", "bool" or "choice"
    choices: tuple[str, ...] = ()
    info: str = ""
    advanced: bool = False  # shown under "More settings"
    step: float = 1  # the number box's arrow step

    @property
    def elem_id(self) -> str:
        return f"lora_trainer_{self.key}"

    @property
    def title(self) -> str:
        """The label with the config key, so an error that names the key points at its field."""
        return f"{self.label} ({self.key})"


FIELDS: tuple[FormField, ...] = (
    FormField("output_name", "Output name", "text", info="LoRA file name; the prompt uses it"),
    FormField("max_train_epochs", "Epochs", "int"),
    FormField("train_batch_size", "Batch size", "int"),
    FormField("save_every_n_epochs", "Save every N epochs", "int"),
    FormField("network_dim", "Network rank", "int"),
    FormField("network_alpha", "Network alpha", "float"),
    FormField("unet_lr", "U-Net learning rate", "float", step=1e-5),
    FormField("text_encoder_lr", "Text encoder learning rate", "float", info="0 = U-Net only", step=1e-5),
    FormField("network_train_unet_only", "Train U-Net only", "bool"),
    FormField("optimizer", "Optimizer", "choice", OPTIMIZERS),
    FormField("lr_scheduler", "LR scheduler", "choice", LR_SCHEDULERS),
    FormField("max_resolution", "Resolution", "text", info="width,height, e.g. 1024,1024"),
    FormField("mixed_precision", "Mixed precision", "choice", MIXED_PRECISIONS),
    FormField("full_bf16", "Full bf16", "bool"),
    FormField("gradient_checkpointing", "Gradient checkpointing", "bool"),
    FormField("seed", "Seed", "int", advanced=True),
    FormField("LoRA_type", "Network type", "choice", NETWORK_TYPES, advanced=True,
              info="LoCon adds the convolutions; LoHa / LoKr: LyCORIS's products, more capacity per byte"),
    FormField("conv_dim", "Convolution rank", "int", advanced=True, info="0 = convolutions not trained"),
    FormField("conv_alpha", "Convolution alpha", "float", advanced=True),
    FormField("factor", "LoKr factor", "int", advanced=True, info="-1 = automatic; 4-16 for smaller files"),
    FormField("fp8_base", "fp8 base weights", "bool", advanced=True,
              info="half the U-Net's memory; best with gradient checkpointing"),
    FormField("optimizer_args", "Optimizer arguments", "text", advanced=True,
              info="key=value pairs, e.g. scale_parameter=False relative_step=False"),
    FormField("noise_offset", "Noise offset", "float", advanced=True, step=0.01,
              info="0.03-0.1 helps very dark or light images"),
    FormField("multires_noise_iterations", "Multires noise iterations", "int", advanced=True,
              info="0 = off; 6-10 is usual"),
    FormField("multires_noise_discount", "Multires noise discount", "float", advanced=True, step=0.05),
    FormField("min_snr_gamma", "Min-SNR gamma", "float", advanced=True, info="0 = off; 5 is usual", step=0.5),
    FormField("loss_type", "Loss", "choice", LOSS_TYPES, advanced=True,
              info="huber / smooth_l1: odd images pull less"),
    FormField("huber_schedule", "Huber schedule", "choice", HUBER_SCHEDULES, advanced=True),
    FormField("huber_c", "Huber c", "float", advanced=True, step=0.01),
    FormField("keep_tokens", "Keep tokens", "int", advanced=True,
              info="leading tags never shuffled or dropped (the trigger word: 1)"),
    FormField("caption_dropout_rate", "Caption dropout rate", "float", advanced=True, step=0.05,
              info="chance an image trains with no caption"),
    FormField("caption_dropout_every_n_epochs", "Caption dropout every N epochs", "int", advanced=True,
              info="every Nth epoch trains without captions; 0 = never"),
    FormField("caption_tag_dropout_rate", "Tag dropout rate", "float", advanced=True, step=0.05,
              info="chance each tag after the kept ones is left out"),
    FormField("validation_split", "Validation images", "float", advanced=True, step=0.05,
              info="held out, never trained: 0.1 = 10%, 8 = eight; 0 = none"),
    FormField("validate_every_n_epochs", "Validate every N epochs", "int", advanced=True),
    FormField("loraplus_lr_ratio", "LoRA+ ratio", "float", advanced=True,
              info="the up weights learn this many times faster; 0 = off, 16 usual"),
    FormField("ema_decay", "EMA decay", "float", advanced=True, step=0.001,
              info="a moving average of the weights; 0 = off, 0.99-0.999 usual"),
    FormField("ema_update_every", "EMA every N steps", "int", advanced=True),
    FormField("ema_save", "EMA files", "choice", EMA_SAVES, advanced=True,
              info="instead of the trained weights, or alongside as <name>_ema"),
    FormField("masked_loss_background", "Masked loss: background weight", "float", advanced=True, step=0.05,
              info="0 = the background is not learned at all"),
    FormField("shuffle_caption", "Shuffle tags", "bool", advanced=True),
    FormField("masked_loss", "Masked loss (the Dataset step's masks)", "bool", advanced=True),
    FormField("alpha_mask", "Masked loss from the alpha channel", "bool", advanced=True),
    FormField("debiased_estimation_loss", "Debiased estimation loss", "bool", advanced=True),
    FormField("dora_wd", "DoRA (weight decomposition)", "bool", advanced=True),
    FormField("flip_aug", "Flip images", "bool", advanced=True),
)


def form_values(settings: dict[str, Any]) -> list[Any]:
    """The form's values for a settings dict, in FIELDS order (learning rates as they take effect)."""
    config = TrainConfig.from_dict(settings)
    effective = {"unet_lr": config.unet_learning_rate, "text_encoder_lr": config.text_encoder_learning_rate}
    return [effective.get(f.key, getattr(config, f.key)) for f in FIELDS]


def settings_from_form(base: dict[str, Any], values: list[Any]) -> dict[str, Any]:
    """`base` (a preset or a loaded config) with the form's values on top; not validated here."""
    if len(values) != len(FIELDS):
        raise ValueError(f"expected {len(FIELDS)} form values, got {len(values)}")
    return {**base, **{f.key: _clean(f, v) for f, v in zip(FIELDS, values)}}


def _clean(field: FormField, value: Any) -> Any:
    if field.kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if field.kind == "text" and isinstance(value, str):
        return value.strip()
    return value
