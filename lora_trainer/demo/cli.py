"""`python -m lora_trainer demo --dir demo`: the whole job on built-in material, offline, in about ten
seconds on two CPU cores: a tiny SDXL-shaped model and a synthetic character dataset are generated, then a
LoRA is trained and saved exactly as a real run would do it. Run again into the same folder, it
reuses the model, the images and their cached latents, and trains under the next free output name
(myLoRA_v2, ...): earlier runs' LoRA files are kept, as the UI keeps them."""

from __future__ import annotations

import argparse
import os
import re
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
    from lora_trainer.demo.tiny_sdxl import build_tiny_sdxl, existing_tiny_sdxl
    from lora_trainer.runs.lora_files import next_free_output_name
    from lora_trainer.train.cli import print_event
    from lora_trainer.train.trainer import train

    root: Path = args.dir
    # The layout the UI uses: <workspace>/<project>/ and base models in <workspace>/models/.
    project = Project(root / "myLoRA", name="myLoRA", repeats=1)
    # A model rebuilt would be a new file, and the latent cache (keyed by the model file) would miss.
    model = existing_tiny_sdxl(root / "model")
    if model:
        print(f"1/3 using the tiny SDXL-shaped model built earlier in {root / 'model'}")
    else:
        print(f"1/3 building a tiny SDXL-shaped model in {root / 'model'}")
        model = build_tiny_sdxl(root / "model")
    listed_model = _link_or_copy(model.single_file, root / "models" / model.single_file.name)
    kept = _keep_only_demo_images(project.train_images, args.images)
    print(f"2/3 generating {args.images - kept} captioned images in {project.train_images}"
          + (f" ({kept} kept from an earlier run)" if kept else ""))
    make_character_dataset(project.img, name=project.name, count=args.images, size=64,
                           repeats=project.repeats, seed=0, keep_existing=True)
    # A new name for a new run: a WebUI keeps showing a LoRA it has loaded under its old file name.
    output_name = next_free_output_name(project.model, project.name)
    cfg = load_preset("CPU smoke test", pretrained_model_name_or_path=str(model.single_file),
                      train_data_dir=str(project.img), output_dir=str(project.model),
                      logging_dir=str(project.log), output_name=output_name,
                      max_train_epochs=args.epochs)
    config_path = project.config_file
    cfg.save_json(config_path)
    earlier = "" if output_name == project.name else "; earlier runs' LoRA files are kept"
    print(f"3/3 training {output_name} (config: {config_path}{earlier})")
    result = train(cfg, model_config_dir=str(model.config_dir), on_event=print_event)
    print("\nepoch losses: " + ", ".join(f"{loss:.4f}" for loss in result.epoch_losses))
    print("LoRA files (kohya format, load in Forge/A1111/ComfyUI):")
    for path in result.saved_files + ([result.final_file] if result.final_file else []):
        print(f"  {path}")
    print(f"TensorBoard: tensorboard --logdir {project.log}")
    grid = _render_grid(project, model, result.saved_files)
    print(f"Grid of the epochs beside the base model (fixed seed): {grid}")
    print(f"Train it again headless: python -m lora_trainer train --config {config_path} "
          f"--model-config-dir {model.config_dir}")
    print(f"Or in the UI (project {project.name!r}, base model {listed_model.name}, preset 'CPU smoke test'): "
          f"python -m lora_trainer ui --dir {root} --model-config-dir {model.config_dir}")
    return 0


def _render_grid(project: Project, model, epoch_files: list[Path]) -> Path:
    """The last step of the job: each saved epoch beside the base model, same prompt and seed, as the
    Review renders it (standalone: diffusers)."""
    from lora_trainer.host import StandaloneHost
    from lora_trainer.review.grid import save_grid
    from lora_trainer.review.render import render_grid
    from lora_trainer.review.spec import Column, GridSpec, LoraRef, RenderSettings, Row
    from lora_trainer.runs.lora_files import read_lora_file

    captions = sorted(project.train_images.glob("*.txt"))
    prompt = captions[0].read_text(encoding="utf-8").strip() if captions else project.name
    columns = [Column("no LoRA", None)]
    for path in epoch_files:
        lora = read_lora_file(path)
        columns.append(Column(f"epoch {lora.epoch} (step {lora.step})", LoraRef(path, path.stem), lora.epoch,
                              lora.step))
    settings = RenderSettings(steps=4, width=64, height=64, checkpoint=str(model.single_file))
    spec = GridSpec(columns, [Row(prompt[:60], prompt)], [1234], settings)
    host = StandaloneHost(workspace_dir=project.root.parent, config_dir=model.config_dir)
    result = render_grid(spec, host)
    name = epoch_files[-1].stem.rsplit("-", 1)[0] if epoch_files else project.name
    return save_grid(spec, result.cells, project.root / "review" / name, "grid").grid


def _keep_only_demo_images(folder: Path, count: int) -> int:
    """Delete the demo images numbered `count` and above (an earlier run made more); return how many
    of the first `count` are there complete (image and caption), which the dataset maker keeps."""
    if not folder.is_dir():
        return 0
    kept = 0
    for path in folder.iterdir():
        match = re.fullmatch(r"(\d{3})\.(png|txt)", path.name)
        if match and int(match[1]) >= count:
            path.unlink()
        elif match and match[2] == "png" and path.with_suffix(".txt").is_file():
            kept += 1
    return kept


def _link_or_copy(source: Path, target: Path) -> Path:
    """The model file again where the UI lists base models; a hard link costs no disk."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file() and os.path.samefile(source, target):
        return target
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target
