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
