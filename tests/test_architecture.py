"""The core package must stay importable without Forge or gradio (only ui/ may use gradio)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "lora_trainer"
HOST_ONLY = {"modules", "modules_forge", "backend", "launch", "gradio"}


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_core_never_imports_forge_or_gradio():
    offenders = {}
    for path in ROOT.rglob("*.py"):
        if "ui" in path.relative_to(ROOT).parts[:1]:
            continue
        bad = _top_level_imports(path) & HOST_ONLY
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


# What `python -m lora_trainer --help` (and every sub-command's --help) must answer without: each takes
# seconds to import, and a user typing `tags --help` or `prepare ...` needs none of them.
HEAVY = ("torch", "gradio", "diffusers", "onnxruntime")

_HELP_EVERY_COMMAND = """
import argparse, contextlib, io, json, sys
from lora_trainer.cli import build_parser, main

def commands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from commands(sub, prefix + (name,))

seen, first = [], {}
for command in [()] + list(commands(build_parser())):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main([*command, "--help"])
    seen.append(" ".join(command))
    for module in HEAVY:
        if module in sys.modules and module not in first:
            first[module] = " ".join(command) or "(the parser)"
print(json.dumps({"commands": seen, "imported": first}))
"""


def test_help_of_every_command_imports_no_heavy_package():
    """`--help` of each command (and building the parser) answers at once: heavy imports wait until
    a command runs. Checked in a fresh interpreter, where nothing is imported yet."""
    import json
    import subprocess
    import sys

    from lora_trainer.host import subprocess_env

    code = f"HEAVY = {HEAVY!r}\n" + _HELP_EVERY_COMMAND
    done = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {"train", "stop", "config", "demo", "tag", "tags", "tags show", "prepare", "ui"} <= set(result["commands"])
    assert result["imported"] == {}  # module -> the first command whose --help imported it


def test_tags_and_prepare_run_without_torch_or_gradio(tmp_path):
    """The dataset and caption commands work on images and text: they answer without loading the
    trainer's packages (seconds each) or the UI's."""
    import json
    import subprocess
    import sys

    from PIL import Image

    from lora_trainer.host import subprocess_env

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (96, 128), (200, 40, 35)).save(photos / "a.jpg")
    project = tmp_path / "myLoRA"
    code = (
        "import json, sys\n"
        "from lora_trainer.cli import main\n"
        f"codes = [main(['prepare', '--project', {str(project)!r}, '--name', 'myLoRA', '--size', '64', "
        f"{str(photos)!r}]),\n"
        f"         main(['tags', 'add', {str(project / 'img' / '1_myLoRA')!r}, 'myLoRA']),\n"
        f"         main(['tags', 'show', {str(project / 'img' / '1_myLoRA')!r}])]\n"
        "print(json.dumps({'codes': codes, 'imported': [m for m in HEAVY if m in sys.modules]}))\n")
    done = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n" + code], env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {"codes": [0, 0, 0], "imported": []}
    assert "a.png: myLoRA" in done.stdout


def test_every_name_the_captions_package_lists_imports():
    """`lora_trainer.captions` loads its parts on first use; each name it offers must still be there."""
    import lora_trainer.captions as captions

    missing = [name for name in captions.__all__ if getattr(captions, name, None) is None]
    assert missing == []
    assert captions.Tagger.__module__ == "lora_trainer.captions.tagger"
