"""What a new user hit in the dataset commands: a missing background model found only after minutes of
work, masks imported as photos, small photos padded silently, prepare and audit counting close-ups
differently, the copy kept instead of the original among duplicates, flat photos called blurry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lora_trainer.cli import main
from lora_trainer.dataset.background import ModelMissingError, check_model
from lora_trainer.dataset.prepare import PrepareOptions, prepare
from lora_trainer.project import Project

ROOT = Path(__file__).resolve().parents[2]

_OFFLINE_PREPARE = """
import sys, time
from lora_trainer.cli import main
t = time.perf_counter()
rc = main(sys.argv[1:])
print(f"RESULT rc={rc} seconds={time.perf_counter() - t:.3f} rembg={'rembg' in sys.modules}")
"""


def test_prepare_remove_background_without_the_model_fails_at_once(tmp_path, h):
    """Offline, no u2net.onnx: the command fails within a second, before rembg is even imported (that
    alone takes up to a minute), naming the file, the folder and where to get it; nothing is written."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(12):
        h.photo(900, 1200, i).save(src / f"IMG_{i:04}.jpg")
    empty = tmp_path / "u2net-home"
    empty.mkdir()
    project = tmp_path / "proj"
    env = dict(os.environ, U2NET_HOME=str(empty), PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-c", _OFFLINE_PREPARE, "prepare", str(src), "--project", str(project),
                          "--name", "myLoRA", "--remove-background"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    result = run.stdout.strip().splitlines()[-1]
    assert result.startswith("RESULT rc=2 ") and result.endswith("rembg=False"), (result, run.stderr)
    assert float(result.split("seconds=")[1].split()[0]) < 1.0, result
    err = run.stderr
    assert f"u2net.onnx not found in {empty}" in err, err
    assert "https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net.onnx (176 MB)" in err
    assert "U2NET_HOME" in err and "--download-model" in err
    assert not project.exists()
    assert sorted(p.name for p in src.iterdir()) == [f"IMG_{i:04}.jpg" for i in range(12)]


def test_background_command_without_the_model_writes_nothing(tmp_path, h, monkeypatch, capsys):
    src = tmp_path / "in"
    src.mkdir()
    h.photo(300, 300, 1).save(src / "a.jpg")
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "models"))
    rc = main(["background", str(src), "--output", str(tmp_path / "out"), "--model", "isnet-general-use"])
    err = capsys.readouterr().err
    assert rc == 2 and f"isnet-general-use.onnx not found in {tmp_path / 'models'}" in err
    assert "releases/download/v0.0.0/isnet-general-use.onnx (179 MB)" in err
    assert not (tmp_path / "out").exists()
    # a release file saved under another name is said so; an .onnx path that is not there is named
    with pytest.raises(ModelMissingError, match="BiRefNet-portrait-epoch_150.onnx and save it as "
                                                "birefnet-portrait.onnx there"):
        check_model("birefnet-portrait")
    with pytest.raises(ModelMissingError, match=f"rembg model file {tmp_path / 'x.onnx'} does not exist"):
        check_model(str(tmp_path / "x.onnx"))
    with pytest.raises(ModelMissingError):
        prepare([src], Project(tmp_path / "p", "x"), PrepareOptions(background=True, background_model="u2netp"))
    assert not (tmp_path / "p").exists()
