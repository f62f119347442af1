"""The record of a running trainer that lets a restarted UI find it: alive only while that very
process runs (not a later one with the same pid), stale records deleted."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from lora_trainer.runs.trainer_record import (
    EXIT_UNKNOWN,
    RecordedProcess,
    TrainerRecord,
    live_trainer,
    process_start_time,
    read_record,
    remove_record,
    write_record,
)


@pytest.fixture
def sleeper():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def record_for(pid: int, started: float, **changes) -> TrainerRecord:
    fields = dict(pid=pid, started=started, project_root="/w/hero", project_name="hero", repeats=1,
                  config_file="/w/hero/hero.json", config={"output_name": "hero"}, launched_at=1.0,
                  log_offset=0, run_dir=None)
    return TrainerRecord(**{**fields, **changes})


def test_a_live_trainer_is_found_until_it_ends(tmp_path, sleeper):
    path = tmp_path / "log" / "trainer.pid.json"
    record = record_for(sleeper.pid, process_start_time(sleeper.pid))
    write_record(path, record)
    assert read_record(path) == record
    found, process = live_trainer(path)
    assert found == record and process.pid == sleeper.pid and process.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=0.1)

    process.kill()
    assert process.wait(timeout=10) == EXIT_UNKNOWN  # not our child: how it ended is in its events
    assert live_trainer(path) is None and not path.exists()  # stale: deleted


def test_a_reused_pid_is_not_the_trainer(tmp_path, sleeper):
    path = tmp_path / "trainer.pid.json"
    write_record(path, record_for(sleeper.pid, process_start_time(sleeper.pid) - 3600))
    assert RecordedProcess.find(sleeper.pid, process_start_time(sleeper.pid) - 3600) is None
    assert live_trainer(path) is None and not path.exists()
    assert sleeper.poll() is None  # the unrelated process was left alone


def test_records_of_gone_processes_and_unreadable_records_are_deleted(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = tmp_path / "trainer.pid.json"
    write_record(path, record_for(int(done.stdout), time.time() - 5))
    assert live_trainer(path) is None and not path.exists()
    path.write_text("{not json")
    assert live_trainer(path) is None and not path.exists()
    assert live_trainer(tmp_path / "none.json") is None


def test_remove_record_leaves_a_newer_runs_record(tmp_path):
    path = tmp_path / "trainer.pid.json"
    write_record(path, record_for(123, 1.0))
    remove_record(path, 456)
    assert read_record(path).pid == 123
    remove_record(path, 123)
    assert not path.exists()
