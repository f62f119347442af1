"""Files written through fsutil: whole or not at all, and readable by whoever could read a plain file."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from lora_trainer.fsutil import atomic_open, atomic_path, write_json_atomic, write_text_atomic

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")


@contextlib.contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write_all_ways(folder: Path) -> list[Path]:
    """One file through each writer, as the trainer (safetensors into a path), PNG and JSON writers do."""
    with atomic_path(folder / "lora.safetensors") as tmp:
        tmp.write_bytes(b"weights")
    with atomic_open(folder / "mask.png", "wb") as f:
        f.write(b"png")
    write_text_atomic(folder / "caption.txt", "myLoRA, 1girl\n")
    write_json_atomic(folder / "sub" / "config.json", {"network_dim": 4})
    return [folder / "lora.safetensors", folder / "mask.png", folder / "caption.txt", folder / "sub" / "config.json"]


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_mode_a_plain_open_gives(tmp_path, mask, expected):
    with umask(mask):
        written = _write_all_ways(tmp_path)
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    assert _mode(plain) == expected  # the reference: what open() makes under this umask
    assert {p.name: _mode(p) for p in written} == {p.name: expected for p in written}


def test_replacing_a_file_gives_it_a_new_files_mode_and_the_new_content(tmp_path):
    target = tmp_path / "config.json"
    target.write_text("old")
    os.chmod(target, 0o600)
    with umask(0o022):
        write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert _mode(target) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "lora.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(target, "wb") as f:
        f.write(b"half")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["lora.safetensors"]


def test_umask_is_read_where_there_is_no_proc_too(tmp_path, monkeypatch):
    """macOS has no /proc: the umask is then set and restored, and left as it was."""
    from lora_trainer import fsutil

    monkeypatch.setattr(fsutil, "_PROC_STATUS", str(tmp_path / "no-such-proc" / "status"))
    with umask(0o027):
        write_text_atomic(tmp_path / "a.txt", "x")
        assert os.umask(0o027) == 0o027  # unchanged by the write
    assert _mode(tmp_path / "a.txt") == 0o640
