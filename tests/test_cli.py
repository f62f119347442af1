"""`python -m lora_trainer`, run as a user runs it: in its own process, its output piped elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys

from lora_trainer.config.presets import load_preset
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


# --- train and stop: paths checked first, --set honoured everywhere ------------------------------

REQUIRED = ("pretrained_model_name_or_path", "train_data_dir", "output_dir", "logging_dir")


def _run_cli(args: list[str], cwd) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`python -m lora_trainer ARGS` in a fresh interpreter; also which heavy packages it imported."""
    code = ("import json, sys\nfrom lora_trainer.cli import main\ncode = main(sys.argv[1:])\n"
            "print(json.dumps([m for m in ('torch', 'diffusers') if m in sys.modules]))\nsys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    return done, json.loads(done.stdout.splitlines()[-1])


def test_train_with_empty_paths_stops_before_anything_is_written_or_loaded(tmp_path):
    """The preset as written by `config --preset -o` (paths still empty): nothing may land in the
    current folder (logs, events.jsonl, LoRA files) and no model loads."""
    config = tmp_path / "my.json"
    load_preset("Realistic character (guide) - NVIDIA").save_json(config)
    done, imported = _run_cli(["train", "--config", str(config)], cwd=tmp_path)
    assert done.returncode == 1
    for key in REQUIRED:
        assert f"error: {config}: {key} is empty" in done.stderr
    assert imported == []  # neither torch nor a model was loaded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my.json"]


def test_train_names_a_model_file_that_does_not_exist(tmp_path):
    (tmp_path / "img").mkdir()
    config = tmp_path / "my.json"
    load_preset("CPU smoke test", pretrained_model_name_or_path="models/sdxl.safetensors",
                train_data_dir=str(tmp_path / "img"), output_dir=str(tmp_path / "model"),
                logging_dir=str(tmp_path / "log")).save_json(config)
    done, imported = _run_cli(["train", "--config", str(config)], cwd=tmp_path)
    assert done.returncode == 1 and imported == []
    assert "pretrained_model_name_or_path = 'models/sdxl.safetensors': no such file or folder" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img", "my.json"]
    # the same run with the path given on the command line gets past the check (to the model loader)
    assert "pretrained_model_name_or_path" not in _run_cli(
        ["train", "--config", str(config), "--set", f"pretrained_model_name_or_path={config}"], cwd=tmp_path)[0].stderr


def test_stop_writes_the_flag_of_the_run_started_with_the_same_set_options(tmp_path, monkeypatch, capsys):
    from lora_trainer.cli import main
    from lora_trainer.train.stop import StopSignal, stop_flag_path

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "my.json"
    load_preset("CPU smoke test", output_dir=str(tmp_path / "model"), output_name="hero").save_json(config)
    # what the run `train --config my.json --set output_name=hero_v2` checks after each step (the run
    # made its output_dir as it started)
    (tmp_path / "model").mkdir()
    running = StopSignal(stop_flag_path(tmp_path / "model", "hero_v2"), handle_sigint=False)
    assert not running.requested()
    assert main(["stop", "--config", str(config), "--set", "output_name=hero_v2"]) == 0
    assert running.requested()
    assert f"wrote {tmp_path / 'model' / 'hero_v2.stop'}" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "my.json"]
    running.close()


def test_stop_refuses_an_empty_output_dir_instead_of_writing_here(tmp_path, monkeypatch, capsys):
    from lora_trainer.cli import main

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "my.json"
    load_preset("CPU smoke test").save_json(config)
    assert main(["stop", "--config", str(config)]) == 1
    assert "output_dir is empty" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my.json"]
    # a mistyped folder is refused, not created
    assert main(["stop", "--config", str(config), "--set", f"output_dir={tmp_path / 'typo'}"]) == 1
    assert "typo does not exist, so no run writes there" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()
    # the run's own --set output_dir=... (a folder the run created) is what makes it work
    (tmp_path / "out").mkdir()
    assert main(["stop", "--config", str(config), "--set", f"output_dir={tmp_path / 'out'}"]) == 0
    assert (tmp_path / "out" / "lora.stop").is_file()


def test_the_resume_command_printed_after_a_stop_repeats_the_runs_options(tmp_path, monkeypatch, capsys):
    """`train --config C --set ... --model-config-dir D`, stopped: the printed command must continue
    that same run, so it repeats every --set (quoted for the shell) and --model-config-dir."""
    import shlex

    from lora_trainer import cli
    from lora_trainer.train import trainer
    from lora_trainer.train.state import state_dir_for

    model = tmp_path / "sdxl.safetensors"
    model.write_bytes(b"x")
    (tmp_path / "img").mkdir()
    config = tmp_path / "my config.json"
    load_preset("CPU smoke test", pretrained_model_name_or_path=str(model), train_data_dir=str(tmp_path / "img"),
                output_dir=str(tmp_path / "model"), logging_dir=str(tmp_path / "log")).save_json(config)
    sets = ["output_name=hero_v2", "training_comment=it's \"my\" run", "max_train_epochs=3"]
    started = []

    def stopped_run(cfg, *, resume_from=None, model_config_dir=None, on_event=None, stop=None):
        started.append((cfg, resume_from, model_config_dir))
        return trainer.TrainResult(stopped=True, global_step=7, state_dir=state_dir_for(cfg.output_dir,
                                                                                         cfg.output_name))

    monkeypatch.setattr(trainer, "train", stopped_run)
    argv = ["train", "--config", str(config), "--model-config-dir", str(tmp_path / "sdxl config")]
    for item in sets:
        argv += ["--set", item]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "stopped at step 7; resume with:" in out
    command = shlex.split(out.split("resume with:", 1)[1].strip().splitlines()[0])
    assert command[1:4] == ["-m", "lora_trainer", "train"]
    resumed = cli.build_parser().parse_args(command[3:])
    assert resumed.config == config
    assert resumed.set == sets
    assert resumed.model_config_dir == str(tmp_path / "sdxl config")
    assert resumed.resume is True  # the run's own state folder, found from output_dir/output_name

    # and running it continues the same run: same settings, the stopped run's state folder
    assert cli.main(command[3:]) == 0
    (first, _, first_dir), (again, resume_from, again_dir) = started
    assert again == first and again.output_name == "hero_v2"
    assert resume_from == tmp_path / "model" / "hero_v2-state" and again_dir == first_dir


def test_stop_with_a_missing_or_broken_config_names_the_file(tmp_path, capsys):
    from lora_trainer.cli import main

    assert main(["stop", "--config", str(tmp_path / "nope.json")]) == 1
    assert f"cannot read config {tmp_path / 'nope.json'}" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    assert main(["stop", "--config", str(tmp_path / "bad.json")]) == 1
    assert f"{tmp_path / 'bad.json'} is not valid JSON" in capsys.readouterr().err
