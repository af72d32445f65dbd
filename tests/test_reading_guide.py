"""Every file and function the reading guide names exists, so the guide cannot rot as the code moves."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "reading-guide.md"
# `path` or `path::name` or `path::Class.method` inside backticks
REFERENCE = re.compile(r"`((?:tinygan|tests|examples|docs)/[\w/.-]*)(?:::([\w.]+))?`")


def references():
    return sorted(set(REFERENCE.findall(GUIDE.read_text(encoding="utf-8"))))


def defined_names(path):
    """'name' for top-level functions, classes and assignments, 'Class.method' for methods."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names |= {f"{node.name}.{m.name}" for m in node.body
                          if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))}
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def test_the_guide_names_many_places():
    assert len(references()) >= 40


@pytest.mark.parametrize("path, name", references(), ids=lambda v: v or "file")
def test_every_reference_resolves(path, name):
    target = ROOT / path
    assert target.exists(), f"the reading guide names {path}, which does not exist"
    if name:
        assert name in defined_names(target), f"the reading guide names {path}::{name}, which is not defined there"
