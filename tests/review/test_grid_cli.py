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
