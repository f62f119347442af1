"""`accelerate launch` with two processes (CPU, gloo): both ranks end with identical LoRA weights,
only rank 0 writes files, and the validation loss is shared across the ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lora_trainer.config.presets import load_preset
from lora_trainer.train.events import read_events

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_processes_train_identical_weights(tiny_sdxl, character_dataset, tmp_path):
    cfg = load_preset("CPU smoke test", pretrained_model_name_or_path=str(tiny_sdxl.single_file),
                      train_data_dir=str(character_dataset), output_dir=str(tmp_path / "model"),
                      logging_dir=str(tmp_path / "log"), output_name="ddp", text_encoder_lr=1e-3,
                      validation_split=2)
    assert cfg.train_text_encoder  # the harder case: unused text-encoder parameters under DDP
    config_path = tmp_path / "ddp.json"
    cfg.save_json(config_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--num_cpu_threads_per_process", "1", "-m", "lora_trainer", "train", "--config", str(config_path),
               "--model-config-dir", str(tiny_sdxl.config_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    run_dirs = list((tmp_path / "log").iterdir())
    assert len(run_dirs) == 1, "only rank 0 writes logs"
    events = read_events(run_dirs[0] / "events.jsonl")
    start = next(e for e in events if e["event"] == "start")
    # 8 images, 2 held out for validation, 6 shared by 2 ranks
    assert start["processes"] == 2 and start["steps_per_epoch"] == 3 and start["validation_images"] == 2
    validation = [e for e in events if e["event"] == "validation"]
    assert [(e["epoch"], e["images"]) for e in validation] == [(1, 2), (2, 2)]  # each rank one, summed
    assert all(0 < e["loss"] < 10 for e in validation)
    saved = [e for e in events if e["event"] == "saved"]
    assert len(saved) == 2
    for event in saved:
        first, second = event["rank_checksums"]
        assert first == second, "both ranks must hold the same LoRA weights"
    assert sorted(p.name for p in (tmp_path / "model").glob("*.safetensors")) == [
        "ddp-000001.safetensors", "ddp-000002.safetensors", "ddp.safetensors"]
