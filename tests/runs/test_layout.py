"""runs/layout.py: the names a run writes and reads back, and the events both sides agree on."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest

from lora_trainer.runs import layout
from lora_trainer.runs.layout import EVENT_FIELDS, RunFiles, UndeclaredEvent, check_event, parse_lora_stem

PACKAGE = Path(__file__).resolve().parents[2] / "lora_trainer"


def test_run_files_are_kohyas_names(tmp_path):
    files = RunFiles(tmp_path, "myLoRA")
    assert files.epoch_lora(3) == tmp_path / "myLoRA-000003.safetensors"
    assert files.stop_lora(123) == tmp_path / "myLoRA-step00000123.safetensors"
    assert files.final_lora == tmp_path / "myLoRA.safetensors"
    assert files.config == tmp_path / "myLoRA.json"
    assert files.state_dir == tmp_path / "myLoRA-state"
    assert files.progress == tmp_path / "myLoRA-state" / "progress.json"
    assert files.stop_flag == tmp_path / "myLoRA.stop"


@pytest.mark.parametrize("name", ["myLoRA", "hero-000001", "a-step", "x_v2"])
def test_every_name_written_parses_back(tmp_path, name):
    files = RunFiles(tmp_path, name)
    assert parse_lora_stem(files.epoch_lora(7).stem, name) == (name, layout.EPOCH, 7, 0)
    assert parse_lora_stem(files.stop_lora(42).stem, name) == (name, layout.STOP, 0, 42)
    assert parse_lora_stem(files.final_lora.stem, name) == (name, layout.FINAL, 0, 0)
    for path in (files.epoch_lora(7), files.stop_lora(42), files.final_lora):
        assert layout.lora_stem_pattern(name).fullmatch(path.stem.upper())  # case ignored (Windows, macOS)
    assert not layout.lora_stem_pattern(name).fullmatch(f"{name}_v2")


def test_a_name_without_metadata_is_judged_by_its_form():
    assert parse_lora_stem("hero-000004") == ("hero", layout.EPOCH, 4, 0)
    assert parse_lora_stem("hero-step00000010") == ("hero", layout.STOP, 0, 10)
    assert parse_lora_stem("hero") == ("hero", layout.FINAL, 0, 0)


def test_run_folder_name_and_stamp():
    started = time.mktime((2026, 12, 2, 9, 8, 7, 0, 0, -1))
    assert layout.run_folder_name("myLoRA", started) == "myLoRA20261202090807"
    assert layout.run_folder_stamp("myLoRA20261202090807", "myLoRA") == "20261202090807"
    assert layout.run_folder_stamp("myLoRA_v220261202090807", "myLoRA") is None
    assert layout.run_folder_stamp("myLoRA2026", "myLoRA") is None


def test_an_event_must_match_its_declaration():
    check_event(layout.STEP, {"step": 1, "epoch": 1, "loss": 0.1, "average_loss": 0.1, "lr": {}})
    with pytest.raises(UndeclaredEvent, match="'epochs'"):
        check_event("epochs", {})
    with pytest.raises(UndeclaredEvent, match=r"not declared: \['steps'\], missing: \['step'\]"):
        check_event(layout.FINISHED, {"path": "x", "epoch": 1, "steps": 2})


def _literal_event_kinds(folder: Path) -> set[str]:
    """Strings compared with an event's "event" field in the code: a bare kind would escape the check."""
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Subscript) \
                    and isinstance(node.left.slice, ast.Constant) and node.left.slice.value == "event":
                found |= {c.value for c in node.comparators if isinstance(c, ast.Constant)}
    return found


def test_readers_use_only_declared_kinds():
    for folder in (PACKAGE / "runs", PACKAGE / "train", PACKAGE / "ui"):
        assert _literal_event_kinds(folder) <= set(EVENT_FIELDS), folder


def test_run_file_names_are_built_in_layout_only():
    """No other module spells a run's file names (they were built in six places and parsed in three)."""
    patterns = ('-state"', '.stop"', "-step{", ":06d}", '"events.jsonl"', "%Y%m%d%H%M%S")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "runs" / "layout.py":
            continue
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.relative_to(PACKAGE)}: {p}" for p in patterns if p in text]
    assert not offenders


def _emit_calls(folder: Path):
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "emit":
                yield path, node


def test_every_event_the_trainer_emits_is_declared():
    """Read from the source, so error paths a test run never reaches are covered too."""
    calls = list(_emit_calls(PACKAGE / "train"))
    assert len(calls) >= 11
    for path, call in calls:
        where = f"{path.name}:{call.lineno}"
        kind_node = call.args[0]
        assert isinstance(kind_node, ast.Attribute) and isinstance(kind_node.value, ast.Name) \
            and kind_node.value.id == "layout", f"{where}: the kind must be a runs.layout constant"
        kind = getattr(layout, kind_node.attr)
        fields = {k.arg for k in call.keywords}
        assert None not in fields, f"{where}: no **fields, so the declaration can be checked"
        assert fields == set(EVENT_FIELDS[kind]), f"{where}: {kind!r} emits {sorted(fields)}"
    emitted = {getattr(layout, call.args[0].attr) for _path, call in calls}
    assert emitted == set(EVENT_FIELDS), "every declared kind is emitted by the trainer"


def test_the_followed_status_carries_each_validated_epochs_loss():
    from lora_trainer.runs.follow import RunStatus, fill_progress

    events = [{"event": layout.VALIDATION, "time": e, "epoch": e, "loss": v, "step": 8 * e, "images": 2}
              for e, v in ((1, 0.3), (2, 0.25), (2, 0.26))]  # a resumed epoch 2: the later value
    status = RunStatus()
    fill_progress(status, [], events)
    assert status.validation == [(1, 0.3), (2, 0.26)]
