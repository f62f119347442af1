"""`python -m lora_trainer tag ...` and `... tags ...` end to end (in-process)."""

import json

from PIL import Image

from lora_trainer.cli import main


def caption(folder, stem):
    return (folder / f"{stem}.txt").read_text(encoding="utf-8")


def test_tag_then_edit_then_undo(tmp_path, capsys):
    folder = tmp_path / "set"
    folder.mkdir()
    Image.new("RGB", (30, 20), (255, 0, 0)).save(folder / "red.png")
    Image.new("RGBA", (20, 30), (0, 255, 0, 255)).save(folder / "green.png")

    assert main(["tag", str(folder), "--model", "tiny-demo", "--trigger", "myLoRA", "--exclude", "solo, short hair",
                 "--print"]) == 0
    out = capsys.readouterr().out
    assert "on CPU via CPUExecutionProvider" in out and "red.png: demo girl (tiny) (0.99)" in out
    assert caption(folder, "red") == ("myLoRA, demo girl (tiny), red shirt, 1girl, simple background, "
                                      "looking at viewer\n")

    assert main(["tags", "order", str(folder), "--trigger", "myLoRA"]) == 0
    assert caption(folder, "red") == ("myLoRA, 1girl, demo girl (tiny), red shirt, simple background, "
                                      "looking at viewer\n")
    assert main(["tags", "replace", str(folder), "red shirt", "crimson shirt", "--only", "red"]) == 0
    assert main(["tags", "remove", str(folder), "* background"]) == 0
    assert main(["tags", "add", str(folder), "smile, outdoors"]) == 0
    assert main(["tags", "dedupe", str(folder), "--near"]) == 0
    assert caption(folder, "red") == ("myLoRA, 1girl, demo girl (tiny), crimson shirt, looking at viewer, "
                                      "smile, outdoors\n")
    capsys.readouterr()

    assert main(["tags", "freq", str(folder), "--json"]) == 0
    freq = json.loads(capsys.readouterr().out)
    assert freq["myLoRA"] == 2 and freq["crimson shirt"] == 1 and freq["^_^"] == 1

    assert main(["tags", "set", str(folder), "green.png", "myLoRA, green hair"]) == 0
    assert caption(folder, "green") == "myLoRA, green hair\n"
    assert main(["tags", "undo", str(folder)]) == 0
    assert "smile" in caption(folder, "green")
    assert main(["tags", "show", str(folder), "--only", "green"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("green.png: myLoRA, 1girl, green hair")


def test_missing_model_is_a_message_not_a_traceback(tmp_path, capsys):
    folder = tmp_path / "set"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    assert main(["tag", str(folder), "--model", "wd-eva02-large-tagger-v3", "--cache-dir", str(tmp_path / "hf")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "SmilingWolf/wd-eva02-large-tagger-v3" in err and "model.onnx" in err and "selected_tags.csv" in err
    assert not (folder / "a.txt").exists()


def test_errors_name_the_problem(tmp_path, capsys):
    assert main(["tags", "undo", str(tmp_path)]) == 1
    assert "nothing to undo" in capsys.readouterr().err
    assert main(["tags", "trigger", str(tmp_path / "missing"), "myLoRA"]) == 1
    assert "missing does not exist" in capsys.readouterr().err
    groups = tmp_path / "groups.json"
    groups.write_text('{"camera": ["x"], "hands_": []}', encoding="utf-8")
    assert main(["tags", "order", str(tmp_path), "--groups", str(groups)]) == 1
    assert "hands_" in capsys.readouterr().err


def test_groups_prints_editable_defaults(capsys):
    assert main(["tags", "groups"]) == 0
    groups = json.loads(capsys.readouterr().out)
    assert set(groups) == {"subject", "negative", "pose", "hands", "camera"}
    assert {"looking at viewer", "full body", "upper body", "close-up", "portrait"} <= set(groups["camera"])
    assert {"simple background", "border"} <= set(groups["negative"])
