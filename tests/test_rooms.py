"""The house: each job in its own room, and the doors between them (read from the source)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from lora_trainer.host import subprocess_env

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lora_trainer"


def _imported_modules(path: Path) -> set[str]:
    """Full names of the lora_trainer modules a file imports (absolute or relative)."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names.add(base)
    return {n for n in names if n.startswith("lora_trainer")}


def _imports_of(folder: Path) -> dict[str, set[str]]:
    return {str(p.relative_to(REPO)): _imported_modules(p) for p in folder.rglob("*.py")}


def test_the_ui_reaches_runs_not_the_trainer():
    offenders = {f: sorted(m for m in mods if m.startswith("lora_trainer.train"))
                 for f, mods in _imports_of(PACKAGE / "ui").items()}
    assert {f: m for f, m in offenders.items() if m} == {}


def test_runs_and_config_do_not_depend_on_the_trainer():
    for room in ("runs", "config"):
        offenders = {f: sorted(m for m in mods if m.startswith("lora_trainer.train"))
                     for f, mods in _imports_of(PACKAGE / room).items()}
        assert {f: m for f, m in offenders.items() if m} == {}, room


def test_forge_glue_imports_no_trainer_module():
    mods = _imported_modules(REPO / "scripts" / "lora_trainer_tab.py")
    assert not any(m.startswith("lora_trainer.train") for m in mods), mods


def test_run_management_config_and_project_load_without_torch():
    """What the UI imports to start and follow runs stays torch-free (seconds of import, GBs of RAM
    in the WebUI's process for nothing)."""
    code = ("import json, sys\n"
            "import lora_trainer.runs.runner, lora_trainer.runs.layout, lora_trainer.runs.publish\n"
            "import lora_trainer.config, lora_trainer.config.presets, lora_trainer.config.kohya_import\n"
            "import lora_trainer.project, lora_trainer.host, lora_trainer.images\n"
            "print(json.dumps([m for m in ('torch', 'diffusers', 'gradio', 'onnxruntime') if m in sys.modules]))\n")
    done = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_every_room_is_a_regular_package():
    """A folder without __init__.py imports as a namespace package, which another extension's
    folder of the same name on Forge's shared sys.path could join."""
    folders = {p.parent for p in PACKAGE.rglob("*.py")}
    assert sorted(str(f.relative_to(REPO)) for f in folders if not (f / "__init__.py").is_file()) == []
