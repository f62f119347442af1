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


REQUIRED = ("pretrained_model_name_or_path", "train_data_dir", "output_dir", "logging_dir")


def test_preset_written_without_paths_says_what_to_fill_and_check_refuses_it(tmp_path, capsys):
    out = tmp_path / "guide.json"
    assert cli.main(["config", "--preset", "Realistic character (guide) - NVIDIA", "-o", str(out)]) == 0
    assert TrainConfig.from_json(out) == load_preset("Realistic character (guide) - NVIDIA")
    err = capsys.readouterr().err
    to_fill = err.split("before training:", 1)[1]
    assert [line.split()[0] for line in to_fill.splitlines() if line.startswith("  ")] == list(REQUIRED)

    assert cli.main(["config", "--check", str(out)]) == 1
    captured = capsys.readouterr()
    assert "OK" not in captured.out
    for key in REQUIRED:
        assert f"error: {out}: {key} is empty" in captured.err


def test_preset_with_project_and_model_is_ready_to_train(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "models" / "sdxl.safetensors"
    model.parent.mkdir()
    model.write_bytes(b"weights")
    (tmp_path / "myLoRA" / "img" / "1_myLoRA").mkdir(parents=True)
    out = tmp_path / "myLoRA.json"
    assert cli.main(["config", "--preset", "Realistic character (guide) - NVIDIA", "--project", "myLoRA",
                     "--model", "models/sdxl.safetensors", "-o", str(out)]) == 0
    assert f"ready: python -m lora_trainer train --config {out}" in capsys.readouterr().err
    config = TrainConfig.from_json(out)
    root = tmp_path / "myLoRA"
    assert (config.train_data_dir, config.output_dir, config.logging_dir, config.output_name) == (
        str(root / "img"), str(root / "model"), str(root / "log"), "myLoRA")  # absolute: any folder works
    assert config.pretrained_model_name_or_path == str(model)
    assert config.network_dim == 128  # the preset's settings are kept

    monkeypatch.chdir(tmp_path / "myLoRA")  # checked from another folder
    assert cli.main(["config", "--check", str(out)]) == 0
    assert "OK (64 epochs, 1024x1024, rank 128 alpha 32, Adafactor, batch 2)" in capsys.readouterr().out


def test_check_names_a_model_and_a_dataset_that_do_not_exist(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    base = load_preset("CPU smoke test", train_data_dir=str(tmp_path / "img"), output_dir=str(tmp_path / "model"),
                       logging_dir=str(tmp_path / "log"))
    cases = {
        "models/missing.safetensors": "pretrained_model_name_or_path = 'models/missing.safetensors': no such file",
        "/nowhere/sdxl": "pretrained_model_name_or_path = '/nowhere/sdxl': no such file",
    }
    for model, message in cases.items():
        base.replace(pretrained_model_name_or_path=model).save_json(tmp_path / "c.json")
        assert cli.main(["config", "--check", str(tmp_path / "c.json")]) == 1
        assert message in capsys.readouterr().err
    # a hub id is downloaded when training starts: not an error here
    base.replace(pretrained_model_name_or_path="stabilityai/stable-diffusion-xl-base-1.0").save_json(tmp_path / "c.json")
    assert cli.main(["config", "--check", str(tmp_path / "c.json")]) == 0
    capsys.readouterr()
    base.replace(pretrained_model_name_or_path="stabilityai/stable-diffusion-xl-base-1.0",
                 train_data_dir=str(tmp_path / "images")).save_json(tmp_path / "c.json")
    assert cli.main(["config", "--check", str(tmp_path / "c.json")]) == 1
    assert f"train_data_dir = '{tmp_path / 'images'}': no such folder" in capsys.readouterr().err


def test_project_and_model_only_go_with_a_config_being_written(tmp_path, capsys):
    assert cli.main(["config", "--list-presets", "--project", str(tmp_path)]) == 1
    assert "--project and --model go with --preset or --import-kohya" in capsys.readouterr().err
    assert cli.main(["config", "--preset", "CPU smoke test", "--project", str(tmp_path / "my lora")]) == 1
    assert "project name 'my lora'" in capsys.readouterr().err


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
    assert "LoRA_type" not in err and "conv_dim" not in err  # LoHa with 8 for the convolutions, as given
    assert "(empty, off or kohya's default in the file): color_aug" in err
    config = TrainConfig.from_json(out)
    assert (config.max_train_epochs, config.network_dim, config.xformers) == (20, 64, "xformers")
    assert (config.LoRA_type, config.conv_dim) == ("LyCORIS/LoHa", 8)


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


def test_check_refuses_an_output_name_too_long_for_the_output_folder(tmp_path, capsys):
    """It used to pass the check, train a whole epoch, then fail at the first save."""
    (tmp_path / "img").mkdir()
    base = load_preset("CPU smoke test", pretrained_model_name_or_path="stabilityai/stable-diffusion-xl-base-1.0",
                       train_data_dir=str(tmp_path / "img"), output_dir=str(tmp_path / "model"),
                       logging_dir=str(tmp_path / "log"))
    base.replace(output_name="x" * 240).save_json(tmp_path / "c.json")
    assert cli.main(["config", "--check", str(tmp_path / "c.json")]) == 1
    err = capsys.readouterr().err
    assert "output_name 'xxx" in err and "is too long" in err and "at most 255 bytes" in err
    base.replace(output_name="x" * 200).save_json(tmp_path / "c.json")
    assert cli.main(["config", "--check", str(tmp_path / "c.json")]) == 0


def test_kohya_sizes_sdxl_cannot_use_become_the_nearest_and_are_listed(tmp_path, capsys):
    kohya = tmp_path / "old.json"
    kohya.write_text(json.dumps({"LoRA_type": "Standard", "bucket_reso_steps": 1, "max_resolution": "512,650",
                                 "min_bucket_reso": "250", "max_bucket_reso": 2048}))
    out = tmp_path / "ours.json"
    assert cli.main(["config", "--import-kohya", str(kohya), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "Changed to the nearest value this trainer takes, from old.json:" in err
    assert "bucket_reso_steps: 1 -> 32: SDXL sizes are multiples of 32" in err
    assert "max_resolution: '512,650' -> '512,640'" in err and "min_bucket_reso: 250 -> 256" in err
    config = TrainConfig.from_json(out)
    assert (config.bucket_reso_steps, config.max_resolution, config.min_bucket_reso) == (32, "512,640", 256)
    assert "max_bucket_reso" not in err  # 2048 is fine as it is
