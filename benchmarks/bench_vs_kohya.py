"""Our trainer against kohya sd-scripts' `sdxl_train_network.py` on the full-size SDXL architecture.

Both train the same rank-8 LoRA on the U-Net only of a full-size SDXL checkpoint with random weights
(`lora_trainer.demo.random_sdxl.write_random_checkpoint`, built from Forge's SDXL config folder), on the
same synthetic images (`make_character_dataset`, one `1_myLoRA/` folder both read), at 64-128 px,
batch 1, AdamW at 1e-4, constant schedule, grad-norm clip 1.0, latents and text-encoder outputs cached
in memory before step 1, SDPA attention, the same seed and the same precision. Each run is its own
process; the sides alternate (ours, kohya, ours, kohya, ...) so that a change in the machine's load
falls on both. Per run: steady seconds per step (end of step 1 to end of the last step: model loading,
caching, step 1's warm-up and the final save are left out), the process's peak RSS (`ru_maxrss`, which
counts the pages of the memory-mapped checkpoint it has read) and its peak anonymous memory (sampled
from /proc, what the process really holds). Printed side by side, ours/kohya for each pair, and the
median ratio with its spread (min-max) over the pairs.

`--profile` then trains once more in a process that runs our `train()` with timers around its parts
(U-Net forward, backward, clipping, optimizer, batch loading, ...) and torch.profiler over one step, and
prints where the time of a steady step goes.

kohya's code is not in this repository and runs in its own venv:

    git clone https://github.com/kohya-ss/sd-scripts /tmp/sd-scripts
    git -C /tmp/sd-scripts checkout 48d368fa557731ad0488c07304dfeba8c07910eb   # the one measured
    .venv/bin/python benchmarks/bench_vs_kohya.py --setup-kohya-venv /tmp/kohya-venv          # once
    .venv/bin/python benchmarks/bench_vs_kohya.py \\
        --sdxl-config-dir <forge>/backend/huggingface/stabilityai/stable-diffusion-xl-base-1.0 \\
        --checkpoint /tmp/random-sdxl.safetensors --kohya-dir /tmp/sd-scripts \\
        --kohya-python /tmp/kohya-venv/bin/python --repeats 4 --steps 8 --profile

The config folder is the only input from outside (Forge ships it; any diffusers SDXL base folder with
its tokenizers works): our loader needs it for a single file, and kohya reads its two CLIP tokenizers
from it (`--tokenizer_cache_dir`, so it downloads nothing). The checkpoint is written there once if
missing (6.9 GB, about a minute). See benchmarks/README.md for the measured figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_KOHYA_DIR = Path("/tmp/sd-scripts")
DEFAULT_KOHYA_PYTHON = Path("/tmp/kohya-venv/bin/python")
KOHYA_MEASURED_COMMIT = "48d368fa557731ad0488c07304dfeba8c07910eb"  # sd-scripts main, 2026-02-16
# sd-scripts' requirements.txt at that commit, less what sdxl_train_network with AdamW never imports
# (bitsandbytes, lion-pytorch, schedulefree, pytorch-optimizer, prodigy*), torch pinned to this machine's
# CPU wheel, and opencv-python as its -headless twin (the same cv2 without libGL). Not under
# constraints-dev.txt: Forge's pins there (accelerate 0.31, transformers 4.46, diffusers 0.31,
# safetensors 0.4.2, huggingface-hub 0.26) contradict sd-scripts' own.
KOHYA_PACKAGES = ["torch==2.13.0+cpu", "torchvision", "accelerate==1.6.0", "transformers==4.54.1",
                  "diffusers==0.32.1", "ftfy==6.3.1", "opencv-python-headless==4.10.0.84", "einops==0.7.0",
                  "safetensors==0.4.5", "toml==0.10.2", "voluptuous==0.15.2", "huggingface-hub==0.34.3",
                  "imagesize==1.4.1", "numpy", "rich==14.1.0", "tensorboard", "sentencepiece==0.2.1"]
# PyPI's torchvision is a CUDA build; beside the CPU torch its import dies in `_meta_registrations`
# ("operator torchvision::nms does not exist"). An empty module registered under that name first lets
# `torchvision.transforms` (all sd-scripts uses) import. Put in the venv as a .pth file.
TORCHVISION_PTH = ("import sys, types; sys.modules.setdefault('torchvision._meta_registrations', "
                   "types.ModuleType('torchvision._meta_registrations'))\n")
# Where sd-scripts' SdxlTokenizeStrategy looks for its tokenizers under --tokenizer_cache_dir.
KOHYA_TOKENIZERS = {"tokenizer": "openai_clip-vit-large-patch14",
                    "tokenizer_2": "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k"}

# Run inside each training process. kohya: records the time of every update of its "steps" tqdm bar
# (the script runs unmodified through runpy). Ours runs unmodified too.
RUNNER = r'''
import atexit, json, os, runpy, sys, time
steps_file, kind, target = sys.argv[1:4]
sys.argv = [target] + sys.argv[4:]
profile_out = os.environ.get("BENCH_PROFILE_OUT")
if kind == "kohya":
    sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
    times, timer = [], None
    if profile_out:
        sys.path.insert(0, os.environ["BENCH_DIR"])
        from bench_vs_kohya import StepTimer
        import library.sdxl_original_unet as unet_module
        timer = StepTimer(int(os.environ["BENCH_PROFILE_STEP"]))
        cls = unet_module.SdxlUNet2DConditionModel
        cls.forward = timer.wrap("U-Net forward", cls.forward)
        timer.patch_accelerate()
        timer.start()
    import tqdm
    class _Timed(tqdm.tqdm):
        def update(self, n=1):
            out = super().update(n)
            if getattr(self, "desc", "") == "steps":
                times.extend([time.time()] * int(n))
                if timer:
                    timer.step_end(len(times))
            return out
    tqdm.tqdm = _Timed
    def _dump():
        with open(steps_file, "w") as f:
            json.dump(times, f)
        if timer:
            timer.dump(profile_out)
    atexit.register(_dump)
    runpy.run_path(target, run_name="__main__")
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
'''


@dataclass
class Run:
    name: str
    side: str  # "ours" or "kohya"
    steps: int = 0
    wall_s: float = 0.0
    steady_s_per_step: float | None = None  # mean over steps 2..N
    median_step_s: float | None = None  # median of steps 2..N: less moved by another job's burst
    min_step_s: float | None = None  # fastest of steps 2..N: the nearest to an idle machine
    peak_rss_mib: float = 0.0  # ru_maxrss: includes the mapped checkpoint pages read
    peak_anon_mib: float = 0.0  # sampled RssAnon
    killed: str = ""
    log: Path | None = None
    step_times: list[float] = field(default_factory=list)



def setup_kohya_venv(venv: Path) -> Path:
    """A plain venv with what sdxl_train_network.py imports, CPU torch, torchvision made importable."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *KOHYA_PACKAGES], check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "torchvision_cpu_meta_stub.pth").write_text(TORCHVISION_PTH, encoding="utf-8")
    subprocess.run([str(python), "-c", "import torch, torchvision.transforms, cv2, accelerate, diffusers, "
                    "transformers; print('kohya venv: torch', torch.__version__, 'diffusers', diffusers.__version__, "
                    "'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"], check=True)
    return python


def _proc_memory(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in ("VmRSS", "RssAnon"):
                    out[key] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def run_watched(run: Run, cmd: list[str], env: dict[str, str], cwd: Path, log: Path, max_anon_gib: float) -> None:
    """Run one training process; fill in wall time, ru_maxrss and the sampled peak of its anonymous
    memory. Over `max_anon_gib` of anonymous memory (0: no cap) its process group is killed."""
    print(f"  {run.name}: log in {log}", flush=True)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(cwd),
                                start_new_session=True)
        peak_anon = 0
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                anon = _proc_memory(proc.pid).get("RssAnon", 0)
                peak_anon = max(peak_anon, anon)
                if max_anon_gib and anon > max_anon_gib * 2**30 and not run.killed:
                    run.killed = f"killed at {anon / 2**30:.1f} GiB of anonymous memory (cap {max_anon_gib:g})"
                    os.killpg(proc.pid, signal.SIGKILL)
                time.sleep(0.25)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    run.wall_s = time.perf_counter() - start
    run.peak_rss_mib = usage.ru_maxrss / 1024
    run.peak_anon_mib = peak_anon / 2**20
    run.log = log
    if proc.returncode != 0 and not run.killed:
        tail = log.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise SystemExit(f"{run.name} failed (exit {proc.returncode}); end of {log}:\n{tail}")


def steady(times: list[float]) -> float | None:
    """Seconds per step from the end of step 1 to the end of the last step."""
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return (times[-1] - times[0]) / (len(times) - 1)


def step_durations(times: list[float]) -> list[float]:
    """The durations of steps 2..N (each from the previous step's end to its own)."""
    return [b - a for a, b in zip(times, times[1:])]


def fill_steps(run: Run, times: list[float]) -> None:
    durations = step_durations(times)
    run.step_times, run.steps, run.steady_s_per_step = times, len(times), steady(times)
    run.median_step_s = statistics.median(durations) if durations else None
    run.min_step_s = min(durations) if durations else None


# --- inputs -----------------------------------------------------------------------------------

def make_inputs(work: Path, args) -> tuple[Path, Path]:
    from lora_trainer.demo.random_sdxl import write_random_checkpoint
    from lora_trainer.demo.synthetic import make_character_dataset

    checkpoint = args.checkpoint or work / "random-sdxl.safetensors"
    if not checkpoint.is_file():
        print(f"writing the full-size random SDXL checkpoint {checkpoint} (6.9 GB, about a minute)", flush=True)
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        write_random_checkpoint(args.sdxl_config_dir, checkpoint, seed=0)
    img_root = make_character_dataset(work / "img", count=args.count, size=args.resolution, repeats=1, seed=0)
    tokenizers = work / "kohya_tokenizers"
    for sub, name in KOHYA_TOKENIZERS.items():
        if not (tokenizers / name).is_dir():
            shutil.copytree(args.sdxl_config_dir / sub, tokenizers / name)
    return checkpoint, img_root


def ours_config(work: Path, name: str, checkpoint: Path, img_root: Path, args, steps: int) -> Path:
    from lora_trainer.config import TrainConfig

    bf16 = args.precision == "bf16"
    cfg = TrainConfig(
        pretrained_model_name_or_path=str(checkpoint), train_data_dir=str(img_root),
        output_dir=str(work / name / "out"), logging_dir=str(work / name / "log"), output_name="bench",
        max_resolution=f"{args.resolution},{args.resolution}", enable_bucket=False,
        min_bucket_reso=64, bucket_reso_steps=32,
        network_dim=args.rank, network_alpha=float(args.rank), network_train_unet_only=True,
        learning_rate=1e-4, optimizer="AdamW", lr_scheduler="constant", train_batch_size=1,
        mixed_precision="bf16" if bf16 else "no", full_bf16=bf16, save_precision="fp16",
        gradient_checkpointing=args.gradient_checkpointing, xformers="sdpa", sdxl_no_half_vae=True,
        cache_latents=True, cache_latents_to_disk=False, sdxl_cache_text_encoder_outputs=True,
        max_train_epochs=math.ceil(steps / args.count), max_train_steps=steps,
        save_every_n_epochs=math.ceil(steps / args.count), seed=args.seed, max_grad_norm=1.0,
        flip_aug=False, shuffle_caption=False, max_token_length=75)
    path = work / f"{name}.json"
    cfg.save_json(path)
    return path


def kohya_args(work: Path, name: str, checkpoint: Path, img_root: Path, args) -> list[str]:
    out = [
        "--pretrained_model_name_or_path", str(checkpoint), "--train_data_dir", str(img_root),
        "--resolution", f"{args.resolution},{args.resolution}", "--output_dir", str(work / name / "out"),
        "--output_name", "bench", "--save_model_as", "safetensors", "--save_precision", "fp16",
        "--network_module", "networks.lora", "--network_dim", str(args.rank), "--network_alpha", str(args.rank),
        "--network_train_unet_only", "--cache_latents", "--cache_text_encoder_outputs",
        "--optimizer_type", "AdamW", "--learning_rate", "1e-4", "--lr_scheduler", "constant",
        "--train_batch_size", "1", "--max_train_steps", str(args.steps), "--seed", str(args.seed),
        "--mixed_precision", args.precision if args.precision == "bf16" else "no", "--sdpa", "--no_half_vae",
        "--max_grad_norm", "1.0", "--caption_extension", ".txt",
        "--tokenizer_cache_dir", str(work / "kohya_tokenizers"), "--max_data_loader_n_workers", "0",
    ]
    if args.precision == "bf16":
        out.append("--full_bf16")  # bf16 U-Net loaded as bf16, LoRA weights bf16: as our full_bf16
    if args.gradient_checkpointing:
        out.append("--gradient_checkpointing")
    return out


# --- the two sides ----------------------------------------------------------------------------

def base_env(work: Path) -> dict[str, str]:
    home = work / "home"
    return {**os.environ, "HOME": str(home), "HF_HOME": str(home / "hf"), "XDG_CACHE_HOME": str(home / "cache"),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TQDM_MININTERVAL": "5",
            "WANDB_MODE": "disabled", "BENCH_DIR": str(Path(__file__).resolve().parent)}


def run_ours(work: Path, index: int, checkpoint: Path, img_root: Path, args) -> Run:
    from lora_trainer.train.events import read_events

    name = f"ours-{index}"
    config = ours_config(work, name, checkpoint, img_root, args, args.steps)
    runner = work / "_runner.py"
    runner.write_text(RUNNER, encoding="utf-8")
    cmd = [sys.executable, str(runner), str(work / f"{name}.steps.json"), "ours", "lora_trainer",
           "train", "--config", str(config), "--model-config-dir", str(args.sdxl_config_dir)]
    env = {**base_env(work), "PYTHONPATH": str(args.ours_root)}
    run = Run(name, "ours")
    run_watched(run, cmd, env, work, work / f"{name}.log", args.max_anon_gib)
    events = list((work / name / "log").glob("*/events.jsonl"))
    fill_steps(run, [e["time"] for e in read_events(events[0]) if e["event"] == "step"] if events else [])
    return run


def run_kohya(work: Path, index: int, checkpoint: Path, img_root: Path, args) -> Run:
    name = f"kohya-{index}"
    runner = work / "_runner.py"
    runner.write_text(RUNNER, encoding="utf-8")
    steps_file = work / f"{name}.steps.json"
    cmd = [str(args.kohya_python), str(runner), str(steps_file), "kohya",
           str(args.kohya_dir / "sdxl_train_network.py"), *kohya_args(work, name, checkpoint, img_root, args)]
    run = Run(name, "kohya")
    run_watched(run, cmd, base_env(work), work, work / f"{name}.log", args.max_anon_gib)
    fill_steps(run, json.loads(steps_file.read_text()) if steps_file.exists() else [])
    return run


# --- profile of a step -----------------------------------------------------------------------------

COMMON_PARTS = ("U-Net forward", "U-Net backward", "grad clip", "optimizer step", "zero_grad")
OURS_PARTS = ("batch load", "text embeddings (cache)", "noise + timesteps + loss")


class StepTimer:
    """Timers around the parts of a training step, closed at each step's end, and torch.profiler over
    step `profile_step` (from the end of the step before it to its own end). Used in our process (the
    trainer's `on_event`) and in kohya's (its "steps" progress bar)."""

    def __init__(self, profile_step: int):
        self.profile_step = profile_step
        self.parts: dict[str, float] = {}
        self.steps: list[dict] = []
        self.last = time.perf_counter()
        self.profiler = None
        self.table = ""
        self.groups: dict[str, float] = {}

    def wrap(self, name: str, fn):
        self.parts.setdefault(name, 0.0)

        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.parts[name] += time.perf_counter() - start
        return wrapper

    def patch_accelerate(self) -> None:
        """backward, clipping, optimizer step and zero_grad: both sides call them through accelerate."""
        import accelerate
        from accelerate.optimizer import AcceleratedOptimizer

        accelerate.Accelerator.backward = self.wrap("U-Net backward", accelerate.Accelerator.backward)
        accelerate.Accelerator.clip_grad_norm_ = self.wrap("grad clip", accelerate.Accelerator.clip_grad_norm_)
        AcceleratedOptimizer.step = self.wrap("optimizer step", AcceleratedOptimizer.step)
        AcceleratedOptimizer.zero_grad = self.wrap("zero_grad", AcceleratedOptimizer.zero_grad)

    def start(self) -> None:
        self.last = time.perf_counter()
        for key in self.parts:
            self.parts[key] = 0.0

    def step_end(self, step: int) -> None:
        import torch

        now = time.perf_counter()
        if self.profiler is not None:
            self.profiler.stop()
            self.summarize()
            self.profiler = None
        self.steps.append({"step": step, "total": now - self.last, **self.parts, "profiled": step == self.profile_step})
        for key in self.parts:
            self.parts[key] = 0.0
        if step == self.profile_step - 1:
            self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.profiler.start()
        self.last = time.perf_counter()

    def summarize(self) -> None:
        averages = self.profiler.key_averages()
        self.table = averages.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=50)
        kinds = (("convolution (fwd+bwd)", ("aten::mkldnn_convolution", "aten::convolution_backward",
                                            "aten::_convolution", "aten::convolution", "aten::_slow_conv2d_forward",
                                            "aten::_slow_conv2d_backward")),
                 ("matmul/linear (fwd+bwd)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")),
                 ("attention SDPA (fwd+bwd)", ("aten::_scaled_dot_product_flash_attention_for_cpu",
                                               "aten::_scaled_dot_product_flash_attention_for_cpu_backward")),
                 ("group/layer norm (fwd+bwd)", ("aten::native_group_norm", "aten::native_group_norm_backward",
                                                 "aten::native_layer_norm", "aten::native_layer_norm_backward")),
                 ("dtype casts / copies", ("aten::copy_", "aten::_to_copy")))
        total = sum(a.self_cpu_time_total for a in averages) / 1e6
        self.groups = {label: sum(a.self_cpu_time_total for a in averages if a.key in names) / 1e6
                       for label, names in kinds}
        self.groups["all other ops"] = total - sum(self.groups.values())
        self.groups["all ops (self CPU, profiled step)"] = total

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"steps": self.steps, "table": self.table, "groups": self.groups},
                                         indent=1), encoding="utf-8")


def profile_worker(config: Path, model_config_dir: str, out: Path, profile_step: int) -> None:
    """In a process of its own: our `train()` with a StepTimer around the parts of its steps."""
    import lora_trainer.train.trainer as trainer
    from lora_trainer.config import TrainConfig
    from lora_trainer.train.batches import TrainingBatches

    timer = StepTimer(profile_step)
    timer.patch_accelerate()
    TrainingBatches.load = timer.wrap("batch load", TrainingBatches.load)
    TrainingBatches.embed = timer.wrap("text embeddings (cache)", TrainingBatches.embed)
    timer.parts.setdefault("U-Net forward", 0.0)
    timer.parts.setdefault("noise + timesteps + loss", 0.0)

    class TimedUNet:
        def __init__(self, unet):
            self._unet = unet

        def __call__(self, *a, **k):
            start = time.perf_counter()
            try:
                return self._unet(*a, **k)
            finally:
                timer.parts["U-Net forward"] += time.perf_counter() - start

        def __getattr__(self, name):
            return getattr(self._unet, name)

    original_loss = trainer._diffusion_loss

    def diffusion_loss(unet, *a, **k):
        start, forward_before = time.perf_counter(), timer.parts["U-Net forward"]
        try:
            return original_loss(TimedUNet(unet), *a, **k)
        finally:
            forward = timer.parts["U-Net forward"] - forward_before
            timer.parts["noise + timesteps + loss"] += time.perf_counter() - start - forward

    trainer._diffusion_loss = diffusion_loss

    def on_event(event: dict) -> None:
        if event["event"] == "start":
            timer.start()
        elif event["event"] == "step":
            timer.step_end(event["step"])

    trainer.train(TrainConfig.from_json(config), model_config_dir=model_config_dir, on_event=on_event)
    timer.dump(out)


def run_profiles(work: Path, checkpoint: Path, img_root: Path, args) -> dict[str, dict]:
    """One more run per side, with a StepTimer; torch.profiler over the second-to-last step."""
    steps = max(args.steps, 4)
    profiled = {}
    config = ours_config(work, "ours-profile", checkpoint, img_root, args, steps)
    out = work / "ours-profile.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--profile-worker", str(config), str(out),
           "--sdxl-config-dir", str(args.sdxl_config_dir),
           "--ours-root", str(args.ours_root), "--profile-step", str(steps - 1)]
    run = Run("ours-profile", "ours")
    run_watched(run, cmd, {**base_env(work), "PYTHONPATH": str(args.ours_root)}, work, work / "ours-profile.log",
                args.max_anon_gib)
    if not run.killed:
        profiled["ours"] = json.loads(out.read_text(encoding="utf-8"))
    if args.kohya_python.exists():
        out = work / "kohya-profile.json"
        env = {**base_env(work), "BENCH_PROFILE_OUT": str(out), "BENCH_PROFILE_STEP": str(steps - 1)}
        kohya_steps = args.steps
        args.steps = steps
        try:
            cmd = [str(args.kohya_python), str(work / "_runner.py"), str(work / "kohya-profile.steps.json"), "kohya",
                   str(args.kohya_dir / "sdxl_train_network.py"),
                   *kohya_args(work, "kohya-profile", checkpoint, img_root, args)]
        finally:
            args.steps = kohya_steps
        (work / "_runner.py").write_text(RUNNER, encoding="utf-8")
        run = Run("kohya-profile", "kohya")
        run_watched(run, cmd, env, work, work / "kohya-profile.log", args.max_anon_gib)
        if not run.killed:
            profiled["kohya"] = json.loads(out.read_text(encoding="utf-8"))
    return profiled


def report_profiles(profiled: dict[str, dict]) -> None:
    medians: dict[str, dict[str, float]] = {}
    for side, result in profiled.items():
        timed = [s for s in result["steps"] if s["step"] > 1 and not s["profiled"]]
        if not timed:
            continue
        for s in timed:  # per step, then the median: a sum of medians is not the median of the sums
            s["_unet"] = s["U-Net forward"] + s["U-Net backward"]
            s["_else"] = s["total"] - sum(s.get(n, 0.0) for n in COMMON_PARTS)
        keys = [k for k in timed[0] if k not in ("step", "profiled")]
        medians[side] = {k: statistics.median(s[k] for s in timed) for k in keys}
        medians[side]["_steps"] = ", ".join(str(s["step"]) for s in timed)
    if not medians:
        print("profile: no steady step timed")
        return
    sides = list(medians)
    print("\nprofile, steady steps without the profiler (median seconds per step; " +
          "; ".join(f"{side}: steps {medians[side]['_steps']}" for side in sides) + ")")
    print(f"  {'part':<44}" + "".join(f"{side:>16}" for side in sides))

    def row(name: str, values: dict[str, float | None]) -> None:
        cells = []
        for side in sides:
            value, total = values.get(side), medians[side]["total"]
            cells.append(f"{'n/a':>16}" if value is None else f"{value:>8.2f} s {100 * value / total:>4.0f}%")
        print(f"  {name:<44}" + "".join(cells))

    for name in COMMON_PARTS:
        row(name, {side: medians[side].get(name) for side in sides})
    row("U-Net forward + backward", {s: medians[s]["_unet"] for s in sides})
    row("everything else", {s: medians[s]["_else"] for s in sides})
    if "ours" in medians:
        for name in OURS_PARTS:
            row(f"  of which (ours) {name}", {"ours": medians["ours"].get(name)})
    row("whole step", {s: medians[s]["total"] for s in sides})
    for side in sides:
        result = profiled[side]
        if result.get("groups"):
            print(f"torch.profiler, {side}, one step, self CPU seconds by kind of op:")
            for name, value in result["groups"].items():
                print(f"  {name:<44}{value:>8.2f} s")
        if result.get("table"):
            print(f"torch.profiler, {side}, one step, top ops by self CPU time:")
            print(result["table"])


# --- report -----------------------------------------------------------------------------------

def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.2f}x (min {min(values):.2f}x, max {max(values):.2f}x, n={len(values)})"


def report(runs: list[Run], args) -> None:
    precision = ("bf16 (mixed_precision bf16 + full_bf16: U-Net weights and LoRA weights bf16, AdamW on bf16)"
                 if args.precision == "bf16" else "fp32")
    print(f"\nfull-size SDXL (random weights), {args.count} images of {args.resolution}px, {args.steps} steps per run, "
          f"rank {args.rank} alpha {args.rank}, U-Net only, batch 1, AdamW 1e-4, clip 1.0, cached latents and "
          f"text-encoder outputs, SDPA, gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}, "
          f"{precision}, seed {args.seed}; {os.cpu_count()} CPUs visible")
    header = (f"{'run':<10}{'steps':>6}{'wall s':>9}{'steady s/step':>15}{'median step s':>15}{'min step s':>12}"
              f"{'peak RSS MiB':>14}{'peak anon MiB':>15}")
    print(header)
    print("-" * len(header))
    for r in runs:
        print(f"{r.name:<10}{r.steps:>6}{r.wall_s:>9.1f}{fmt(r.steady_s_per_step, '.2f'):>15}"
              f"{fmt(r.median_step_s, '.2f'):>15}{fmt(r.min_step_s, '.2f'):>12}{r.peak_rss_mib:>14.0f}"
              f"{r.peak_anon_mib:>15.0f}"
              + (f"  {r.killed}" if r.killed else ""))
    ours = [r for r in runs if r.side == "ours"]
    kohya = [r for r in runs if r.side == "kohya"]
    pairs = [(a, b) for a, b in zip(ours, kohya) if not a.killed and not b.killed]
    if not pairs:
        return

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    columns = {"steady s/step": [ratio(a.steady_s_per_step, b.steady_s_per_step) for a, b in pairs],
               "median step s": [ratio(a.median_step_s, b.median_step_s) for a, b in pairs],
               "min step s": [ratio(a.min_step_s, b.min_step_s) for a, b in pairs],
               "peak RSS": [ratio(a.peak_rss_mib, b.peak_rss_mib) for a, b in pairs],
               "peak anon": [ratio(a.peak_anon_mib, b.peak_anon_mib) for a, b in pairs]}
    print(f"{'ours/kohya':<22}" + "".join(f"{name:>15}" for name in columns))
    for i, (a, b) in enumerate(pairs):
        print(f"  {a.name + ' / ' + b.name:<20}" + "".join(f"{fmt(v[i], '.2f') + 'x':>15}" for v in columns.values()))
    print("median over the pairs, ours/kohya (>1: ours slower / bigger), with the spread (min-max):")
    for name, values in columns.items():
        print(f"  {name + ':':<15} {spread([v for v in values if v is not None])}")
    for side, group in (("ours", ours), ("kohya", kohya)):
        group = [r for r in group if not r.killed]
        rates = [r.steady_s_per_step for r in group if r.steady_s_per_step]
        if rates:
            print(f"  {side}: steady s/step median {statistics.median(rates):.2f} (min {min(rates):.2f}, "
                  f"max {max(rates):.2f}); peak RSS median {statistics.median(r.peak_rss_mib for r in group):.0f} MiB, "
                  f"peak anon median {statistics.median(r.peak_anon_mib for r in group):.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sdxl-config-dir", type=Path, help="a diffusers SDXL base config folder with tokenizers "
                        "(Forge's backend/huggingface/stabilityai/stable-diffusion-xl-base-1.0)")
    parser.add_argument("--checkpoint", type=Path, help="the random full-size checkpoint; written there if missing "
                        "(default: in the work folder)")
    parser.add_argument("--kohya-dir", type=Path, default=DEFAULT_KOHYA_DIR, help=f"sd-scripts work tree "
                        f"(default: {DEFAULT_KOHYA_DIR}; measured at {KOHYA_MEASURED_COMMIT[:8]})")
    parser.add_argument("--kohya-python", type=Path, default=DEFAULT_KOHYA_PYTHON,
                        help=f"interpreter of kohya's venv (default: {DEFAULT_KOHYA_PYTHON})")
    parser.add_argument("--setup-kohya-venv", type=Path, metavar="DIR",
                        help="create/complete that venv for sd-scripts (CPU torch, torchvision stub) and exit "
                        "unless --sdxl-config-dir is given too")
    parser.add_argument("--ours-root", type=Path, default=ROOT,
                        help="the checkout whose lora_trainer/ runs as ours (default: this one)")
    parser.add_argument("--count", type=int, help="synthetic images (default: --steps, so a run is one epoch)")
    parser.add_argument("--resolution", type=int, default=64, choices=(64, 96, 128), help="square px (default 64)")
    parser.add_argument("--steps", type=int, default=4, help="steps per run (default 4; steady = steps 2..N)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, interleaved (default 3; 0: none)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                        help="bf16 (default): mixed_precision bf16 + full_bf16 on both sides; fp32 needs ~14 GiB")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="on both sides (default: off)")
    parser.add_argument("--max-anon-gib", type=float, default=13.0,
                        help="kill a training process whose anonymous memory passes this (default 13; 0: no cap)")
    parser.add_argument("--profile", action="store_true",
                        help="then one more run per side with timers around the step's parts and torch.profiler over "
                        "one step")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp folder, removed)")
    parser.add_argument("--profile-worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-step", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.ours_root.resolve()))
    if args.profile_worker:
        profile_worker(*args.profile_worker[:1], str(args.sdxl_config_dir), args.profile_worker[1],
                       args.profile_step)
        return 0
    if args.setup_kohya_venv:
        args.kohya_python = setup_kohya_venv(args.setup_kohya_venv)
        if not args.sdxl_config_dir:
            print(f"kohya venv ready: --kohya-python {args.kohya_python}")
            return 0
    if not args.sdxl_config_dir or not (args.sdxl_config_dir / "unet" / "config.json").is_file():
        parser.error("--sdxl-config-dir DIR (an SDXL base config folder with unet/, tokenizer/, tokenizer_2/) is required")
    if args.repeats and not (args.kohya_dir / "sdxl_train_network.py").is_file():
        parser.error(f"no sdxl_train_network.py in {args.kohya_dir}: git clone https://github.com/kohya-ss/sd-scripts")
    if args.repeats and not args.kohya_python.exists():
        parser.error(f"{args.kohya_python} missing: make it with --setup-kohya-venv DIR")
    args.count = args.count or args.steps
    args.sdxl_config_dir = args.sdxl_config_dir.resolve()
    args.kohya_dir = args.kohya_dir.resolve()

    with tempfile.TemporaryDirectory(prefix="bench_vs_kohya_") as tmp:
        work = (args.keep or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        checkpoint, img_root = make_inputs(work, args)
        runs: list[Run] = []
        for index in range(1, args.repeats + 1):
            print(f"repeat {index}/{args.repeats}", flush=True)
            ours = run_ours(work, index, checkpoint, img_root, args)
            runs.append(ours)
            if ours.killed:
                print(f"  ours was {ours.killed}: rerun with --max-anon-gib 0 on a machine with more than 24 GB")
                break
            runs.append(run_kohya(work, index, checkpoint, img_root, args))
            print(f"  s/step: ours {fmt(runs[-2].steady_s_per_step, '.2f')}, kohya {fmt(runs[-1].steady_s_per_step, '.2f')}",
                  flush=True)
        if runs:
            report(runs, args)
        if args.profile:
            report_profiles(run_profiles(work, checkpoint, img_root, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
