"""The Review's cost beyond generation: our grid (render_grid through the standalone host, then
save_grid with every cell and the labelled grid) against the plainest peer loop, a diffusers SDXL
pipeline that loads the same LoRA files and calls the pipeline for the same cells, keeping the images
in memory. Both render the same cells with the same seeds on the same tiny SDXL-shaped model.

    .venv/bin/python benchmarks/bench_review.py [--epochs 3] [--seeds 2] [--size 64] [--steps 4] [--repeats 3]

Prints each side's seconds per cell, their ratio (median over interleaved repeats, with the spread),
and our time outside `host.render` (availability checks, grid bookkeeping, composing and saving) as a
fraction of our render time. The issue's target: under 10%. Nothing asserts; CI does not run it.
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

def ours(spec, config_dir: Path, out: Path) -> tuple[float, float, float]:
    """(seconds, seconds inside host.render, cells) for a grid: rendered, composed and saved."""
    from lora_trainer.host import StandaloneHost
    from lora_trainer.review.grid import save_grid
    from lora_trainer.review.render import render_grid

    host = StandaloneHost(workspace_dir=out, config_dir=config_dir)
    inside = 0.0
    render = host.render

    def timed(job):
        nonlocal inside
        start = time.perf_counter()
        try:
            return render(job)
        finally:
            inside += time.perf_counter() - start

    host.render = timed
    start = time.perf_counter()
    result = render_grid(spec, host)
    save_grid(spec, result.cells, out, "grid")
    return time.perf_counter() - start, inside, len(result.cells)


def peer(spec, diffusers_dir: Path) -> tuple[float, int]:
    """(seconds, cells): a diffusers pipeline with the LoRA files loaded as adapters, one call a cell."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    start = time.perf_counter()
    pipe = StableDiffusionXLPipeline.from_pretrained(str(diffusers_dir), local_files_only=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    names = {}
    for column in spec.columns:
        if column.lora:
            names[column.lora.path] = f"a{len(names)}"
            pipe.load_lora_weights(str(column.lora.path.parent), weight_name=column.lora.path.name,
                                   adapter_name=names[column.lora.path])
    images = []
    for _s, _r, _c, job in spec.cells():
        if job.lora:
            pipe.enable_lora()
            pipe.set_adapters([names[job.lora.path]], [job.lora.weight])
        else:
            pipe.disable_lora()
        s = job.settings
        images.append(pipe(job.prompt, negative_prompt=s.negative_prompt or None, num_inference_steps=s.steps,
                           guidance_scale=s.cfg_scale, width=s.width, height=s.height,
                           generator=torch.Generator().manual_seed(job.seed)).images[0])
    return time.perf_counter() - start, len(images)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="LoRA columns (plus the baseline)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from lora_trainer.demo.tiny_lora import write_tiny_lora
    from lora_trainer.demo.tiny_sdxl import build_tiny_sdxl
    from lora_trainer.review.spec import Column, GridSpec, LoraRef, RenderSettings, Row

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_sdxl(root / "model")
        columns = [Column("no LoRA", None)]
        for epoch in range(1, args.epochs + 1):
            path = write_tiny_lora(model.diffusers_dir, root / "loras" / f"bench-{epoch:06d}.safetensors",
                                   seed=epoch)
            columns.append(Column(f"epoch {epoch}", LoraRef(path, path.stem), epoch))
        settings = RenderSettings(steps=args.steps, width=args.size, height=args.size, sampler="Euler",
                                  checkpoint=str(model.single_file))
        spec = GridSpec(columns, [Row("myLoRA, 1girl, smile", "myLoRA, 1girl, smile")],
                        list(range(1234, 1234 + args.seeds)), settings)
        ratios, fractions, per_cell = [], [], {"ours": [], "peer": []}
        for repeat in range(args.repeats):  # interleaved: this machine's speed drifts between runs
            ours_s, inside_s, cells = ours(spec, model.config_dir, root / f"out{repeat}")
            peer_s, peer_cells = peer(spec, model.diffusers_dir)
            per_cell["ours"].append(ours_s / cells)
            per_cell["peer"].append(peer_s / peer_cells)
            ratios.append(ours_s / peer_s)
            fractions.append((ours_s - inside_s) / inside_s)
            print(f"repeat {repeat + 1}: ours {ours_s:.2f} s ({ours_s / cells:.3f} s/cell), "
                  f"peer {peer_s:.2f} s ({peer_s / peer_cells:.3f} s/cell), outside render "
                  f"{100 * fractions[-1]:.1f}%", flush=True)
    print(f"\n{len(spec.cells())} cells ({len(columns)} columns x 1 prompt x {args.seeds} seeds), "
          f"{args.size} px, {args.steps} steps, model load included on both sides")
    print(f"s/cell: ours {statistics.median(per_cell['ours']):.3f}, peer {statistics.median(per_cell['peer']):.3f}")
    print(f"ours/peer time: {statistics.median(ratios):.2f}x (spread {min(ratios):.2f}-{max(ratios):.2f})")
    print(f"ours outside host.render: {100 * statistics.median(fractions):.1f}% of render time "
          f"(spread {100 * min(fractions):.1f}-{100 * max(fractions):.1f}%; target < 10%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
