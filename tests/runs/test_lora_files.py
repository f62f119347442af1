"""A project's LoRA files read back from its model folder (after a restart the UI lists them from
there), and the output names a new run may not take."""

from __future__ import annotations

import os
from pathlib import Path

from lora_trainer.runs.lora_files import files_using_output_name, next_free_output_name, project_lora_files


def run_files(write_lora, folder: Path, name: str, start: float, epochs=(1, 2), stop_step: int | None = None,
              final: bool = True) -> None:
    """The files of one run: an epoch file each, a stop snapshot, the final copy (8 steps an epoch)."""
    for epoch in epochs:
        write_lora(folder, f"{name}-{epoch:06d}", start + epoch, ss_output_name=name, ss_epoch=str(epoch),
                   ss_steps=str(8 * epoch))
    if stop_step:
        write_lora(folder, f"{name}-step{stop_step:08d}", start + 0.5, ss_output_name=name,
                   ss_epoch=str(stop_step // 8), ss_steps=str(stop_step))
    if final:
        write_lora(folder, name, start + 10, ss_output_name=name, ss_epoch=str(max(epochs)),
                   ss_steps=str(8 * max(epochs)))


def test_files_are_grouped_by_output_name_newest_run_first(tmp_path, write_lora):
    model = tmp_path / "model"
    run_files(write_lora, model, "hero", start=1000, stop_step=5)
    run_files(write_lora, model, "hero_v2", start=2000, epochs=(1,), final=False)
    (model / "hero.json").write_text("{}")  # the run's config, not a LoRA
    (model / "hero-state").mkdir()
    (model / ".hero-000003.safetensors.abc.tmp").write_bytes(b"half")  # a file being written

    listed = [(f.output_name, f.path.name, f.kind, f.epoch, f.step) for f in project_lora_files(model)]
    assert listed == [
        ("hero_v2", "hero_v2-000001.safetensors", "epoch", 1, 8),
        ("hero", "hero-step00000005.safetensors", "stop", 0, 5),
        ("hero", "hero-000001.safetensors", "epoch", 1, 8),
        ("hero", "hero-000002.safetensors", "epoch", 2, 16),
        ("hero", "hero.safetensors", "final", 2, 16),
    ]
    assert project_lora_files(tmp_path / "missing") == []


def test_files_without_metadata_are_judged_by_name(tmp_path, write_lora):
    model = tmp_path / "model"
    write_lora(model, "old-000003", 1)
    write_lora(model, "old-step00000042", 2)
    write_lora(model, "old", 3)
    write_lora(model, "someone-elses", 4)
    (model / "broken.safetensors").write_bytes(b"not a safetensors file")
    os.utime(model / "broken.safetensors", (0, 0))
    listed = [(f.output_name, f.kind, f.epoch, f.step) for f in project_lora_files(model)]
    assert listed == [("someone-elses", "final", 0, 0),
                      ("old", "epoch", 3, 0), ("old", "stop", 0, 42), ("old", "final", 0, 0),
                      ("broken", "final", 0, 0)]


def test_metadata_tells_an_epoch_file_from_a_final_file_with_digits(tmp_path, write_lora):
    model = tmp_path / "model"
    path = write_lora(model, "hero-000001", 1, ss_output_name="hero-000001", ss_epoch="4", ss_steps="32")
    [lora] = project_lora_files(model)
    assert (lora.path, lora.output_name, lora.kind, lora.epoch) == (path, "hero-000001", "final", 4)


def test_output_names_in_use_and_the_next_free_one(tmp_path, write_lora):
    model = tmp_path / "model"
    assert next_free_output_name(model, "hero") == "hero"  # no folder yet
    for stem in ("hero-000001", "hero-step00000012", "heroine", "hero_v2", "Hero_V3-000002"):
        write_lora(model, stem, 1)
    assert [p.name for p in files_using_output_name(model, "hero")] == [
        "hero-000001.safetensors", "hero-step00000012.safetensors"]
    assert files_using_output_name(model, "HERO")  # one file on Windows and macOS
    assert files_using_output_name(model, "her") == [] and files_using_output_name(model, "heroine-0") == []
    assert next_free_output_name(model, "hero") == "hero_v4"  # _v2 and _V3 are taken
    assert next_free_output_name(model, "hero_v2") == "hero_v4"
    assert next_free_output_name(model, "villain") == "villain"
    assert next_free_output_name(model, "heroine") == "heroine_v2"
