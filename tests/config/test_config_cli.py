"""`python -m lora_trainer config ...`, run through lora_trainer.cli.main."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lora_trainer import cli
from lora_trainer.config import TrainConfig
from lora_trainer.config.presets import load_preset, preset_names


@pytest.fixture(autouse=True)
def _only_config_command(monkeypatch):
    # Other areas' command modules are built in parallel; this test needs only ours registered.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("lora_trainer.config.cli",))


def test_config_is_registered_in_the_real_table():
    # the fixture hides the real table, so read it from the source
    assert '"lora_trainer.config.cli",' in Path(cli.__file__).read_text(encoding="utf-8")


def test_list_presets(capsys):
    assert cli.main(["config", "--list-presets"]) == 0
    assert capsys.readouterr().out.splitlines() == preset_names()


def test_preset_to_file_then_check(tmp_path, capsys):
    out = tmp_path / "guide.json"
    assert cli.main(["config", "--preset", "Realistic character (guide) - NVIDIA", "-o", str(out)]) == 0
    assert TrainConfig.from_json(out) == load_preset("Realistic character (guide) - NVIDIA")
    assert cli.main(["config", "--check", str(out)]) == 0
    assert "OK (64 epochs, 1024x1024, rank 128 alpha 32, Adafactor, batch 2)" in capsys.readouterr().out


def test_preset_without_output_prints_json(capsys):
    assert cli.main(["config", "--preset", "CPU smoke test"]) == 0
    assert TrainConfig.from_dict(json.loads(capsys.readouterr().out)) == load_preset("CPU smoke test")


def test_import_kohya_lists_what_was_not_applied(tmp_path, capsys):
    kohya = tmp_path / "kohya.json"
    kohya.write_text(json.dumps({
        "LoRA_type": "LyCORIS/LoHa", "epoch": "20", "max_train_epochs": "", "network_dim": 64,
        "conv_dim": 8, "color_aug": False, "seed": "", "xformers": True,
    }))
    out = tmp_path / "ours.json"
    assert cli.main(["config", "--import-kohya", str(kohya), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "LoRA_type = 'LyCORIS/LoHa': not supported" in err
    assert "conv_dim = 8: LoCon/LyCORIS only" in err
    assert "(empty, off or kohya's default in the file): color_aug" in err
    config = TrainConfig.from_json(out)
    assert (config.max_train_epochs, config.network_dim, config.xformers) == (20, 64, "xformers")


def test_errors_exit_1_with_the_reason(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"network_dim": 0}))
    assert cli.main(["config", "--check", str(bad)]) == 1
    assert "network_dim = 0: must be >= 1" in capsys.readouterr().err
    assert cli.main(["config", "--preset", "nope"]) == 1
    assert "unknown preset 'nope'" in capsys.readouterr().err


def test_one_action_required():
    with pytest.raises(SystemExit):
        cli.main(["config"])
