"""The Host contract and its standalone implementation: model lists, paths, and the environment a
trainer process gets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lora_trainer.host import PACKAGE_PARENT, Host, StandaloneHost, find_checkpoints, subprocess_env


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_find_checkpoints_lists_model_files_recursively_by_name(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    expected = [touch(b / "sub" / "Alpha.SAFETENSORS"), touch(a / "beta.ckpt"), touch(a / "zeta.safetensors")]
    touch(a / "notes.txt")
    touch(a / "lora.pt")
    (a / "folder.safetensors").mkdir()  # a folder with a model's suffix is not a file to load
    assert find_checkpoints(a, b, tmp_path / "missing") == expected


def test_find_checkpoints_keeps_same_names_from_different_folders(tmp_path):
    first, second = touch(tmp_path / "x" / "m.safetensors"), touch(tmp_path / "y" / "m.safetensors")
    assert find_checkpoints(tmp_path / "y", tmp_path / "x") == [first, second]


def test_standalone_host_fulfils_the_protocol(tmp_path):
    model = touch(tmp_path / "models" / "base.safetensors")
    host = StandaloneHost(workspace_dir=tmp_path / "ws", model_dirs=[tmp_path / "models"],
                          config_dir=tmp_path / "cfg")
    assert isinstance(host, Host)
    assert host.name == "standalone"
    assert host.workspace() == tmp_path / "ws"
    assert host.checkpoints() == [model]
    assert host.sdxl_config_dir() == tmp_path / "cfg"
    assert host.publish_lora(tmp_path / "model" / "myLoRA-000003.safetensors") == "myLoRA-000003"
    assert host.trainer_command() == [sys.executable, "-m", "lora_trainer"]
    assert host.free_memory() is None


def test_standalone_host_defaults(tmp_path):
    host = StandaloneHost(workspace_dir=str(tmp_path))
    assert host.workspace() == tmp_path and host.checkpoints() == [] and host.sdxl_config_dir() is None


def test_subprocess_env_puts_the_package_first_once(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/elsewhere", str(PACKAGE_PARENT), "/elsewhere"]))
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    env = subprocess_env({"EXTRA": "1"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(PACKAGE_PARENT), "/elsewhere"]
    assert env["PYTHONUNBUFFERED"] == "1" and env["EXTRA"] == "1"
    assert os.environ.get("EXTRA") is None  # the caller's environment is not changed


def test_trainer_command_runs_from_any_folder(tmp_path, monkeypatch):
    """Forge runs from its own root, with our package in extensions/: the command must still find it."""
    monkeypatch.delenv("PYTHONPATH", raising=False)
    host = StandaloneHost(workspace_dir=tmp_path)
    done = subprocess.run(host.trainer_command() + ["--help"], cwd=tmp_path, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "train" in done.stdout and "ui" in done.stdout
