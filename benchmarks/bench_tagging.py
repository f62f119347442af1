"""Tagging throughput: batched inference vs one image per model call, on the same model and images.

    .venv/bin/python benchmarks/bench_tagging.py                      # the bench model, 448 px, CPU
    .venv/bin/python benchmarks/bench_tagging.py --model SmilingWolf/wd-vit-tagger-v3 --device cuda

The default model (benchmarks/assets/bench-wd14-tagger, made by tools/make_tiny_wd14_tagger.py) has the
WD14 interface at the real 448 px input and a few convolutions, so each call does real work; a real
tagger (hub id or folder) can be given with --model. Both runs include the whole pipeline the `tag`
command runs per image (decode, pad, resize, BGR, inference, tag selection); writing captions is left
out. Prints images/s for each and the ratio batched / single, then the same for the model calls alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lora_trainer.captions import Tagger, load_image, prepare_image, resolve_model  # noqa: E402

BENCH_MODEL = ROOT / "benchmarks" / "assets" / "bench-wd14-tagger"


def make_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Photo-sized noise images of varied aspect ratios, saved as PNG (decode cost included)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        width, height = [(1024, 1024), (832, 1216), (1216, 832), (768, 1344)][i % 4]
        small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
        paths.append(folder / f"{i:03d}.png")
        image.save(paths[-1], compress_level=1)
    return paths


def run(tagger: Tagger, paths: list[Path], batch: int) -> tuple[float, list[list[str]]]:
    start = time.perf_counter()
    tags = []
    for i in range(0, len(paths), batch):
        tags += [p.tags() for p in tagger.tag([load_image(p) for p in paths[i:i + batch]])]
    return time.perf_counter() - start, tags


def run_model_only(tagger: Tagger, arrays: np.ndarray, batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(arrays), batch):
        tagger.predict_arrays(arrays[i:i + batch])
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(BENCH_MODEL), help="tagger folder or hub id (default: bench model)")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs each")
    args = parser.parse_args()

    model = resolve_model(args.model)
    batched = Tagger(model, device=args.device, batch_size=args.batch_size)
    single = Tagger(model, device=args.device, batch_size=1)
    if batched.fixed_batch:
        print(f"{model.model_path} has a fixed batch of {batched.fixed_batch}: nothing to compare")
        return 1
    print(batched.describe())
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp), args.images)
        run(batched, paths[:args.batch_size], args.batch_size)  # warm-up: first-call allocations
        run(single, paths[:2], 1)
        configs = (("single", single, 1), ("batched", batched, args.batch_size))
        times = {name: [] for name, _, _ in configs}
        model_only = {name: [] for name, _, _ in configs}
        results = {}
        arrays = np.stack([prepare_image(load_image(p), batched.size) for p in paths])
        for _ in range(args.repeats):  # interleaved, so a busy moment on the machine hits both alike
            for name, tagger, batch in configs:
                elapsed, results[name] = run(tagger, paths, batch)
                times[name].append(elapsed)
                model_only[name].append(run_model_only(tagger, arrays, batch))
        times = {name: min(values) for name, values in times.items()}
        model_only = {name: min(values) for name, values in model_only.items()}
    if results["single"] != results["batched"]:
        print("warning: batched and single runs gave different tags")
    n = len(paths)
    print(f"{n} images, best of {args.repeats}:")
    print(f"  one image per call : {n / times['single']:8.1f} images/s")
    print(f"  batch of {args.batch_size:<3}       : {n / times['batched']:8.1f} images/s")
    print(f"batched / single throughput ratio: {times['single'] / times['batched']:.2f}x")
    print(f"model calls only (images prepared ahead): {n / model_only['single']:.1f} vs "
          f"{n / model_only['batched']:.1f} images/s, ratio {model_only['single'] / model_only['batched']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
