"""LoRA Trainer for Forge: dataset preparation, captioning, SDXL LoRA training and review.

One room per job:

    dataset/    import + convert, audit, backgrounds, edits, framing, close-ups
    captions/   WD14 tagging and batch caption editing
    config/     the training settings (`TrainConfig`), presets, kohya_ss import, `config` command
    train/      the trainer only (torch): model, LoRA, caches, the loop, kohya-format export
    runs/       starting, adopting, following, listing and publishing runs, for a UI (no torch);
                `runs/layout.py` owns a run's file names and event kinds for both sides
    review/     epochs compared in fixed-seed grids the host renders; candidates, notes, run comparison
    ui/         the gradio tab, one module per panel (the only place gradio is imported)
    project.py  a project's folders;  images.py  which files are images, listed one way
    host.py     what the package needs from Forge or the standalone app
    demo/       tiny models and a synthetic dataset; cli.py  `python -m lora_trainer ...`

The package never imports Forge or gradio outside `lora_trainer.ui`; the host (Forge or the
standalone app) reaches it through `lora_trainer.host.Host`.
"""

__version__ = "0.1.0"
