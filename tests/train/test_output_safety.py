"""Nothing lost, nothing overwritten: the output lock, leftovers of a killed run, file names too long
for the folder, torch's own disk-full error, damaged states and a dataset changed before a resume.
Each refusal comes before the model loads (load_sdxl is replaced by a sentinel that fails the test)."""

from __future__ import annotations

import errno
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lora_trainer.config.presets import load_preset
from lora_trainer.fsutil import OutputError
from lora_trainer.host import subprocess_env
from lora_trainer.runs import layout
from lora_trainer.train import cli
from lora_trainer.train import state as state_module
from lora_trainer.train import trainer as trainer_module
from lora_trainer.train.trainer import TrainingError, train


class ModelLoaded(Exception):
    """The run got past every check and began loading the model."""


@pytest.fixture
def no_model(monkeypatch):
    def load(*args, **kwargs):
        raise ModelLoaded()

    monkeypatch.setattr(trainer_module, "load_sdxl", load)


def make_config(tmp_path: Path, **changes):
    img = tmp_path / "img" / "1_hero"
    img.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        if not (img / f"{i}.png").exists():
            (img / f"{i}.png").write_bytes(b"png %d" % i)
            (img / f"{i}.txt").write_text(f"hero, pose {i}", encoding="utf-8")
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"x")
    settings = {"output_name": "hero", "train_data_dir": str(tmp_path / "img"),
                "output_dir": str(tmp_path / "model"), "logging_dir": str(tmp_path / "log"), **changes}
    return load_preset("CPU smoke test", pretrained_model_name_or_path=str(model), **settings)


def write_state(cfg, dataset: dict | None = None) -> Path:
    """A whole state folder as a stopped run leaves it (tiny optimizer and schedule)."""
    files = layout.RunFiles(cfg.output_dir, cfg.output_name)
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([weight])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    state_module.write_main_state(files.state_tmp, trainable={"unet/w": weight}, optimizer=optimizer,
                                  scheduler=scheduler, progress=state_module.Progress(
                                      global_step=3, batch_in_epoch=3, run_name="hero20260101000000"),
                                  config=cfg.to_dict(), dataset=dataset)
    state_module.write_rank_rng(files.state_tmp, 0, state_module.capture_rng(torch.Generator(), random.Random(0)))
    state_module.commit_state(files.state_tmp, files.state_dir)
    return files.state_dir


def dead_process() -> tuple[int, float]:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    from lora_trainer.runs.trainer_record import process_start_time

    started = process_start_time(proc.pid) or 1.0
    proc.wait()
    return proc.pid, started


# --- 1. one run per output --------------------------------------------------------------------------

def test_a_second_run_on_the_same_output_is_refused_before_the_model_loads(tmp_path, no_model):
    cfg = make_config(tmp_path)
    Path(cfg.output_dir).mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from lora_trainer.runs.trainer_record import process_start_time

        started = process_start_time(holder.pid)
        layout.take_output_lock(cfg.output_dir, "hero", holder.pid, started)
        (Path(cfg.output_dir) / "hero.stop").write_text("stop requested\n")
        with pytest.raises(TrainingError, match=rf"already writing 'hero'.*process {holder.pid}, started"):
            train(cfg)
        assert (Path(cfg.output_dir) / "hero.stop").exists(), "the running run's stop request is untouched"
        assert json.loads((Path(cfg.output_dir) / "hero.lock").read_text())["pid"] == holder.pid
        assert not Path(cfg.logging_dir).exists() or not any(Path(cfg.logging_dir).iterdir())
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(ModelLoaded):  # its process has ended: the lock is stale and replaced
        train(cfg)
    assert not (Path(cfg.output_dir) / "hero.lock").exists(), "released when the run ends, also on error"


def test_a_lock_left_by_a_dead_process_is_replaced_and_released(tmp_path, no_model):
    cfg = make_config(tmp_path)
    Path(cfg.output_dir).mkdir(parents=True)
    pid, started = dead_process()
    (Path(cfg.output_dir) / "hero.lock").write_text(json.dumps({"pid": pid, "started": started}))
    seen = []

    def check_lock(event):
        if event["event"] == "launch":
            seen.append(json.loads((Path(cfg.output_dir) / "hero.lock").read_text()))

    with pytest.raises(ModelLoaded):
        train(cfg, on_event=check_lock)
    assert seen and seen[0]["pid"] == os.getpid(), "the run held the lock while it worked"
    assert not (Path(cfg.output_dir) / "hero.lock").exists()


def test_runs_started_in_the_same_second_get_their_own_log_folders(tmp_path, no_model, monkeypatch):
    monkeypatch.setattr(trainer_module.time, "time", lambda: 1_800_000_000.0)
    folders = []
    for out in ("a", "b", "c"):
        cfg = make_config(tmp_path, output_dir=str(tmp_path / out))
        with pytest.raises(ModelLoaded):
            train(cfg, on_event=lambda e: folders.append(e) if e["event"] == "launch" else None)
    runs = sorted(p.name for p in Path(tmp_path / "log").iterdir())
    base = layout.run_folder_name("hero", 1_800_000_000.0)
    assert runs == [base, f"{base}-2", f"{base}-3"]
    assert all((tmp_path / "log" / r / "events.jsonl").is_file() for r in runs), "each its own events"
    assert [layout.run_folder_stamp(r, "hero") for r in runs] == [base[4:]] * 3


# --- 2. late failures ------------------------------------------------------------------------------

def test_torchs_own_disk_full_error_names_the_file_and_leaves_no_partial_state(tmp_path, monkeypatch):
    def save_on_full_disk(obj, f):
        f.write(b"PK partial")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0") from None

    monkeypatch.setattr(state_module.torch, "save", save_on_full_disk)
    cfg = make_config(tmp_path)
    accelerator = SimpleNamespace(is_main_process=True, process_index=0, wait_for_everyone=lambda: None)
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([weight])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    with pytest.raises(OutputError, match=r"hero-state\.tmp/state\.pt: No space left on device") as caught:
        trainer_module._save_state(cfg, accelerator, {"unet": torch.nn.Linear(1, 1)}, optimizer, scheduler,
                                   state_module.Progress(), torch.Generator(), random.Random(0))
    assert caught.value.errno == errno.ENOSPC
    assert not (Path(cfg.output_dir) / "hero-state.tmp").exists(), "the partial state is removed"
    message = trainer_module._output_message(cfg, caught.value, [])
    assert "disk is full" in message and "intact" not in message and "No LoRA file" in message


def test_leftovers_of_a_killed_run_are_removed_at_the_next_start_and_nothing_else(tmp_path, no_model):
    cfg = make_config(tmp_path)
    model = Path(cfg.output_dir)
    model.mkdir(parents=True)
    ours = [".hero-000002.safetensors.k2j4_x9a.tmp", ".hero-step00000012.safetensors.abcdefgh.tmp",
            ".hero.json.a1b2c3d4.tmp", ".hero.safetensors.zzzzzzzz.tmp"]
    others = [".hero_v2-000001.safetensors.abcdefgh.tmp", "hero-000001.safetensors", "hero-notes.tmp",
              ".hero-000002.safetensors.tmp", "keep.txt"]
    for name in ours + others:
        (model / name).write_bytes(b"x")
    (model / "hero-state.tmp").mkdir()
    (model / "hero-state.tmp" / "state.pt").write_bytes(b"half")
    (model / "hero_v2-state.tmp").mkdir()
    with pytest.raises(ModelLoaded):
        train(cfg)
    assert sorted(p.name for p in model.iterdir()) == sorted([*others, "hero_v2-state.tmp"])


def test_a_state_swap_cut_between_its_renames_gets_the_previous_state_back(tmp_path, no_model):
    cfg = make_config(tmp_path)
    state_dir = write_state(cfg)
    state_dir.rename(state_dir.with_name("hero-state.old"))
    with pytest.raises(ModelLoaded):
        train(cfg, resume_from=state_dir)
    assert (state_dir / "state.pt").is_file() and not state_dir.with_name("hero-state.old").exists()


@pytest.mark.parametrize("length", [240, 300])
def test_an_output_name_too_long_for_the_folder_is_refused_before_any_work(tmp_path, no_model, length):
    name = "n" * length
    cfg = make_config(tmp_path, output_name=name)
    limit = layout.name_max(tmp_path)
    with pytest.raises(TrainingError, match=rf"output_name '{name}' is too long.*at most {limit} bytes"):
        train(cfg)
    assert not Path(cfg.output_dir).exists() and not Path(cfg.logging_dir).exists()


def test_the_longest_names_include_the_temporary_ones():
    names = layout.RunFiles("/x", "hero").longest_names()
    assert ".hero-step00000000.safetensors.XXXXXXXX.tmp" in names and "hero-state.tmp" in names
    if layout.name_max("/tmp") == 255:
        assert layout.check_name_lengths("/tmp", "n" * 216) is None
        assert "at most 216 characters" in layout.check_name_lengths("/tmp", "n" * 240)


# --- 3. damaged states -----------------------------------------------------------------------------

def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGES = {
    "truncated state.pt": ("state.pt", _truncate),
    "zero-byte state.pt": ("state.pt", lambda p: p.write_bytes(b"")),
    "random-bytes state.pt": ("state.pt", lambda p: p.write_bytes(random.Random(1).randbytes(4096))),
    "truncated rng file": ("rng-rank0.pt", _truncate),
    "bad progress.json": ("progress.json", lambda p: p.write_text('{"epoch": 0, "glob')),
    "unknown key in progress.json": ("progress.json", lambda p: p.write_text(
        json.dumps({**json.loads(p.read_text()), "colour": "red"}))),
    "truncated config.json": ("config.json", _truncate),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_state_is_refused_naming_the_file_without_a_traceback(tmp_path, no_model, capsys, damage):
    cfg = make_config(tmp_path)
    config = tmp_path / "hero.json"
    cfg.save_json(config)
    state_dir = write_state(cfg)
    name, spoil = DAMAGES[damage]
    spoil(state_dir / name)
    assert cli.run_train(cli_args(config)) == 1
    captured = capsys.readouterr()
    assert f"error: cannot resume from {state_dir}: {name} is damaged" in captured.err
    assert "new run" in captured.err
    assert "weights_only=False" not in captured.out + captured.err and "Traceback" not in captured.err


def cli_args(config: Path, *extra: str):
    from lora_trainer.cli import build_parser

    return build_parser().parse_args(["train", "--config", str(config), "--resume", *extra])


def test_random_bytes_state_through_the_command_line(tmp_path):
    cfg = make_config(tmp_path)
    config = tmp_path / "hero.json"
    cfg.save_json(config)
    state_dir = write_state(cfg)
    (state_dir / "state.pt").write_bytes(random.Random(2).randbytes(4096))
    done = subprocess.run([sys.executable, "-m", "lora_trainer", "train", "--config", str(config), "--resume"],
                          cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert f"cannot resume from {state_dir}: state.pt is damaged" in done.stderr
    assert "Traceback" not in done.stderr and "weights_only=False" not in done.stdout + done.stderr


# --- 4. a dataset changed before a resume ----------------------------------------------------------

def test_resume_refuses_a_changed_dataset_naming_the_changes_or_continues_when_told(tmp_path, no_model):
    cfg = make_config(tmp_path)
    state_dir = write_state(cfg, state_module.dataset_record(cfg.train_data_dir, cfg.caption_extension))
    img = tmp_path / "img" / "1_hero"
    (img / "0.png").unlink()
    (img / "1.txt").write_text("hero, another caption", encoding="utf-8")
    (img / "3.png").write_bytes(b"new image")
    with pytest.raises(state_module.ResumeError) as refused:
        train(cfg, resume_from=state_dir)
    message = str(refused.value)
    for change in ("removed: 1_hero/0.png", "added: 1_hero/3.png", "changed caption: 1_hero/1.png",
                   "--resume-changed"):
        assert change in message
    assert "changed image" not in message

    events = []
    with pytest.raises(ModelLoaded):
        train(cfg, resume_from=state_dir, resume_changed=True, on_event=events.append)
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert len(warnings) == 1 and "removed: 1_hero/0.png" in warnings[0] and "--resume-changed" in warnings[0]


def test_the_command_line_refuses_a_changed_dataset_unless_told(tmp_path, no_model, capsys):
    cfg = make_config(tmp_path)
    config = tmp_path / "hero.json"
    cfg.save_json(config)
    state_dir = write_state(cfg, state_module.dataset_record(cfg.train_data_dir, cfg.caption_extension))
    (tmp_path / "img" / "1_hero" / "2.png").write_bytes(b"edited image bytes")
    assert cli.run_train(cli_args(config)) == 1
    assert "changed image: 1_hero/2.png" in capsys.readouterr().err
    with pytest.raises(ModelLoaded):
        cli.run_train(cli_args(config, "--resume-changed"))
    assert state_dir.is_dir()


def test_an_unchanged_dataset_resumes_and_an_old_state_without_a_record_too(tmp_path, no_model):
    cfg = make_config(tmp_path)
    state_dir = write_state(cfg, state_module.dataset_record(cfg.train_data_dir, cfg.caption_extension))
    with pytest.raises(ModelLoaded):
        train(cfg, resume_from=state_dir)
    (state_dir / "dataset.json").unlink()
    with pytest.raises(ModelLoaded):
        train(cfg, resume_from=state_dir)


@pytest.mark.slow
def test_a_real_run_records_its_dataset_and_a_resume_after_a_deleted_image_is_refused(
        tiny_sdxl, character_dataset, tmp_path):
    cfg = load_preset("CPU smoke test", pretrained_model_name_or_path=str(tiny_sdxl.single_file),
                      train_data_dir=str(character_dataset), output_dir=str(tmp_path / "model"),
                      logging_dir=str(tmp_path / "log"), output_name="myLoRA", network_train_unet_only=True,
                      max_train_epochs=1)
    result = train(cfg, model_config_dir=str(tiny_sdxl.config_dir))
    recorded = json.loads((result.state_dir / "dataset.json").read_text())
    assert len(recorded) == 8 and all(v["caption"] for v in recorded.values())
    assert not (tmp_path / "model" / "myLoRA.lock").exists()
    gone = sorted((character_dataset / "1_myLoRA").glob("*.png"))[0]
    gone.unlink()
    with pytest.raises(state_module.ResumeError, match=rf"removed: 1_myLoRA/{gone.name}"):
        train(cfg, resume_from=result.state_dir, model_config_dir=str(tiny_sdxl.config_dir))
