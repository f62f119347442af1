"""LoRA Trainer for Forge: dataset preparation, captioning, SDXL LoRA training and review.

The package never imports Forge or gradio outside `lora_trainer.ui`; the host (Forge or the
standalone app) reaches it through `lora_trainer.host.Host`.
"""

__version__ = "0.1.0"
