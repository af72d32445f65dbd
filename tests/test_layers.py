"""The package is its layer diagram: no module imports from a layer above its own.

The layers, bottom to top, are the README's table ("A tour of the code"); this test reads every import
of every module (also those inside functions) and checks it against them, so a later change cannot
quietly make the engine depend on the training loop. It also holds the modules to a readable size.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tinygan"

#: Bottom to top. A module may import from its own layer and the layers below it.
LAYERS = [
    ("foundation", {"backend", "_malloc", "_cpu", "_strict", "_cupy_api", "files"}),
    ("engine", {"tensor"}),
    ("ops", {"functional"}),
    ("layers, optimisers, checks", {"nn", "optim", "gradcheck", "distributed"}),
    ("papers", {"gan"}),
    ("data", {"data"}),
    ("training", {"train"}),
    ("evaluation", {"eval"}),
    ("tools", {"tools"}),
    ("entry points", {"__init__", "bench", "doctor"}),
]
LEVEL = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}
MAX_LINES = 450
SOURCES = sorted(PACKAGE.rglob("*.py"))


def top_part(path):
    """The first part of a module's dotted name inside the package: 'functional' for functional/conv.py."""
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0]


def imported_parts(path):
    """The first parts of the tinygan modules ``path`` imports ({'backend', 'tensor', ...})."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]   # ('tinygan', 'functional')
    if path.name == "__init__.py":
        package = path.relative_to(PACKAGE.parent).parts[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "tinygan"]
            found |= {n.split(".")[1] for n in names if "." in n}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = list(base) + (node.module.split(".") if node.module else [])
            else:
                module = node.module.split(".") if node.module else []
            if not module or module[0] != "tinygan":
                continue
            if len(module) > 1:
                found.add(module[1])
            else:  # from tinygan import backend, nn
                found |= {a.name for a in node.names}
    return found


def test_every_module_has_a_layer():
    unknown = sorted({top_part(p) for p in SOURCES} - set(LEVEL))
    assert not unknown, f"modules in no layer: {unknown}; add them to LAYERS and to the README's table"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_from_a_layer_above_it(path):
    own = LEVEL[top_part(path)]
    above = sorted(part for part in imported_parts(path) if LEVEL.get(part, -1) > own)
    assert not above, (f"{path.relative_to(PACKAGE)} ({LAYERS[own][0]}) imports {above} "
                       f"from a layer above it ({', '.join(LAYERS[LEVEL[a]][0] for a in above)})")


def test_the_scan_sees_imports():
    # the check cannot pass by seeing nothing: the loop imports checkpoints, the ops import the engine
    assert {"backend", "files", "data"} <= imported_parts(PACKAGE / "train" / "loop.py")
    assert "tensor" in imported_parts(PACKAGE / "functional" / "core.py")
    assert "train" in imported_parts(PACKAGE / "tools" / "cli.py")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_readable(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines (at most {MAX_LINES}): split it at a seam"
