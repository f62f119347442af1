"""Our trainer against diffusers' reference SDXL LoRA script, same tiny model, data and settings, one run.

The reference is `examples/text_to_image/train_text_to_image_lora_sdxl.py` from diffusers v0.31.0; its
code is not in this repository, the benchmark takes its path:

    git clone https://github.com/huggingface/diffusers -b v0.31.0 /tmp/diffusers-v0.31.0
    .venv/bin/python benchmarks/bench_trainer.py --setup-reference-venv /tmp/bench-ref-venv   # once
    .venv/bin/python benchmarks/bench_trainer.py \\
        --reference-script /tmp/diffusers-v0.31.0/examples/text_to_image/train_text_to_image_lora_sdxl.py \\
        --reference-python /tmp/bench-ref-venv/bin/python

The reference needs `datasets` and torchvision's transforms, which the project does not install, so it
runs in its own venv (`--setup-reference-venv DIR` makes one; see `setup_reference_venv`). Our side runs
`python -m lora_trainer train` with this interpreter.

Both train a rank-4 LoRA on the U-Net only of `build_tiny_sdxl`'s model, on the same square synthetic
images (`make_character_dataset`, so the reference's crop sees the same pixels), batch 1, AdamW at 1e-4,
constant schedule, fp32, grad-norm clip 1.0, same epochs and seed; each saves only its final LoRA. Ours
runs as users run it on a U-Net-only job: latents and text-encoder outputs cached once (the reference
encodes both on every step). Ours runs twice: the second run finds the latents already on disk.

Measured per process: wall time of the whole process (loading, caching, training, saving), steps/s over
the steady state (time between step 1 and the last step, from our `events.jsonl` and from a tqdm hook
around the reference's progress bar) and peak memory (max RSS of the process on CPU; max CUDA memory
allocated when it trains on a GPU). Figures on a shared machine are noisy: run it twice before quoting.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONSTRAINTS = ROOT / "constraints-dev.txt"
DEFAULT_REF_PYTHON = Path("/tmp/bench-ref-venv/bin/python")
REF_PACKAGES = ["torch==2.13.0+cpu", "diffusers", "transformers", "accelerate", "peft", "datasets",
                "torchvision", "tensorboard",
                "pyarrow<21"]  # newer pyarrow needs NumPy 2; Forge pins numpy 1.26.2

# PyPI's torchvision is a CUDA build; with the CPU torch its import dies in `_meta_registrations`
# ("operator torchvision::nms does not exist"). An empty module registered under that name first lets
# `torchvision.transforms` (all the reference script uses) import. Put in the venv as a .pth file.
TORCHVISION_PTH = ("import sys, types; sys.modules.setdefault('torchvision._meta_registrations', "
                   "types.ModuleType('torchvision._meta_registrations'))\n")

# Run inside each training process: records the time of every optimizer step of the reference's tqdm
# bar ("Steps") and, at exit, the peak CUDA memory; then runs the script or module it is given.
RUNNER = r'''
import atexit, json, runpy, sys, time
steps_file, mem_file, kind, target = sys.argv[1:5]
sys.argv = [target] + sys.argv[5:]
times = []
import tqdm.auto
class _Timed(tqdm.auto.tqdm):
    def update(self, n=1):
        out = super().update(n)
        if getattr(self, "desc", "") == "Steps":
            times.extend([time.time()] * int(n))
        return out
tqdm.auto.tqdm = _Timed
def _dump():
    peak = None
    if "torch" in sys.modules:
        import torch
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            peak = torch.cuda.max_memory_allocated()
    with open(mem_file, "w") as f:
        json.dump({"cuda_max_allocated": peak}, f)
    with open(steps_file, "w") as f:
        json.dump(times, f)
atexit.register(_dump)
if kind == "module":
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    runpy.run_path(target, run_name="__main__")
'''


@dataclass
class Result:
    name: str
    steps: int
    wall_s: float
    steady_steps_per_s: float | None
    peak_rss_mib: float
    cuda_peak_mib: float | None
    log: Path


def setup_reference_venv(venv: Path) -> Path:
    """A plain venv with the reference script's packages, CPU torch pinned, torchvision made importable."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(CONSTRAINTS), *REF_PACKAGES], check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "torchvision_cpu_meta_stub.pth").write_text(TORCHVISION_PTH, encoding="utf-8")
    subprocess.run([str(python), "-c", "import torchvision.transforms, datasets; print('torchvision', "
                    "torchvision.__version__, 'imports')"], check=True)
    return python


def run_measured(name: str, python: str, kind: str, target: str, args: list[str], work: Path,
                 env: dict[str, str]) -> tuple[float, float, float | None, list[float], Path]:
    """Run one training process; return wall s, its max RSS (MiB), CUDA peak (MiB), step times, log."""
    runner = work / "_runner.py"
    runner.write_text(RUNNER, encoding="utf-8")
    steps_file, mem_file, log = work / f"{name}.steps.json", work / f"{name}.mem.json", work / f"{name}.log"
    cmd = [python, str(runner), str(steps_file), str(mem_file), kind, target, *args]
    print(f"  running {name}: log in {log}", flush=True)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(work))
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise SystemExit(f"{name} failed (exit {proc.returncode}); end of {log}:\n{tail}")
    cuda = json.loads(mem_file.read_text())["cuda_max_allocated"] if mem_file.exists() else None
    times = json.loads(steps_file.read_text()) if steps_file.exists() else []
    return wall, usage.ru_maxrss / 1024, (cuda / 2**20 if cuda else None), times, log


def steady_rate(times: list[float]) -> float | None:
    """Steps/s from the first step's end to the last's: startup, caching and step 1's warm-up left out."""
    if len(times) < 3 or times[-1] <= times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0])


def make_inputs(work: Path, count: int, size: int):
    from lora_trainer.demo.synthetic import make_character_dataset
    from lora_trainer.demo.tiny_sdxl import build_tiny_sdxl

    model = build_tiny_sdxl(work / "model")
    img_root = make_character_dataset(work / "project" / "img", count=count, size=size, repeats=1, seed=0)
    # The same files as an `imagefolder` dataset for the reference (--train_data_dir, caption column "text").
    folder = work / "ref_data"
    folder.mkdir()
    with open(folder / "metadata.jsonl", "w", encoding="utf-8") as meta:
        for png in sorted((img_root / "1_myLoRA").glob("*.png")):
            (folder / png.name).write_bytes(png.read_bytes())
            caption = png.with_suffix(".txt").read_text(encoding="utf-8").strip()
            meta.write(json.dumps({"file_name": png.name, "text": caption}) + "\n")
    return model, img_root, folder


def run_ours(name: str, work: Path, model, img_root: Path, args, env) -> Result:
    from lora_trainer.config.presets import load_preset
    from lora_trainer.train.events import read_events

    cfg = load_preset(
        "CPU smoke test", pretrained_model_name_or_path=str(model.single_file), train_data_dir=str(img_root),
        output_dir=str(work / name / "out"), logging_dir=str(work / name / "log"), output_name="bench",
        max_resolution=f"{args.resolution},{args.resolution}", min_bucket_reso=64, bucket_reso_steps=64,
        network_dim=4, network_alpha=4.0,  # peft's LoraConfig(r=4, lora_alpha=4) in the reference
        learning_rate=1e-4, optimizer="AdamW", lr_scheduler="constant", train_batch_size=1,
        mixed_precision="no", network_train_unet_only=True, text_encoder_lr=0.0,
        cache_latents=True, cache_latents_to_disk=True, sdxl_cache_text_encoder_outputs=True,
        max_train_epochs=args.epochs, save_every_n_epochs=args.epochs, max_grad_norm=1.0, seed=args.seed,
        flip_aug=False, shuffle_caption=False)
    config = work / f"{name}.json"
    cfg.save_json(config)
    env = {**env, "PYTHONPATH": str(ROOT)}
    wall, rss, cuda, _, log = run_measured(
        name, sys.executable, "module", "lora_trainer",
        ["train", "--config", str(config), "--model-config-dir", str(model.config_dir)], work, env)
    events_files = list((work / name / "log").glob("*/events.jsonl"))
    times = [e["time"] for e in read_events(events_files[0]) if e["event"] == "step"] if events_files else []
    return Result(name, len(times), wall, steady_rate(times), rss, cuda, log)


def run_reference(work: Path, model, data: Path, args, env) -> Result:
    out = work / "reference"
    # Offline mode (HF_HUB_OFFLINE, or TRANSFORMERS_OFFLINE which huggingface_hub reads too) breaks the
    # script's final `load_lora_weights(output_dir)` (diffusers 0.31 then wants `weight_name=`); every
    # path here is a local folder, so nothing goes to the network without it.
    env = {k: v for k, v in env.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    cli = ["--pretrained_model_name_or_path", str(model.diffusers_dir), "--train_data_dir", str(data),
           "--image_column", "image", "--caption_column", "text", "--resolution", str(args.resolution),
           "--center_crop", "--train_batch_size", "1", "--num_train_epochs", str(args.epochs),
           "--learning_rate", "1e-4", "--lr_scheduler", "constant", "--lr_warmup_steps", "0",
           "--rank", "4", "--mixed_precision", "no", "--seed", str(args.seed), "--max_grad_norm", "1.0",
           "--dataloader_num_workers", "0", "--checkpointing_steps", "1000000", "--output_dir", str(out),
           "--logging_dir", "logs", "--cache_dir", str(work / "hf_cache")]
    wall, rss, cuda, times, log = run_measured("reference", str(args.reference_python), "path",
                                               str(args.reference_script), cli, work, env)
    return Result("reference", len(times), wall, steady_rate(times), rss, cuda, log)


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if not a or not b else f"{a / b:.2f}x"


def report(results: list[Result], args) -> None:
    print(f"\n{args.count} images of {args.resolution}px x {args.epochs} epochs, rank 4, batch 1, AdamW 1e-4, "
          f"fp32, U-Net only, seed {args.seed}; {os.cpu_count()} CPUs visible (shared machine: noisy)")
    header = f"{'run':<16}{'steps':>6}{'wall s':>9}{'steps/s whole':>15}{'steps/s steady':>16}" \
             f"{'peak RSS MiB':>14}{'CUDA max MiB':>14}"
    print(header)
    print("-" * len(header))
    for r in results:
        whole = r.steps / r.wall_s if r.steps else None
        print(f"{r.name:<16}{r.steps:>6}{r.wall_s:>9.1f}{fmt(whole, '.2f'):>15}"
              f"{fmt(r.steady_steps_per_s, '.2f'):>16}{r.peak_rss_mib:>14.0f}{fmt(r.cuda_peak_mib, '.0f'):>14}")
    ref = next(r for r in results if r.name == "reference")
    for ours in (r for r in results if r.name != "reference"):
        print(f"{ours.name} / reference:")
        print(f"  steps/s ratio, steady state (ours/reference): {ratio(ours.steady_steps_per_s, ref.steady_steps_per_s)}")
        print(f"  steps/s ratio, whole process (ours/reference): "
              f"{ratio(ours.steps / ours.wall_s, ref.steps / ref.wall_s)}")
        print(f"  peak RSS ratio (ours/reference): {ratio(ours.peak_rss_mib, ref.peak_rss_mib)}")
        if ours.cuda_peak_mib and ref.cuda_peak_mib:
            print(f"  CUDA max allocated ratio (ours/reference): {ratio(ours.cuda_peak_mib, ref.cuda_peak_mib)}")
    if ref.steps != results[0].steps:
        print(f"note: step counts differ (ours {results[0].steps}, reference {ref.steps})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-script", type=Path, help="diffusers v0.31.0 "
                        "examples/text_to_image/train_text_to_image_lora_sdxl.py")
    parser.add_argument("--reference-python", type=Path, default=DEFAULT_REF_PYTHON,
                        help=f"interpreter of the reference's venv (default: {DEFAULT_REF_PYTHON})")
    parser.add_argument("--setup-reference-venv", type=Path, metavar="DIR",
                        help="create/complete that venv for the reference (CPU torch, torchvision stub) and exit "
                        "unless --reference-script is given too")
    parser.add_argument("--count", type=int, default=8, help="synthetic images (default: 8)")
    parser.add_argument("--resolution", type=int, default=64, help="square image side, px (default: 64)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs for both (default: 2)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-second-run", action="store_true", help="skip our run that reuses the latent cache")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp folder, removed)")
    args = parser.parse_args(argv)
    if args.setup_reference_venv:
        args.reference_python = setup_reference_venv(args.setup_reference_venv)
        if not args.reference_script:
            print(f"reference venv ready: --reference-python {args.reference_python}")
            return 0
    if not args.reference_script or not args.reference_script.is_file():
        parser.error("--reference-script PATH is required (git clone https://github.com/huggingface/diffusers "
                     "-b v0.31.0; examples/text_to_image/train_text_to_image_lora_sdxl.py)")
    if not Path(args.reference_python).exists():
        parser.error(f"{args.reference_python} missing: make it with --setup-reference-venv DIR")

    with tempfile.TemporaryDirectory(prefix="bench_trainer_") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        home = work / "home"
        env = {**os.environ, "HOME": str(home), "HF_HOME": str(home / "hf"), "XDG_CACHE_HOME": str(home / "cache"),
               "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TQDM_MININTERVAL": "5", "WANDB_MODE": "disabled"}
        print(f"building the tiny model and {args.count} images in {work}", flush=True)
        model, img_root, data = make_inputs(work, args.count, args.resolution)
        results = [run_ours("ours", work, model, img_root, args, env)]
        results.append(run_reference(work, model, data, args, env))
        if not args.no_second_run:
            results.append(run_ours("ours-cached", work, model, img_root, args, env))
        report(results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
