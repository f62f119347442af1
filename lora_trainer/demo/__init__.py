"""Built-in demo: a tiny SDXL-shaped model and a synthetic dataset, made locally with no download."""
