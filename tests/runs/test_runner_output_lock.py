"""Start goes through the output's lock (a live run writing the same output is named and nothing is
launched), refuses an output name too long for its folder, passes --resume-changed on; run folders
of runs started in the same second (`-2`, `-3`) are recognised and followed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lora_trainer.config.presets import PRESETS
from lora_trainer.host import StandaloneHost
from lora_trainer.project import Project
from lora_trainer.runs import layout
from lora_trainer.runs.follow import find_new_run_dir
from lora_trainer.runs.runner import RunnerError, TrainRunner, config_for_project
from lora_trainer.runs.trainer_record import process_start_time


class CountingHost(StandaloneHost):
    freed = 0

    def free_memory(self) -> None:
        self.freed += 1


@pytest.fixture
def setup(tmp_path):
    (tmp_path / "hero" / "img" / "1_hero").mkdir(parents=True)
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"x")
    project = Project(tmp_path / "hero", "hero", repeats=1)
    host = CountingHost(workspace_dir=tmp_path)
    runner = TrainRunner(host, poll_interval=0.2)
    settings = {**PRESETS["CPU smoke test"], "output_name": "hero"}
    yield runner, host, project, config_for_project(project, settings, str(model))
    runner.kill()


def test_start_refuses_an_output_a_live_run_holds_naming_it(setup):
    runner, host, project, config = setup
    Path(config.output_dir).mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        layout.take_output_lock(config.output_dir, "hero", holder.pid, process_start_time(holder.pid))
        with pytest.raises(RunnerError, match=rf"already writing 'hero'.*process {holder.pid}, started"):
            runner.start(project, config)
        assert host.freed == 0 and not project.trainer_log.exists(), "nothing was launched"
    finally:
        holder.kill()
        holder.wait()
    assert layout.output_lock_owner(config.output_dir, "hero") is None, "a dead holder's lock is stale"


def test_start_refuses_an_output_name_too_long_for_the_folder(setup):
    runner, host, project, config = setup
    name = "n" * 240
    with pytest.raises(RunnerError, match=rf"output_name '{name}' is too long.*at most \d+ bytes"):
        runner.start(project, config.replace(output_name=name))
    assert host.freed == 0 and not project.trainer_log.exists()


def test_resume_changed_reaches_the_trainer_command(setup):
    runner, _, project, _ = setup
    command = runner.command(project.config_file, True, True)
    assert command[-2:] == ["--resume", "--resume-changed"] or "--resume-changed" in command
    assert "--resume-changed" not in runner.command(project.config_file, True)
    assert "--resume-changed" not in runner.command(project.config_file, False, True)


def test_run_folders_of_the_same_second_are_recognised_newest_first(tmp_path):
    started = 1_800_000_000.0
    base = layout.run_folder_name("hero", started)
    for suffix in ("", "-2", "-9", "-10"):
        (tmp_path / f"{base}{suffix}").mkdir()
        (tmp_path / f"{base}{suffix}" / "events.jsonl").write_text("")
    assert layout.run_folder_stamp(f"{base}-2", "hero") == base[4:]
    assert layout.run_folder_stamp(f"{base}-1", "hero") is None
    assert layout.run_folder_stamp(f"{base}-x", "hero") is None
    assert find_new_run_dir(tmp_path, "hero", started).name == f"{base}-10"
    assert layout.claim_run_folder(tmp_path, "hero", started).name == f"{base}-3"


def _launch_folder(folder: Path, pid: int) -> Path:
    import json

    folder.mkdir(parents=True)
    event = {"event": "launch", "time": 1.0, "output_dir": "m", "output_name": "hero", "pid": pid,
             "process_started": process_start_time(pid), "resumed": False}
    (folder / "events.jsonl").write_text(json.dumps(event) + "\n")
    return folder


def test_a_refused_trainer_never_takes_the_running_ones_run_folder_as_its_own(tmp_path):
    from lora_trainer.runs.runner import _launched_by

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        theirs = _launch_folder(tmp_path / "theirs", other.pid)
        assert not _launched_by(theirs, 999_999_999 if other.pid != 999_999_999 else 1)
        assert _launched_by(theirs, other.pid)
        import os
        assert _launched_by(theirs, os.getpid()), "a trainer started through a launcher process of ours"
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "events.jsonl").write_text("")
        assert not _launched_by(tmp_path / "empty", other.pid), "not before its launch event"
    finally:
        other.kill()
        other.wait()


def test_a_trainer_refused_by_the_lock_ends_as_failed_naming_the_running_one(setup, monkeypatch):
    """Two UIs pressing Start at once both pass Start's check: the trainer's own lock refuses the
    second, and its status says so (and never shows the running run's folder as its own)."""
    import time

    runner, _, project, config = setup
    # Both checks at Start pass while the other UI's trainer has not begun yet (the race):
    monkeypatch.setattr(TrainRunner, "_check_output_free", staticmethod(lambda config: None))
    monkeypatch.setattr(TrainRunner, "_check_no_outside_run", staticmethod(lambda projects: None))
    Path(config.output_dir).mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        layout.take_output_lock(config.output_dir, "hero", holder.pid, process_start_time(holder.pid))
        _launch_folder(Path(config.logging_dir) / layout.run_folder_name("hero", time.time() + 1), holder.pid)
        runner.start(project, config)
        deadline = time.monotonic() + 120
        while runner.status().active and time.monotonic() < deadline:
            time.sleep(0.2)
        status = runner.status()
        assert status.state == "failed", (status.state, status.message, status.log_tail)
        assert "already writing 'hero'" in status.log_tail and f"process {holder.pid}" in status.log_tail
        assert status.run_dir is None, "the running run's folder is not taken for this one"
    finally:
        holder.kill()
        holder.wait()
