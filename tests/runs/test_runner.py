"""The UI's training runner: real trainer subprocesses on the tiny model (CPU), followed through
events.jsonl; saved LoRAs handed to the host; stop, resume and failures as the user sees them; a run
adopted after a UI restart; the project's LoRA files listed; output names already used refused; a
project's last run read back from its files (what a page on that project shows), the trainer's console
output as a terminal shows it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lora_trainer.config import ConfigError
from lora_trainer.config.presets import PRESETS
from lora_trainer.demo.synthetic import make_character_dataset
from lora_trainer.host import StandaloneHost, subprocess_env
from lora_trainer.project import Project, open_project
from lora_trainer.runs import layout
from lora_trainer.runs.follow import last_run_status, log_header, read_log_tail
from lora_trainer.runs.layout import RunFiles
from lora_trainer.runs.runner import (
    DatasetChanged,
    OutputNameTaken,
    RunnerError,
    TrainRunner,
    config_for_project,
    load_project_settings,
    resumable_output_name,
)
from lora_trainer.runs.trainer_record import TrainerRecord, process_start_time, write_record

pytestmark = pytest.mark.slow


@dataclass
class RecordingHost(StandaloneHost):
    """The standalone host, recording what the runner asks of it."""

    published: list[Path] = field(default_factory=list)
    memory_freed: int = 0
    refuse: set[str] = field(default_factory=set)  # file stems whose publishing fails
    busy_until: threading.Event | None = None  # free_memory waits for it (a generation in progress)

    def publish_lora(self, lora_file: Path, project: str) -> str:
        if Path(lora_file).stem in self.refuse:
            raise FileExistsError(f"the name {Path(lora_file).stem!r} is taken")
        self.published.append(Path(lora_file))
        return f"pub-{Path(lora_file).stem}"

    def free_memory(self) -> None:
        if self.busy_until and not self.busy_until.wait(timeout=60):
            raise TimeoutError("the test never let free_memory finish")
        self.memory_freed += 1


@pytest.fixture
def host(tmp_path, tiny_sdxl):
    return RecordingHost(workspace_dir=tmp_path, config_dir=tiny_sdxl.config_dir)


@pytest.fixture
def runner(host):
    runner = TrainRunner(host, poll_interval=0.2)
    yield runner
    runner.kill()  # a failed test must not leave a trainer running


@pytest.fixture
def project(character_dataset):
    return Project(character_dataset.parent, "myLoRA", repeats=1)  # img/1_myLoRA/ from the fixture


def smoke_config(project, tiny_sdxl, **changes):
    settings = {**PRESETS["CPU smoke test"], "output_name": "myLoRA", "network_train_unet_only": True, **changes}
    return config_for_project(project, settings, str(tiny_sdxl.single_file))


def wait_for(runner, condition, timeout=180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = runner.status()
        if condition(status):
            return status
        time.sleep(0.1)
    raise AssertionError(f"timed out; last status: {status.state} {status.message}\n{status.log_tail}")


def test_run_to_the_end_publishes_saved_loras_and_names_refusals(runner, host, project, tiny_sdxl):
    host.refuse = {"myLoRA-000001"}
    status = runner.start(project, smoke_config(project, tiny_sdxl))
    assert status.state == "running" and host.memory_freed == 1
    with pytest.raises(RunnerError, match="already in progress"):
        runner.start(project, smoke_config(project, tiny_sdxl))

    status = wait_for(runner, lambda s: not s.active)
    assert status.state == "finished", status.log_tail
    names = ["myLoRA-000002", "myLoRA"]
    assert [s.path.name for s in status.saved] == [f"{n}.safetensors" for n in names]
    assert all(s.path.is_file() for s in status.saved)
    assert [p.stem for p in host.published] == names
    assert [s.prompt for s in status.saved] == [f"<lora:pub-{n}:1>" for n in names]
    assert [(s.kind, s.epoch) for s in status.saved] == [("epoch", 2), ("final", 2)]
    # a file the host refused is named with the reason, and the run went on
    first = project.model.resolve() / "myLoRA-000001.safetensors"
    assert first.is_file() and status.publish_problems == [
        f"{first}: could not make it available to standalone: the name 'myLoRA-000001' is taken"]
    assert status.message == f"finished: 2 epoch(s), 16 steps; the LoRA files are in {project.model.resolve()}"
    assert (status.epoch, status.epochs, status.step, status.total_steps) == (2, 2, 16, 16)
    assert [p[0] for p in status.losses] == list(range(1, 17)) and status.loss is not None
    assert status.run_dir.parent == project.log.resolve() and status.error == ""
    assert load_project_settings(project)["pretrained_model_name_or_path"] == str(tiny_sdxl.single_file)
    assert "finished:" in project.trainer_log.read_text()  # the trainer's console output is kept


def test_stop_then_resume_finishes_the_same_run(runner, host, project, tiny_sdxl):
    config = smoke_config(project, tiny_sdxl, max_train_epochs=4, save_every_n_epochs=2)
    runner.start(project, config)
    wait_for(runner, lambda s: s.step >= 1 or not s.active)
    assert runner.stop().state == "stopping"
    stopped = wait_for(runner, lambda s: not s.active)
    assert stopped.state == "stopped", stopped.log_tail
    assert 1 <= stopped.step < 32 and "Resume continues" in stopped.message
    step_file = project.model / f"myLoRA-step{stopped.step:08d}.safetensors"
    assert step_file.is_file() and host.published[-1] == step_file.resolve()
    assert not (project.model / "myLoRA.stop").exists()

    runner.start(project, config, resume=True)
    status = wait_for(runner, lambda s: not s.active)
    assert status.state == "finished", status.log_tail
    assert (status.step, status.total_steps) == (32, 32)
    assert status.run_dir == stopped.run_dir  # the curve continues in the same log folder
    assert [p[0] for p in status.losses] == list(range(1, 33))
    before = [f"myLoRA-{e:06d}.safetensors" for e in (2, 4) if e * 8 < stopped.step]
    after = [f"myLoRA-{e:06d}.safetensors" for e in (2, 4) if e * 8 >= stopped.step]
    # The resumed run's list goes on from the stopped one's.
    assert [s.path.name for s in status.saved] == before + [step_file.name] + after + ["myLoRA.safetensors"]
    assert (project.model / "myLoRA.safetensors").is_file()


def test_a_missing_model_is_refused_at_start_naming_the_key(runner, host, project, tiny_sdxl, tmp_path):
    missing = tmp_path / "no-such-model.safetensors"
    config = smoke_config(project, tiny_sdxl).replace(pretrained_model_name_or_path=str(missing))
    with pytest.raises(ConfigError, match=rf"pretrained_model_name_or_path = '{missing}': no such file or folder"):
        runner.start(project, config)
    assert runner.status().state == "idle" and not project.trainer_log.exists()  # nothing was launched


def test_trainer_error_shows_in_the_status(runner, host, project, tiny_sdxl, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    config = smoke_config(project, tiny_sdxl).replace(pretrained_model_name_or_path=str(broken))
    runner.start(project, config)
    status = wait_for(runner, lambda s: not s.active)
    assert status.state == "failed"
    assert str(broken) in status.error
    assert status.message == f"failed: {status.error}"
    assert host.published == [] and status.saved == []
    assert str(broken) in status.log_tail


def test_killed_process_is_reported_and_a_new_run_may_start(runner, project, tiny_sdxl):
    runner.start(project, smoke_config(project, tiny_sdxl))
    runner.kill()
    status = runner.status()
    assert status.state == "failed" and status.error.startswith("the training process was killed by SIGKILL")
    with pytest.raises(RunnerError, match="no training is running"):
        runner.stop()


def test_config_errors_name_the_key_before_anything_starts(runner, host, project, tiny_sdxl):
    with pytest.raises(ConfigError, match="network_dim = 0: must be >= 1"):
        smoke_config(project, tiny_sdxl, network_dim=0)
    with pytest.raises(ConfigError, match="pretrained_model_name_or_path is empty"):
        config_for_project(project, dict(PRESETS["CPU smoke test"]), "  ")
    with pytest.raises(RunnerError, match="nothing to resume for 'myLoRA'"):
        runner.start(project, smoke_config(project, tiny_sdxl), resume=True)
    assert runner.status().state == "idle" and host.memory_freed == 0


def test_bare_resume_flag_means_the_state_folder_in_output_dir():
    from lora_trainer.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "--config", "x.json", "--resume"]).resume is True
    assert parser.parse_args(["train", "--config", "x.json", "--resume", "s"]).resume == Path("s")
    assert parser.parse_args(["train", "--config", "x.json"]).resume is None


def test_status_answers_while_the_host_frees_its_memory(runner, host, project, tiny_sdxl):
    host.busy_until = threading.Event()
    starter = threading.Thread(target=runner.start, args=(project, smoke_config(project, tiny_sdxl)))
    starter.start()
    status = wait_for(runner, lambda s: s.state == "starting", timeout=30)
    assert "freeing standalone's GPU memory" in status.message and status.active
    with pytest.raises(RunnerError, match="already in progress"):
        runner.start(project, smoke_config(project, tiny_sdxl))
    with pytest.raises(RunnerError, match="still starting"):
        runner.stop()
    host.busy_until.set()
    starter.join(timeout=30)
    assert runner.status().state == "running" and host.memory_freed == 1


# --- a UI restart while a trainer runs ---------------------------------------------------------------

# A first UI process: starts a run, then ends without a word to its trainer (a crash, Forge restarting).
FIRST_UI = """
import json, os, sys
from lora_trainer.host import StandaloneHost
from lora_trainer.project import open_project
from lora_trainer.runs.runner import TrainRunner, config_for_project
args = json.loads(sys.argv[1])
project = open_project(args["workspace"], "hero")
runner = TrainRunner(StandaloneHost(args["workspace"], config_dir=args["config_dir"]))
print(runner.start(project, config_for_project(project, args["settings"], args["model"])).state, flush=True)
os._exit(0)
"""


def test_a_new_runner_adopts_the_run_a_restarted_ui_left_running(host, tiny_sdxl, tmp_path):
    make_character_dataset(tmp_path / "hero" / "img", name="hero", count=8, size=64, repeats=1, seed=0)
    project = open_project(tmp_path, "hero")
    settings = {**PRESETS["CPU smoke test"], "output_name": "hero", "network_train_unet_only": True,
                "max_train_epochs": 50}
    args = {"workspace": str(tmp_path), "config_dir": str(tiny_sdxl.config_dir), "settings": settings,
            "model": str(tiny_sdxl.single_file)}
    first_ui = subprocess.run([sys.executable, "-c", FIRST_UI, json.dumps(args)], env=subprocess_env(),
                              capture_output=True, text=True, timeout=120)
    assert first_ui.stdout.strip() == "running", first_ui.stderr
    assert project.trainer_record.is_file()

    runner = TrainRunner(host, poll_interval=0.2)  # the restarted UI's: finds the trainer in the workspace
    try:
        status = wait_for(runner, lambda s: s.step >= 1 or not s.active)
        assert (status.state, status.project, status.output_name) == ("running", "hero", "hero")
        with pytest.raises(RunnerError, match=r"already in progress \(hero: hero\)"):  # no second trainer
            runner.start(project, config_for_project(project, {**settings, "output_name": "hero_v2"},
                                                     str(tiny_sdxl.single_file)))
        assert runner.stop().state == "stopping"
        stopped = wait_for(runner, lambda s: not s.active)
        assert stopped.state == "stopped", stopped.log_tail
        stop_file = project.model.resolve() / f"hero-step{stopped.step:08d}.safetensors"
        assert stop_file.is_file() and stopped.saved[-1].path == stop_file and host.published[-1] == stop_file
        assert not project.trainer_record.exists()  # removed once the run ended
    finally:
        runner.kill()


def recorded(project, pid: int, started: float | None, config) -> None:
    write_record(project.trainer_record, TrainerRecord(
        pid=pid, started=started, project_root=str(project.root), project_name=project.name, repeats=1,
        config_file=str(project.config_file), config=config.to_dict(), launched_at=time.time(), log_offset=0))


def test_selecting_a_project_adopts_its_live_trainer_and_drops_a_stale_record(runner, project, tiny_sdxl):
    config = smoke_config(project, tiny_sdxl)
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    recorded(project, int(done.stdout), time.time() - 1, config)  # its process is gone
    assert runner.adopt([project]).state == "idle" and not project.trainer_record.exists()

    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a trainer, loading
    try:
        recorded(project, stand_in.pid, process_start_time(stand_in.pid), config)
        status = runner.adopt([project])
        assert (status.state, status.message) == ("running", "loading the model and checking the dataset")
        with pytest.raises(RunnerError, match="already in progress"):
            runner.start(project, config)
        runner.stop()
        assert (project.model / "myLoRA.stop").is_file()  # what the trainer checks after each step
        stand_in.kill()
        status = wait_for(runner, lambda s: not s.active, timeout=30)
        assert status.state == "failed" and "exit code is unknown" in status.error
        assert not project.trainer_record.exists() and not (project.model / "myLoRA.stop").exists()
    finally:
        stand_in.kill()
        stand_in.wait()


def test_a_planted_record_pointing_outside_its_project_is_not_followed(runner, project, tiny_sdxl, tmp_path):
    """A record names folders Stop writes into: one whose paths leave its project is ignored."""
    victim = tmp_path.parent / f"{tmp_path.name}-victim"
    config = smoke_config(project, tiny_sdxl).replace(output_dir=str(victim))
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a live process
    try:
        recorded(project, stand_in.pid, process_start_time(stand_in.pid), config)
        assert runner.adopt([project]).state == "idle"
        with pytest.raises(RunnerError, match="no training is running"):
            runner.stop()
        assert not victim.exists()
    finally:
        stand_in.kill()
        stand_in.wait()


# --- the project's LoRA files and their names ----------------------------------------------------------

def test_start_refuses_an_output_name_with_files_before_any_work(runner, host, project, tiny_sdxl, write_lora):
    write_lora(project.model, "myLoRA-000001", 1, ss_output_name="myLoRA")
    write_lora(project.model, "myLoRA", 2, ss_output_name="myLoRA")
    write_lora(project.model, "myLoRA_v2-step00000003", 3, ss_output_name="myLoRA_v2")
    with pytest.raises(OutputNameTaken) as refused:
        runner.start(project, smoke_config(project, tiny_sdxl))
    assert refused.value.suggestion == "myLoRA_v3"
    assert [p.name for p in refused.value.files] == ["myLoRA-000001.safetensors", "myLoRA.safetensors"]
    message = str(refused.value)
    assert f"'myLoRA' is taken by 2 LoRA file(s) in {project.model}" in message
    assert "myLoRA-000001.safetensors, myLoRA.safetensors" in message and "use 'myLoRA_v3'" in message
    assert host.memory_freed == 0 and not project.config_file.exists() and runner.status().state == "idle"
    with pytest.raises(RunnerError, match="nothing to resume for 'myLoRA'"):  # Resume keeps its name
        runner.start(project, smoke_config(project, tiny_sdxl), resume=True)


def test_project_loras_lists_earlier_runs_and_hands_each_file_to_the_host_once(runner, host, project, write_lora):
    write_lora(project.model, "old-000001", 100, ss_output_name="old", ss_epoch="1", ss_steps="8")
    write_lora(project.model, "old", 101, ss_output_name="old", ss_epoch="1", ss_steps="8")
    write_lora(project.model, "new-step00000003", 200, ss_output_name="new", ss_epoch="0", ss_steps="3")
    host.refuse = {"old"}
    saved, problems = runner.project_loras(project)
    model = project.model.resolve()
    assert [(s.output_name, s.path, s.kind, s.prompt) for s in saved] == [
        ("new", model / "new-step00000003.safetensors", "stop", "<lora:pub-new-step00000003:1>"),
        ("old", model / "old-000001.safetensors", "epoch", "<lora:pub-old-000001:1>")]
    assert problems == [f"{model / 'old.safetensors'}: could not make it available to standalone: "
                        "the name 'old' is taken"]
    assert runner.project_loras(project) == (saved, problems)
    assert len(host.published) == 2  # once per file, though the UI asks every second
    host.refuse = set()
    saved, problems = runner.project_loras(project, recheck=True)  # the project selected again
    assert problems == [] and [s.name for s in saved] == ["pub-new-step00000003", "pub-old-000001", "pub-old"]
    assert len(host.published) == 5


# --- a project's last run, read back from its files (no runner follows it) -----------------------------

def write_run(project: Project, output_name: str, started: float, events: list[tuple[str, dict]],
              run_dir: Path | None = None) -> Path:
    """A run folder with these events, one second apart from `started` (`run_dir`: a resumed run's)."""
    run_dir = run_dir or project.log / layout.run_folder_name(output_name, started)
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (kind, fields) in enumerate(events):
        layout.check_event(kind, fields)  # written as the trainer writes them
        lines.append(json.dumps({"event": kind, "time": started + i, **fields}) + "\n")
    with open(layout.events_file(run_dir), "a", encoding="utf-8") as f:
        f.writelines(lines)
    return run_dir


def start_event(total=32, resumed_at=None):
    return (layout.START, dict(total_steps=total, epochs=4, steps_per_epoch=8, images=8, samples_per_epoch=8,
                               resumed_at_step=resumed_at, run_dir="r", processes=1, device="cpu",
                               validation_images=0))


def step_events(first, last):
    return [(layout.STEP, dict(step=s, epoch=1 + (s - 1) // 8, loss=1.0 + s / 100, average_loss=1.0, lr={"unet": 1e-3}))
            for s in range(first, last + 1)]


def write_log(project: Project, started: float, ended: float, output: str, resume: bool = False) -> None:
    """A launch's block in trainer.log as the runner and the trainer write it, the last line at `ended`."""
    project.trainer_log.parent.mkdir(parents=True, exist_ok=True)
    with open(project.trainer_log, "a", encoding="utf-8", newline="") as f:
        f.write(log_header(resume, ["python", "-m", "lora_trainer", "train"], now=started) + output)
    os.utime(project.trainer_log, (ended, ended))


# tqdm redraws its bar with \r (twice a step: the count, then the loss); `print` writes right after a
# redraw, with no newline between.
TQDM_OUTPUT = (
    "\rLoading pipeline components...:   0%|          | 0/7 [00:00<?, ?it/s]"
    "\rLoading pipeline components...: 100%|██████████| 7/7 [00:00<00:00, 31.27it/s]\n"
    "training 32 steps (4 epochs x 8) on cpu\n"
    "\rhero:   0%|          | 0/32 [00:00<?, ?step/s]"
    "\rhero:   3%|▎         | 1/32 [00:01<00:40,  1.30s/step]"
    "\rhero:   3%|▎         | 1/32 [00:01<00:40,  1.30s/step, epoch=1, loss=1.0871]"
    "\rhero:   6%|▋         | 2/32 [00:02<00:39,  1.31s/step, epoch=1, loss=1.0871]"
    "\rhero:   6%|▋         | 2/32 [00:02<00:39,  1.31s/step, epoch=1, loss=1.0278]saved /m/hero-step00000002.safetensors\n"
    "\rhero:   6%|▋         | 2/32 [00:02<00:40,  1.33s/step, epoch=1, loss=1.0278]\n"
    "stopped at step 2; resume with:\n"
    "  python -m lora_trainer train --config hero.json --resume\n")


def test_the_log_tail_shows_what_a_terminal_shows(tmp_path):
    """Each progress line once (its last redraw), and a line printed after a redraw on its own line."""
    log = tmp_path / "trainer.log"
    log.write_text("older output\n" + TQDM_OUTPUT, encoding="utf-8", newline="")
    assert read_log_tail(log, len("older output\n")) == [
        "Loading pipeline components...: 100%|██████████| 7/7 [00:00<00:00, 31.27it/s]",
        "training 32 steps (4 epochs x 8) on cpu",
        "hero:   6%|▋         | 2/32 [00:02<00:39,  1.31s/step, epoch=1, loss=1.0278]",
        "saved /m/hero-step00000002.safetensors",
        "hero:   6%|▋         | 2/32 [00:02<00:40,  1.33s/step, epoch=1, loss=1.0278]",
        "stopped at step 2; resume with:",
        "  python -m lora_trainer train --config hero.json --resume"]
    # a bar still being drawn (no newline yet): its last drawing; Windows line ends are no redraws
    log.write_text("a\r\nb\r\n\rhero: 3%|▎| 1/32 [00:01<00:40]\rhero: 6%|▋| 2/32 [00:02<00:39]", encoding="utf-8",
                   newline="")
    assert read_log_tail(log, 0) == ["a", "b", "hero: 6%|▋| 2/32 [00:02<00:39]"]


def test_a_stopped_run_is_read_back_as_stopped_and_resumable(tmp_path, write_lora):
    """After a UI restart no runner follows the run: its files say how it ended."""
    project = Project(tmp_path / "hero", "hero").create()
    assert last_run_status(project).state == "idle" and resumable_output_name(project) is None

    started = time.time() - 600
    write_log(project, started - 5, started + 6, TQDM_OUTPUT)
    stop_file = project.model / "hero-step00000003.safetensors"
    run_dir = write_run(project, "hero", started, [start_event(), *step_events(1, 3), (layout.SAVED, dict(
        kind=layout.STOP, path=str(stop_file), epoch=0, step=3, rank_checksums=[0.0])),
        (layout.STOPPED, dict(step=3, epoch=0, resume_with="s"))])
    status = last_run_status(project)
    assert (status.state, status.message) == ("stopped", "stopped at step 3/32; Resume continues from there")
    assert (status.project, status.output_name, status.run_dir, status.step) == ("hero", "hero", run_dir, 3)
    assert [s for s, _, _ in status.losses] == [1, 2, 3] and not status.active and status.eta_s is None
    assert status.log_tail.splitlines()[-2:] == ["stopped at step 2; resume with:",
                                                 "  python -m lora_trainer train --config hero.json --resume"]

    # Resume needs the state the trainer saved beside the LoRA (and a run that did not finish)
    write_lora(project.model, "hero-step00000003", started + 10, ss_output_name="hero", ss_steps="3")
    assert resumable_output_name(project) is None  # no state saved
    files = RunFiles(project.model, "hero")
    files.state_dir.mkdir()
    files.progress.write_text(json.dumps({"global_step": 3, "run_name": run_dir.name}))
    assert resumable_output_name(project) == "hero"
    write_lora(project.model, "old_v2-000001", started - 100, ss_output_name="old_v2", ss_steps="8")
    assert resumable_output_name(project) == "hero"  # a run without state is not resumable

    # resumed, then finished: the last launch's events tell the state; the curve is the whole run's
    write_log(project, started + 19, started + 51, "training 32 steps\nfinished: /m/hero.safetensors\n",
              resume=True)
    write_run(project, "hero", started + 20, [start_event(resumed_at=3), *step_events(4, 32), (
        layout.FINISHED, dict(path=str(files.final_lora), epoch=4, step=32))], run_dir=run_dir)
    status = last_run_status(project)
    assert status.state == "finished" and status.message.startswith("finished: 4 epoch(s), 32 steps")
    assert [s for s, _, _ in status.losses] == list(range(1, 33))
    assert status.log_tail == "training 32 steps\nfinished: /m/hero.safetensors"
    assert resumable_output_name(project) is None  # finished (its final file is not needed to tell)


def test_a_failed_run_is_read_back_with_its_error(tmp_path):
    project = Project(tmp_path / "hero", "hero").create()
    started = time.time() - 600
    write_log(project, started - 1, started + 4, "training\nerror: out of memory\n")
    write_run(project, "hero", started, [start_event(), *step_events(1, 2),
                                         (layout.ERROR, dict(kind="out_of_memory", message="CUDA out of memory"))])
    status = last_run_status(project)
    assert (status.state, status.error, status.step) == ("failed", "CUDA out of memory", 2)

    # a later launch that failed before writing any event: its output tells
    write_log(project, started + 60, started + 61, "error: model not found: /m/x.safetensors (no such file or folder)\n")
    status = last_run_status(project)
    assert (status.state, status.error) == ("failed", "model not found: /m/x.safetensors (no such file or folder)")
    assert status.losses == [] and status.run_dir is None

    # a headless run after it (no block in trainer.log), killed: it ended without a word
    write_run(project, "hero_v2", started + 120, [start_event(), *step_events(1, 5)])
    status = last_run_status(project)
    assert status.state == "failed" and status.error.startswith("it ended without a word") and status.log_tail == ""
    assert status.output_name == "" and status.step == 5  # it saved no LoRA: its name is unknown


def test_a_project_shows_its_own_run_and_names_one_in_another_project(runner, project, tiny_sdxl, tmp_path):
    """The status a page shows is its project's: another project's run is named, not shown."""
    other = Project(tmp_path / "other", "other").create()
    started = time.time() - 600
    write_run(other, "other", started, [start_event(), *step_events(1, 2),
                                        (layout.STOPPED, dict(step=2, epoch=0, resume_with="s"))])
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a trainer, loading
    try:
        recorded(project, stand_in.pid, process_start_time(stand_in.pid), smoke_config(project, tiny_sdxl))
        runner.adopt([project])
        assert runner.status(project).state == "running" and runner.status().project == "myLoRA"
        shown = runner.status(other)
        assert (shown.state, shown.project, shown.step) == ("stopped", "other", 2)
        assert shown.elsewhere == ("training in project myLoRA (myLoRA): loading the model and checking the "
                                   "dataset") and not shown.active
        assert runner.current_output_name(project) == "myLoRA" and runner.current_output_name(other) is None
        stand_in.kill()
        wait_for(runner, lambda s: not s.active, timeout=30)
        assert runner.status(other).elsewhere == ""  # nothing trains any more
    finally:
        stand_in.kill()
        stand_in.wait()


def test_a_run_started_from_the_command_line_shows_as_running_and_stops_from_the_ui(
        runner, host, tiny_sdxl, tmp_path):
    """`python -m lora_trainer train` in a terminal, then the UI opened on its project: the page shows
    it running (not failed), Start anywhere is refused (it holds the GPU), and Stop reaches it."""
    project = Project(tmp_path / "hero", "hero").create()  # in the workspace (the host's tmp_path)
    make_character_dataset(project.img, name="hero", count=4, size=64, repeats=1, seed=2)
    config = smoke_config(project, tiny_sdxl, max_train_epochs=200, output_name="hero")
    config.save_json(project.config_file)
    headless = subprocess.Popen([sys.executable, "-m", "lora_trainer", "train", "--config", str(project.config_file),
                                 "--model-config-dir", str(tiny_sdxl.config_dir)], env=subprocess_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while (status := runner.status(project)).step < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status.state == "running" and status.active, status.message
        assert status.message.startswith(f"running outside this UI (process {headless.pid}): epoch 1/200")
        assert status.output_name == "hero"

        other = Project(tmp_path / "other", "other").create()
        make_character_dataset(other.img, name="other", count=2, size=64, repeats=1, seed=1)
        with pytest.raises(RunnerError, match=rf"started outside this UI is running in project hero .*{headless.pid}"):
            runner.start(other, smoke_config(other, tiny_sdxl, output_name="other"))
        assert host.memory_freed == 0

        runner.stop(project)
        assert headless.wait(timeout=120) == 0
    finally:
        headless.kill()
    status = runner.status(project)
    assert status.state == "stopped" and status.output_name == "hero", status.message
    assert RunFiles(config.output_dir, "hero").state_dir.is_dir()


def test_resume_after_the_dataset_changed_is_refused_listing_the_changes_until_confirmed(
        runner, host, project, tiny_sdxl):
    config = smoke_config(project, tiny_sdxl, max_train_epochs=4)
    runner.start(project, config)
    wait_for(runner, lambda s: s.step >= 1 or not s.active)
    runner.stop()
    assert wait_for(runner, lambda s: not s.active).state == "stopped"
    caption = sorted(project.train_images.glob("*.txt"))[0]
    caption.write_text("myLoRA, a new tag", encoding="utf-8")
    removed = sorted(project.train_images.glob("*.png"))[-1]
    removed.unlink()

    with pytest.raises(DatasetChanged) as refused:
        runner.start(project, config, resume=True)
    assert refused.value.changes == [f"removed: 1_myLoRA/{removed.name}", f"changed caption: 1_myLoRA/{caption.stem}.png"]
    assert "resume with the changes" in str(refused.value)
    assert runner.status().state == "stopped" and host.memory_freed == 1  # nothing was launched

    runner.start(project, config, resume=True, resume_changed=True)
    status = wait_for(runner, lambda s: not s.active)
    assert status.state == "finished", status.log_tail
    assert any(f"removed: 1_myLoRA/{removed.name}" in w for w in status.warnings)


def test_tensorboard_starts_once_per_project_and_says_why_it_cannot(tmp_path):
    """Start TensorBoard: a server on localhost for the project's logs, answering; a second start gives
    the same address (no second server); a project without logs says so."""
    import urllib.request

    from lora_trainer.project import Project
    from lora_trainer.runs.tensorboard import TensorBoardError, TensorBoards

    servers = TensorBoards()
    project = Project(tmp_path / "hero", "hero").create()
    empty = Project(tmp_path / "new", "new")
    try:
        url = servers.start(project)
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=30) as answer:
            assert answer.status == 200 and b"TensorBoard" in answer.read()
        assert servers.start(project) == url and servers.url(project) == url
        assert len(servers._servers) == 1
        with pytest.raises(TensorBoardError, match="no logs yet in .*new/log: start a training first"):
            servers.start(empty)
    finally:
        servers.stop_all()
    assert servers.url(project) is None
