"""Training: model loading, LoRA, caches, the loop, kohya-format export."""
