"""The built-in demo: a tiny model and a synthetic dataset, made locally with no download."""
