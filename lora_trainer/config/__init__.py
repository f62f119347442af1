"""Training settings: what a run is told to do, and where those settings come from.

    settings      `TrainConfig`: one frozen, validated dataclass with the kohya_ss GUI's key names
    presets       named starting points (the guide's settings first)
    kohya_import  a kohya_ss GUI JSON read tolerantly, with every key not applied listed
    cli           `python -m lora_trainer config ...`

No torch here: the UI and the CLI read and check settings without loading the trainer.
"""

from lora_trainer.config.settings import (
    ATTENTIONS,
    LR_SCHEDULERS,
    MAX_TOKEN_LENGTHS,
    MIXED_PRECISIONS,
    OPTIMIZERS,
    SAVE_PRECISIONS,
    ConfigError,
    TrainConfig,
    read_json,
)

__all__ = ["ATTENTIONS", "LR_SCHEDULERS", "MAX_TOKEN_LENGTHS", "MIXED_PRECISIONS", "OPTIMIZERS",
           "SAVE_PRECISIONS", "ConfigError", "TrainConfig", "read_json"]
