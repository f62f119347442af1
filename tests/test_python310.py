"""Forge runs on Python 3.10: every module must parse as 3.10 and use no 3.11-only module."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    p for d in ("lora_trainer", "scripts", "tests", "benchmarks", "tools") for p in (ROOT / d).rglob("*.py")
) + [ROOT / "install.py", ROOT / "preload.py"]
NEW_MODULES = {"tomllib", "wsgiref.types"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_parses_as_python_310(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 10))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        assert not NEW_MODULES.intersection(names), f"{path}: imports a 3.11-only module {names}"
