"""The trainer, and only the trainer: model loading, LoRA (peft), caches, the loop, kohya-format export,
stop and resume. It runs as its own process (`python -m lora_trainer train`); the UI starts and
follows it through `lora_trainer.runs`, and both sides name files and events through
`lora_trainer.runs.layout`.
"""
