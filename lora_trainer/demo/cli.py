"""`python -m lora_trainer demo --dir demo`: the whole job on built-in material, offline, in about a
minute on a CPU: a tiny SDXL-shaped model and a synthetic character dataset are generated, then a
LoRA is trained and saved exactly as a real run would do it."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from lora_trainer.project import Project


def register(subparsers) -> None:
    demo = subparsers.add_parser("demo", help="run the whole pipeline on a tiny built-in model and dataset",
                                 description=__doc__)
    demo.add_argument("--dir", type=Path, default=Path("demo"), help="where to write everything (default: demo)")
    demo.add_argument("--images", type=int, default=16, help="synthetic images to generate (default: 16)")
    demo.add_argument("--epochs", type=int, default=2)
    demo.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from lora_trainer.config.presets import load_preset
    from lora_trainer.demo.synthetic import make_character_dataset
    from lora_trainer.demo.tiny_sdxl import build_tiny_sdxl
    from lora_trainer.train.cli import print_event
    from lora_trainer.train.trainer import train

    root: Path = args.dir
    # The layout the UI uses: <workspace>/<project>/ and base models in <workspace>/models/.
    project = Project(root / "myLoRA", name="myLoRA", repeats=1)
    print(f"1/3 building a tiny SDXL-shaped model in {root / 'model'}")
    model = build_tiny_sdxl(root / "model")
    listed_model = _link_or_copy(model.single_file, root / "models" / model.single_file.name)
    print(f"2/3 generating {args.images} captioned images in {project.train_images}")
    make_character_dataset(project.img, name=project.name, count=args.images, size=64,
                           repeats=project.repeats, seed=0)
    cfg = load_preset("CPU smoke test", pretrained_model_name_or_path=str(model.single_file),
                      train_data_dir=str(project.img), output_dir=str(project.model),
                      logging_dir=str(project.log), output_name=project.name,
                      max_train_epochs=args.epochs)
    config_path = project.config_file
    cfg.save_json(config_path)
    print(f"3/3 training (config: {config_path})")
    result = train(cfg, model_config_dir=str(model.config_dir), on_event=print_event)
    print("\nepoch losses: " + ", ".join(f"{loss:.4f}" for loss in result.epoch_losses))
    print("LoRA files (kohya format, load in Forge/A1111/ComfyUI):")
    for path in result.saved_files + ([result.final_file] if result.final_file else []):
        print(f"  {path}")
    print(f"TensorBoard: tensorboard --logdir {project.log}")
    print(f"Train it again headless: python -m lora_trainer train --config {config_path} "
          f"--model-config-dir {model.config_dir}")
    print(f"Or in the UI (project {project.name!r}, base model {listed_model.name}, preset 'CPU smoke test'): "
          f"python -m lora_trainer ui --dir {root} --model-config-dir {model.config_dir}")
    return 0


def _link_or_copy(source: Path, target: Path) -> Path:
    """The model file again where the UI lists base models; a hard link costs no disk."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target
