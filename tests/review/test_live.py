"""Live review grids: whether a render fits beside the training (`decide_room`), and a grid whose
columns are a run's epochs, rendered as the run saves them (fake host and run here; the real tiny run
is in test_grid_cli.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PIL import Image

from lora_trainer.review.live import (
    ACTIVATIONS_1024_BYTES,
    DEFAULT_SDXL_NEED_BYTES,
    GIB,
    LiveGrid,
    RenderRoom,
    decide_room,
    epoch_columns_source,
    render_need_bytes,
    run_epoch_columns,
)
from lora_trainer.review.spec import Column, LoraRef, RenderError, RenderJob, RenderSettings, Row


def test_a_render_is_live_only_when_the_free_memory_is_known_and_holds_it_with_a_margin():
    live = decide_room(int(30.2 * GIB), 9 * GIB, "cuda:0")
    assert live == RenderRoom(True, "live: 30.2 GiB free on cuda:0, a render needs about 9.0 GiB")
    tight = decide_room(int(9.5 * GIB), 9 * GIB, "cuda:0")  # fits, but not with the margin
    assert not tight.live and tight.reason.startswith("queued: 9.5 GiB free on cuda:0")
    queued = decide_room(int(4.1 * GIB), 9 * GIB, "cuda:0")
    assert queued == RenderRoom(False, "queued: 4.1 GiB free on cuda:0, a render needs about 9.0 GiB; "
                                       "the columns render when the training ends or is stopped")
    unknown = decide_room(None, 9 * GIB, "mps")
    assert not unknown.live
    assert unknown.reason.startswith("queued: free memory on mps unknown, a render needs about 9.0 GiB")
    assert "when the training ends" in unknown.reason


def test_the_need_is_the_weights_as_fp16_plus_activations(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    fp32 = tmp_path / "model.safetensors"
    save_file({"a": np.zeros((1000, 1000), np.float32), "b": np.zeros(24, np.float32)}, str(fp32))
    assert render_need_bytes(fp32) == 2 * 1_000_024 + ACTIVATIONS_1024_BYTES
    other = tmp_path / "model.ckpt"
    other.write_bytes(b"x" * 1000)
    assert render_need_bytes(other) == 1000 + ACTIVATIONS_1024_BYTES
    assert render_need_bytes(tmp_path / "missing.safetensors") == DEFAULT_SDXL_NEED_BYTES


def test_a_runs_epoch_columns_in_epoch_order_named_by_the_host(tmp_path, write_lora):
    write_lora(tmp_path, "hero-000002", 20.0, ss_output_name="hero", ss_epoch="2", ss_steps="16")
    write_lora(tmp_path, "hero-000001", 10.0, ss_output_name="hero", ss_epoch="1", ss_steps="8")
    write_lora(tmp_path, "hero-step00000020", 30.0, ss_output_name="hero", ss_steps="20")
    write_lora(tmp_path, "other-000001", 40.0, ss_output_name="other", ss_epoch="1")
    columns = run_epoch_columns(tmp_path, "hero")
    assert [(c.label, c.lora.name, c.epoch, c.step) for c in columns] == [
        ("epoch 1", "hero-000001", 1, 8), ("epoch 2", "hero-000002", 2, 16)]
    published = []
    source = epoch_columns_source(tmp_path, "hero", lambda p: published.append(p.name) or f"pub/{p.stem}")
    assert [c.lora.name for c in source()] == ["pub/hero-000001", "pub/hero-000002"]
    source()
    assert published == ["hero-000001.safetensors", "hero-000002.safetensors"]  # once per file


class FakeHost:
    def __init__(self, stop_after: int = 0, stop: threading.Event | None = None, fail: str = ""):
        self.jobs: list[RenderJob] = []
        self.stop_after, self.stop, self.fail = stop_after, stop, fail

    def render(self, job: RenderJob):
        self.jobs.append(job)
        if self.stop is not None and len(self.jobs) == self.stop_after:
            self.stop.set()
        if self.fail and job.lora is not None and self.fail in job.lora.name:
            raise RenderError(f"cannot load {job.lora.name}")
        return Image.new("RGB", (8, 8), (len(self.jobs) * 10 % 256, 0, 0))


class FakeRun:
    """Saves one epoch file per poll (the LiveGrid's sleep) until `epochs`, then ends `linger` polls later."""

    def __init__(self, folder: Path, epochs: int, linger: int = 1, room: bool = True):
        self.folder, self.epochs, self.linger, self.live_room = folder, epochs, linger, room
        self.polls = 0
        self.rendered_while_running: list[list[str]] = []
        self.jobs_at_end: int | None = None

    def sleep(self, _seconds: float) -> None:
        self.polls += 1

    def saved_columns(self) -> list[Column]:
        columns = []
        for epoch in range(1, min(self.polls, self.epochs) + 1):
            path = self.folder / f"hero-{epoch:06d}.safetensors"
            path.write_bytes(b"x")
            columns.append(Column(f"epoch {epoch}", LoraRef(path, path.stem), epoch=epoch))
        return columns

    def running(self) -> bool:
        return self.polls < self.epochs + self.linger

    def room(self) -> RenderRoom:
        return RenderRoom(self.live_room, "live: test" if self.live_room else "queued: test")


def live_grid(run: FakeRun, host: FakeHost, **kwargs) -> LiveGrid:
    settings = RenderSettings(steps=1, width=8, height=8)
    values = dict(rows=[Row("cat", "a cat"), Row("dog", "a dog", 0.5)], seeds=[1], settings=settings,
                  baseline=True, saved_columns=run.saved_columns, running=run.running, room=run.room,
                  host=host, poll_s=0.0, sleep=run.sleep)
    values.update(kwargs)
    return LiveGrid(**values)


def test_with_room_each_epoch_renders_as_it_is_saved_and_each_column_saves_the_grid(tmp_path):
    run, host = FakeRun(tmp_path, epochs=3), FakeHost()
    columns_seen, progress = [], []

    def on_column(spec, cells):
        columns_seen.append(([c.label for c in spec.columns], run.polls, run.running(), sorted(cells)))

    grid = live_grid(run, host, on_column=on_column, on_cell=lambda *a: progress.append(a[:3]))
    result = grid.run()

    assert [labels for labels, *_ in columns_seen] == [
        ["no LoRA"], ["no LoRA", "epoch 1"], ["no LoRA", "epoch 1", "epoch 2"],
        ["no LoRA", "epoch 1", "epoch 2", "epoch 3"]]
    assert [polls for _, polls, *_ in columns_seen] == [0, 1, 2, 3]  # each right after it was saved
    assert all(running for _, _, running, _ in columns_seen)
    assert columns_seen[1][3] == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1)]
    assert grid.mode == "live" and grid.reason == "live: test"
    assert result.complete and set(result.cells) == {key[:3] for key in result.spec.cells()}
    # The keys of the grid that grew are the final spec's: each cell's job is the one rendered for it.
    jobs = {(s, r, c): job for s, r, c, job in result.spec.cells()}
    assert [(j.prompt, j.lora and j.lora.name, j.lora and j.lora.weight) for j in host.jobs[:4]] == [
        ("a cat", None, None), ("a dog", None, None), ("a cat", "hero-000001", 1.0), ("a dog", "hero-000001", 0.5)]
    assert host.jobs == [jobs[p[2]] for p in progress]
    assert [p[:2] for p in progress[:3]] == [(1, 2), (2, 2), (3, 4)]


def test_without_room_the_columns_wait_for_the_training_to_end_then_all_render(tmp_path):
    run, host = FakeRun(tmp_path, epochs=3, linger=2, room=False), FakeHost()
    modes = []

    def on_column(spec, cells):
        modes.append((len(spec.columns), run.running()))

    grid = live_grid(run, host, on_column=on_column)
    original_sleep = run.sleep
    run.sleep = lambda s: (modes.append((grid.mode, grid.reason)), original_sleep(s))
    grid.sleep = run.sleep
    result = grid.run()

    assert ("queued", "queued: test") in modes
    assert [m for m in modes if isinstance(m[0], int)] == [(1, False), (2, False), (3, False), (4, False)]
    assert len(host.jobs) == 8 and result.complete
    assert [c.label for c in result.spec.columns] == ["no LoRA", "epoch 1", "epoch 2", "epoch 3"]
    assert grid.mode == "ended"


def test_a_stop_ends_between_cells_and_keeps_the_finished_ones(tmp_path):
    stop = threading.Event()
    run, host = FakeRun(tmp_path, epochs=3), FakeHost(stop_after=3, stop=stop)
    columns = []
    result = live_grid(run, host, stop=stop, on_column=lambda spec, cells: columns.append(len(spec.columns))).run()
    assert result.stopped and not result.complete
    assert sorted(result.cells) == [(0, 0, 0), (0, 0, 1), (0, 1, 0)]
    assert [c.label for c in result.spec.columns] == ["no LoRA", "epoch 1"]  # the column it stopped in
    assert columns == [1] and len(host.jobs) == 3


def test_a_stop_before_anything_rendered_gives_no_grid(tmp_path):
    stop = threading.Event()
    stop.set()
    assert live_grid(FakeRun(tmp_path, epochs=2), FakeHost(), stop=stop).run() is None


def test_a_file_listed_twice_is_one_column_and_a_failed_cell_is_its_error_text(tmp_path):
    run, host = FakeRun(tmp_path, epochs=2), FakeHost(fail="000002")
    listed = run.saved_columns

    def twice():
        columns = listed()
        same = [Column(c.label, LoraRef(c.lora.path.parent / ".." / tmp_path.name / c.lora.path.name, c.lora.name),
                       epoch=c.epoch) for c in columns]
        return columns + same + columns

    result = live_grid(run, host, saved_columns=twice, baseline=False, rows=[Row("cat", "a cat")]).run()
    assert [c.label for c in result.spec.columns] == ["epoch 1", "epoch 2"]
    assert result.errors == {(0, 0, 1): "cannot load hero-000002"}
    assert isinstance(result.cells[0, 0, 0], Image.Image)


def test_a_run_that_is_not_running_renders_what_is_there_and_ends(tmp_path):
    run = FakeRun(tmp_path, epochs=2)
    run.polls = 5  # already over: both epochs saved
    sleeps = []
    grid = live_grid(run, FakeHost(), sleep=sleeps.append)
    result = grid.run()
    assert [c.label for c in result.spec.columns] == ["no LoRA", "epoch 1", "epoch 2"] and not sleeps
    assert result.complete


def test_rows_and_seeds_are_required():
    with pytest.raises(ValueError):
        LiveGrid(rows=[], seeds=[1], settings=RenderSettings(), baseline=True, saved_columns=list,
                 running=lambda: False, room=lambda: RenderRoom(True, ""), host=FakeHost())


def test_a_training_runs_while_a_live_process_holds_its_output_lock(tmp_path):
    import os

    from lora_trainer.fsutil import release_lock
    from lora_trainer.review.cli import training_running
    from lora_trainer.runs.layout import RunFiles, live_output_names, take_output_lock
    from lora_trainer.runs.trainer_record import process_start_time

    assert live_output_names(tmp_path / "missing") == [] and live_output_names(tmp_path) == []
    owner = take_output_lock(tmp_path, "hero", os.getpid(), process_start_time(os.getpid()))
    assert live_output_names(tmp_path) == ["hero"]
    assert training_running(tmp_path, "hero", None)() and not training_running(tmp_path, "other", None)()
    assert not training_running(tmp_path, "hero", 0.0)()  # --follow-timeout over
    release_lock(RunFiles(tmp_path, "hero").lock, owner)
    assert not training_running(tmp_path, "hero", None)()
    take_output_lock(tmp_path, "gone", os.getpid(), 1.0)  # a lock a killed trainer left (another start time)
    assert RunFiles(tmp_path, "gone").lock.exists() and live_output_names(tmp_path) == []
