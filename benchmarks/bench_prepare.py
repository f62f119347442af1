"""Decode -> fit -> pad -> PNG for a batch of large JPEGs: `prepare` against ImageMagick doing the same
job in one run (`mogrify -resize 1024x1024 -gravity center -extent 1024x1024`), plus background-removal
throughput with one shared rembg session vs a new session per image.

    .venv/bin/python benchmarks/bench_prepare.py                 # 64 images of 12 MP
    .venv/bin/python benchmarks/bench_prepare.py --count 16      # quicker
    .venv/bin/python benchmarks/bench_prepare.py --bg-model ~/.u2net/u2net.onnx   # a real model

Prints images/s for each and the ratio. Our side includes what `prepare` always does besides the
resize (hashing for duplicates, the byte-for-byte source copy, the report).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lora_trainer.dataset.background import BackgroundRemover, new_session  # noqa: E402
from lora_trainer.dataset.prepare import PrepareOptions, prepare  # noqa: E402
from lora_trainer.project import Project  # noqa: E402

TINY_MODEL = ROOT / "tests" / "assets" / "tiny_segmenter.onnx"


def make_jpegs(folder: Path, count: int, width: int, height: int) -> None:
    """Photo-like JPEGs: smooth gradients, blobs and grain (pure noise would be unrealistically slow)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(count):
        fx, fy = rng.uniform(0.5, 3, 2)
        base = np.stack([128 + 90 * np.sin(x / width * fx * 6 + i), 128 + 90 * np.cos(y / height * fy * 6),
                         128 + 60 * np.sin((x + y) / (width + height) * 9 + i)], -1)
        grain = rng.normal(0, 6, (height, width, 1)).astype(np.float32)
        Image.fromarray(np.clip(base + grain, 0, 255).astype(np.uint8)).save(folder / f"photo_{i:03d}.jpg",
                                                                             quality=90)


def imagemagick() -> list[str] | None:
    if shutil.which("magick"):
        return ["magick", "mogrify"]
    if shutil.which("mogrify"):
        return ["mogrify"]
    return None


def bench_imagemagick(src: Path, out: Path, size: int) -> float:
    cmd = imagemagick() + ["-path", str(out), "-format", "png", "-resize", f"{size}x{size}",
                           "-background", "gray50", "-gravity", "center", "-extent", f"{size}x{size}"]
    files = sorted(str(p) for p in src.glob("*.jpg"))
    start = time.perf_counter()
    subprocess.run(cmd + files, check=True)
    elapsed = time.perf_counter() - start
    produced = list(out.glob("*.png"))
    assert len(produced) == len(files) and Image.open(produced[0]).size == (size, size)
    return elapsed


def bench_ours(src: Path, project_root: Path, size: int, workers: int, level: int) -> tuple[float, float]:
    """(seconds, mean PNG size in MB)."""
    start = time.perf_counter()
    project = Project(project_root, "bench")
    report = prepare([src], project, PrepareOptions(size=size, workers=workers, compress_level=level))
    elapsed = time.perf_counter() - start
    assert report.count("ok") == len(list(src.glob("*.jpg"))), report.to_text()
    return elapsed, _mean_mb(project.train_images)


def _mean_mb(folder: Path) -> float:
    sizes = [p.stat().st_size for p in folder.glob("*.png")]
    return sum(sizes) / len(sizes) / 1e6


def bench_background(model: str, count: int, side: int) -> tuple[float, float]:
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (side, side, 3), dtype=np.uint8))
              for i in range(count)]
    BackgroundRemover.create(model).replace(images[0], (64, 96, 128))  # warm-up (imports, first run)
    start = time.perf_counter()
    remover = BackgroundRemover.create(model)
    for im in images:
        remover.replace(im, (64, 96, 128))
    shared = count / (time.perf_counter() - start)
    start = time.perf_counter()
    for im in images:
        BackgroundRemover(new_session(model)).replace(im, (64, 96, 128))
    per_image = count / (time.perf_counter() - start)
    return shared, per_image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--bg-model", default=str(TINY_MODEL), help="rembg model name or .onnx path")
    parser.add_argument("--bg-count", type=int, default=16)
    args = parser.parse_args()

    print(f"{os.cpu_count()} CPU cores; {args.count} JPEGs of {args.width}x{args.height} "
          f"({args.width * args.height / 1e6:.0f} MP) -> {args.size}x{args.size} PNG")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src, im_out = tmp / "src", tmp / "im"
        src.mkdir()
        im_out.mkdir()
        t = time.perf_counter()
        make_jpegs(src, args.count, args.width, args.height)
        print(f"generated in {time.perf_counter() - t:.1f} s")

        ours = {}
        for level in (3, 6):
            ours[level], mb = bench_ours(src, tmp / f"project{level}", args.size, args.workers, level)
            print(f"lora_trainer prepare ({args.workers} workers, JPEG draft decoding, PNG level {level}"
                  f"{' = default' if level == 3 else ''}): {args.count / ours[level]:.2f} images/s "
                  f"({ours[level]:.1f} s, {mb:.2f} MB per PNG)")
        if imagemagick() is None:
            print("ImageMagick not found (apt-get install imagemagick): no comparison")
        else:
            im = bench_imagemagick(src, im_out, args.size)
            version = subprocess.run(imagemagick()[:1] + ["-version"], capture_output=True, text=True).stdout
            print(f"ImageMagick ({version.splitlines()[0].split(' https')[0]}; {' '.join(imagemagick())}): "
                  f"{args.count / im:.2f} images/s ({im:.1f} s, {_mean_mb(im_out):.2f} MB per PNG)")
            print(f"ratio: {im / ours[3]:.2f}x ImageMagick (default PNG level 3), "
                  f"{im / ours[6]:.2f}x at PNG level 6")

    shared, per_image = bench_background(args.bg_model, args.bg_count, 1024)
    print(f"background removal ({Path(args.bg_model).name}, {args.bg_count} images of 1024 px): "
          f"{shared:.2f} images/s with one shared session, {per_image:.2f} images/s with a new session per "
          f"image ({shared / per_image:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
