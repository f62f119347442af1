"""The Train panel's GPU memory line (train/vram.py behind it): shown for the form's settings before
Start, with the GPU's verdict and the changes that would make a run fit."""

from __future__ import annotations

import html
import re

import gradio as gr

from lora_trainer.config.presets import PRESETS
from lora_trainer.host import StandaloneHost
from lora_trainer.runs.runner import TrainRunner
from lora_trainer.ui import train_panel as tp
from lora_trainer.ui.form import FIELDS, form_values

GIB = 2**30


def panel_for(tmp_path, config_dir) -> tp.TrainPanel:
    host = StandaloneHost(tmp_path, config_dir=config_dir)
    with gr.Blocks():
        return tp.TrainPanel(host, TrainRunner(host)).build()


def form(settings: dict, **changes) -> list:
    values = form_values({**settings, **changes})
    return values


def test_the_line_follows_the_settings_and_says_what_makes_a_run_fit(tmp_path, tiny_sdxl):
    panel = panel_for(tmp_path, tiny_sdxl.config_dir)
    settings = dict(PRESETS["Realistic character (guide) - NVIDIA"])
    line = panel.estimate_memory(settings, *form(settings))
    assert "GPU memory" in line and "no CUDA GPU here" in line
    # a larger batch needs more (the tiny model's activations are small: compare in bytes, not the line)
    from lora_trainer.config import TrainConfig
    from lora_trainer.train.vram import estimate_training_memory

    one = estimate_training_memory(TrainConfig.from_dict({**settings, "train_batch_size": 1}), tiny_sdxl.config_dir)
    eight = estimate_training_memory(TrainConfig.from_dict({**settings, "train_batch_size": 8}), tiny_sdxl.config_dir)
    assert eight.total_bytes > one.total_bytes

    # on a GPU too small for it: the verdict and the changes that fit, each with its figure
    panel.memory_estimator.gpu_gib = round((one.total_bytes - 2**20) / GIB, 6)
    line = panel.estimate_memory(settings, *form(settings, train_batch_size=1))
    assert "does not fit in" in line and "GiB GPU)" in line and "To fit, change one of" in line
    assert re.search(r"<li>[^<]+: about [\d.]+ GiB", line), line
    # ... and one large enough
    panel.memory_estimator.gpu_gib = 80
    assert "fits in 80.0 GiB" in panel.estimate_memory(settings, *form(settings))


def test_the_estimate_runs_outside_the_ui_process_once_per_settings(tmp_path, tiny_sdxl):
    """The estimate is a `memory --serve` process (the WebUI's process does not import the trainer for
    it: tests/test_rooms.py), which answers the next settings too; a page load with unchanged settings
    asks nothing."""
    import os

    panel = panel_for(tmp_path, tiny_sdxl.config_dir)
    worker = panel.memory_estimator.worker
    asked = []
    real_ask = worker.ask
    worker.ask = lambda request: asked.append(request) or real_ask(request)
    settings = dict(PRESETS["Low VRAM (8 GB)"])
    first = panel.estimate_memory(settings, *form(settings))
    assert panel.estimate_memory(settings, *form(settings)) == first
    assert len(asked) == 1 and worker.command[-2:] == ["memory", "--serve"]
    process = worker.process
    assert process.pid != os.getpid() and process.poll() is None  # kept for the next question
    smaller = panel.estimate_memory(settings, *form(settings, network_dim=4))
    assert len(asked) == 2 and worker.process is process and "GPU memory" in smaller
    # epochs, a name or a learning rate change nothing on the GPU: the answer is kept
    again = panel.estimate_memory(settings, *form(settings, network_dim=4, max_train_epochs=7, output_name="other",
                                                  learning_rate=0.0002))
    assert len(asked) == 2 and again == smaller

    # a worker that died is replaced at the next question; an unused one ends
    process.kill()
    process.wait()
    assert "GPU memory" in panel.estimate_memory(settings, *form(settings, network_dim=2))
    assert worker.process is not process and worker.process.poll() is None
    worker.close()
    assert worker.process is None and process.poll() is not None


def test_a_worker_that_cannot_answer_gives_the_reason(tmp_path):
    """A hung worker is stopped after its time and a crashed one names its last line; the next question
    starts another (runs/memory.py EstimateWorker)."""
    import sys

    from lora_trainer.runs.memory import EstimateWorker

    hung = EstimateWorker([sys.executable, "-c", "import time; time.sleep(60)"], timeout_s=1)
    report = hung.ask("{}")
    assert report.summary is None and "took over 1 s" in report.error and hung.process is None
    crashed = EstimateWorker([sys.executable, "-c", "import sys; sys.stdin.readline(); sys.exit('no torch here')"])
    report = crashed.ask("{}")
    assert report.summary is None and report.error == "the estimate failed: no torch here"
    missing = EstimateWorker([str(tmp_path / "no-python")])
    assert missing.ask("{}").error.startswith("could not run")
    for worker in (hung, crashed, missing):
        worker.close()


def test_invalid_settings_get_the_reason_instead_of_a_figure(tmp_path, tiny_sdxl):
    panel = panel_for(tmp_path, tiny_sdxl.config_dir)
    settings = dict(PRESETS["Low VRAM (8 GB)"])
    values = form(settings)
    values[[f.key for f in FIELDS].index("network_dim")] = 0
    assert "no estimate until the settings are valid: network_dim = 0" in panel.estimate_memory(settings, *values)


def test_without_the_config_folder_the_line_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    panel = panel_for(tmp_path, None)
    settings = dict(PRESETS["Low VRAM (8 GB)"])
    line = html.unescape(panel.estimate_memory(settings, *form(settings)))
    assert "SDXL's config folder is not on this machine yet" in line


def test_the_memory_command_prints_the_estimate_and_the_fixes(tmp_path, tiny_sdxl):
    """`python -m lora_trainer memory` for headless users: the same figure, and what makes it fit."""
    import json
    import subprocess
    import sys

    from lora_trainer.host import subprocess_env

    config = tmp_path / "run.json"
    config.write_text(json.dumps(dict(PRESETS["Realistic character (guide) - NVIDIA"])))
    command = [sys.executable, "-m", "lora_trainer", "memory", "--config", str(config),
               "--model-config-dir", str(tiny_sdxl.config_dir)]
    done = subprocess.run([*command, "--gpu-gib", "0.001"], capture_output=True, text=True, env=subprocess_env(),
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "does not fit in 0.0 GiB (0.001 GiB GPU)" in done.stdout and "to fit:" in done.stdout
    done = subprocess.run([*command, "--set", "network_dim=0"], capture_output=True, text=True,
                          env=subprocess_env(), timeout=300)
    assert done.returncode == 1 and "network_dim = 0" in done.stderr

    # --serve (the Train panel's worker): an answer a line; a bad request gets its reason, the next its figure
    request = {"settings": dict(PRESETS["Realistic character (guide) - NVIDIA"]), "gpu_gib": 80,
               "model_config_dir": str(tiny_sdxl.config_dir)}
    lines = "\n".join([json.dumps({**request, "settings": {**request["settings"], "network_dim": 0}}), "not json",
                        json.dumps(request)]) + "\n"
    done = subprocess.run([sys.executable, "-m", "lora_trainer", "memory", "--serve"], input=lines,
                          capture_output=True, text=True, env=subprocess_env(), timeout=300)
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0 and len(answers) == 3, done.stdout
    assert "network_dim = 0" in answers[0]["error"] and answers[1]["error"].startswith("the settings:")
    assert answers[2]["error"] is None and "fits in 80.0 GiB" in answers[2]["summary"]
