"""`python -m lora_trainer grid`: end to end on the tiny model (two epoch files, one prompt, the
baseline), and refusals before any model loads."""

from __future__ import annotations

import pytest
from PIL import Image

from lora_trainer.cli import main
from lora_trainer.review.grid import load_grid_spec

from .test_render import make_lora


def tiny_args(tiny_sdxl, out) -> list[str]:
    return ["grid", "--model", str(tiny_sdxl.single_file), "--model-config-dir", str(tiny_sdxl.config_dir),
            "--steps", "2", "--width", "64", "--height", "64", "--out", str(out), "--name", "hero"]


def test_grid_of_a_runs_epochs_with_the_baseline_writes_the_png_and_prints_its_path(tiny_sdxl, tmp_path, capsys):
    run = tmp_path / "model"
    for epoch in (2, 1):
        make_lora(tiny_sdxl, run / f"hero-{epoch:06d}.safetensors", seed=epoch)
    out = tmp_path / "review"
    code = main(tiny_args(tiny_sdxl, out) + ["--run-dir", str(run), "--prompt", "a photo of a woman"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    lines = printed.out.splitlines()
    assert [line.split(" (")[0] for line in lines if line.startswith("cell ")] == ["cell 1/3", "cell 2/3", "cell 3/3"]
    assert lines[-1] == f"grid: {out / 'hero.png'}"
    spec = load_grid_spec(out / "hero.png")
    assert [c.label for c in spec.columns] == ["no LoRA", "epoch 1", "epoch 2"]
    assert spec.rows[0].prompt == "a photo of a woman" and spec.seeds == [1234]
    assert sorted(p.name for p in (out / "hero").iterdir()) == ["s0_r0_c0.png", "s0_r0_c1.png", "s0_r0_c2.png"]
    with Image.open(out / "hero.png") as grid:
        assert grid.width > 3 * 64


@pytest.mark.parametrize("change, message", [
    (["--sampler", "Euler b"], "unknown sampler 'Euler b'"),
    (["--lora", "missing.safetensors"], "LoRA file not found: missing.safetensors"),
    (["--model", "nowhere.safetensors"], "base model not found: nowhere.safetensors"),
    (["--steps", "0"], "render settings out of range"),
])
def test_grid_refuses_bad_arguments_before_loading_a_model(tiny_sdxl, tmp_path, capsys, monkeypatch, change,
                                                           message):
    import lora_trainer.review.diffusers_render as renderer

    monkeypatch.setattr(renderer, "DiffusersRenderer", None)  # loading a model would fail the test
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.safetensors").write_bytes(b"x")
    args = tiny_args(tiny_sdxl, tmp_path / "out")
    if "--lora" not in change:
        args += ["--lora", "x.safetensors"]
    code = main(args + change)
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (tmp_path / "out" / "hero.png").exists()


def test_ctrl_c_saves_the_grid_with_the_cells_it_has(tiny_sdxl, tmp_path):
    import signal
    import subprocess
    import sys

    from lora_trainer.host import subprocess_env

    lora = make_lora(tiny_sdxl, tmp_path / "hero-000001.safetensors", seed=1)
    out = tmp_path / "review"
    seeds = [arg for seed in range(40) for arg in ("--seed", str(seed))]
    grid = subprocess.Popen([sys.executable, "-m", "lora_trainer", *tiny_args(tiny_sdxl, out), "--lora", str(lora),
                             *seeds], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    for line in grid.stdout:
        if line.startswith("cell 1/80"):
            grid.send_signal(signal.SIGINT)
            break
    rest, err = grid.communicate(timeout=120)
    assert grid.returncode == 0, err
    assert "stopped: " in err and "the grid keeps them" in err
    assert rest.splitlines()[-1] == f"grid: {out / 'hero.png'}"
    kept = sorted((out / "hero").iterdir())
    assert 1 <= len(kept) < 80  # the finished cells, not the rest


def test_follow_refuses_without_a_run_folder_or_anything_to_follow(tiny_sdxl, tmp_path, capsys):
    lora = make_lora(tiny_sdxl, tmp_path / "hero-000001.safetensors", seed=1)
    assert main(tiny_args(tiny_sdxl, tmp_path / "out") + ["--lora", str(lora), "--follow"]) == 2
    assert "--follow needs --run-dir" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(tiny_args(tiny_sdxl, tmp_path / "out") + ["--run-dir", str(tmp_path / "empty"), "--follow"]) == 2
    assert "nothing to follow in" in capsys.readouterr().err


def test_follow_without_a_running_training_renders_the_saved_epochs_and_ends(tiny_sdxl, tmp_path, capsys):
    run = tmp_path / "model"
    make_lora(tiny_sdxl, run / "hero-000001.safetensors", seed=1)
    out = tmp_path / "review"
    code = main(tiny_args(tiny_sdxl, out) + ["--run-dir", str(run), "--follow", "--poll-seconds", "0.1"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    lines = printed.out.splitlines()
    assert lines[1] == "ended: the training is over; rendering the columns left"
    assert [line for line in lines if line.startswith("column ")] == [
        f"column no LoRA: 1 cells; grid: {out / 'hero.png'}", f"column epoch 1: 1 cells; grid: {out / 'hero.png'}"]
    assert lines[-1] == f"grid: {out / 'hero.png'}"
    assert [c.label for c in load_grid_spec(out / "hero.png").columns] == ["no LoRA", "epoch 1"]


@pytest.mark.slow
def test_live_mode_adds_a_column_per_saved_epoch_during_a_real_tiny_run(tiny_sdxl, tmp_path, capsys, monkeypatch):
    """A real training in a subprocess, `grid --follow` on its output folder at the same time: each epoch
    joins the grid while the trainer still runs; a stop request ends the training, and the grid."""
    import subprocess
    import sys
    import time

    from lora_trainer.config.presets import load_preset
    from lora_trainer.demo.synthetic import make_character_dataset
    from lora_trainer.host import subprocess_env
    from lora_trainer.review import cli as grid_cli
    from lora_trainer.runs.layout import EPOCH, RunFiles, request_stop
    from lora_trainer.runs.lora_files import project_lora_files

    images = make_character_dataset(tmp_path / "img", name="hero", count=3, size=64, repeats=1, seed=0)
    model_dir = tmp_path / "model"
    cfg = load_preset("CPU smoke test", pretrained_model_name_or_path=str(tiny_sdxl.single_file),
                      train_data_dir=str(images), output_dir=str(model_dir), logging_dir=str(tmp_path / "log"),
                      output_name="hero", network_train_unet_only=True, max_train_epochs=40)
    cfg.save_json(tmp_path / "run.json")
    log = tmp_path / "trainer.log"
    with open(log, "w") as output:  # a file, not a pipe: tqdm's bars would fill a pipe nobody reads
        trainer = subprocess.Popen([sys.executable, "-m", "lora_trainer", "train", "--config",
                                    str(tmp_path / "run.json"), "--model-config-dir", str(tiny_sdxl.config_dir)],
                                   env=subprocess_env(), stdout=output, stderr=subprocess.STDOUT)
    try:
        lock = RunFiles(model_dir, "hero").lock
        deadline = time.time() + 60
        while not lock.exists() and trainer.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert lock.exists(), log.read_text()[-2000:]

        seen = []  # (columns, the trainer's poll()) after each column
        column = grid_cli._FollowPrinter.column

        def recorded(printer, spec, cells):
            seen.append(([c.label for c in spec.columns], trainer.poll()))
            if len(spec.columns) == 3:  # the baseline and two epochs: enough, stop the training
                request_stop(model_dir, "hero")
            column(printer, spec, cells)

        monkeypatch.setattr(grid_cli._FollowPrinter, "column", recorded)
        out = tmp_path / "review"
        code = main(tiny_args(tiny_sdxl, out) + ["--run-dir", str(model_dir), "--follow", "--poll-seconds", "0.2",
                                                 "--follow-timeout", "240"])
        printed = capsys.readouterr()
        assert code == 0, printed.err
        assert trainer.wait(timeout=60) == 0, log.read_text()[-2000:]
    finally:
        if trainer.poll() is None:
            trainer.kill()

    epochs = sorted(f.epoch for f in project_lora_files(model_dir) if f.kind == EPOCH)
    assert len(epochs) >= 2
    spec = load_grid_spec(out / "hero.png")
    assert [c.label for c in spec.columns] == ["no LoRA"] + [f"epoch {e}" for e in epochs]
    assert [labels for labels, _ in seen] == [["no LoRA"] + [f"epoch {e}" for e in epochs[:n]]
                                              for n in range(len(epochs) + 1)]
    assert any(poll is None for labels, poll in seen[1:]), f"no epoch column while the training ran: {seen}"
    assert "live: " in printed.out
    assert printed.out.splitlines()[-1] == f"grid: {out / 'hero.png'}"


@pytest.mark.slow
def test_a_run_asks_for_its_grid_and_the_review_tab_finds_it(tiny_sdxl, tmp_path):
    """`train --grid-prompt`: a `grid --follow` process beside the training renders each saved epoch;
    when the run ends the grid holds the baseline and every epoch, at the run's size, in
    review/<output_name>/<time>/grid.png beside the output folder (where the Review tab looks)."""
    import subprocess
    import sys

    from lora_trainer.config.presets import load_preset
    from lora_trainer.demo.synthetic import make_character_dataset
    from lora_trainer.host import subprocess_env
    from lora_trainer.review.saved import last_saved_grid

    images = make_character_dataset(tmp_path / "img", name="hero", count=3, size=64, repeats=1, seed=0)
    cfg = load_preset("CPU smoke test", pretrained_model_name_or_path=str(tiny_sdxl.single_file),
                      train_data_dir=str(images), output_dir=str(tmp_path / "model"),
                      logging_dir=str(tmp_path / "log"), output_name="hero", network_train_unet_only=True,
                      max_train_epochs=2)
    cfg.save_json(tmp_path / "run.json")
    base = [sys.executable, "-m", "lora_trainer", "train", "--config", str(tmp_path / "run.json"),
            "--model-config-dir", str(tiny_sdxl.config_dir)]
    refused = subprocess.run(base + ["--grid-seed", "3"], env=subprocess_env(), capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 1 and "--grid-seed goes with --grid-prompt" in refused.stderr
    done = subprocess.run(base + ["--grid-prompt", "a photo of hero", "--grid-seed", "3"], env=subprocess_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    saved = last_saved_grid(tmp_path / "review", "hero")
    assert saved is not None, done.stdout[-2000:]
    assert "review grid: each saved epoch joins" in done.stdout
    assert done.stdout.splitlines()[-1] == f"grid: {saved.grid}"
    assert [c.label for c in saved.spec.columns] == ["no LoRA", "epoch 1", "epoch 2"]
    assert saved.spec.seeds == [3] and saved.spec.rows[0].prompt == "a photo of hero"
    assert (saved.spec.settings.width, saved.spec.settings.height) == cfg.resolution
    assert len(saved.cells) == 3
