"""`python -m lora_trainer`, run as a user runs it: in its own process, its output piped elsewhere."""

from __future__ import annotations

import subprocess
import sys

from lora_trainer.host import subprocess_env


def test_output_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path):
    """`python -m lora_trainer tags show F | head -1`: no BrokenPipeError traceback once head exits."""
    for index in range(300):  # about 200 KB of output: more than a pipe holds, so writing must fail
        (tmp_path / f"{index:03d}.png").write_bytes(b"")
        (tmp_path / f"{index:03d}.txt").write_text(f"myLoRA, 1girl, {'red hair, ' * 60}index {index}\n")
    proc = subprocess.Popen([sys.executable, "-m", "lora_trainer", "tags", "show", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env(), cwd=tmp_path)
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    code = proc.wait(timeout=120)
    assert first.startswith(b"000.png: myLoRA, 1girl")
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert stderr == ""
    assert code in (0, 141)


def test_a_broken_pipe_that_is_not_stdout_is_still_reported(monkeypatch, capsys):
    """Only a closed stdout is silenced: the same error from anything else keeps its traceback."""
    import pytest

    from lora_trainer import cli

    def fails(args):
        raise BrokenPipeError(32, "Broken pipe (to a child process)")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser.set_defaults(func=fails)
    with pytest.raises(BrokenPipeError):
        cli.main([])
