"""The package layering, read from the source: engines imports neither gate nor trainer; gate never trainer.

Checked statically (every ``import`` and ``from … import`` anywhere in a module, including
the ones inside functions), so a lazy import cannot slip through the way it would past a
check that only imports the top level.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"engines": ("gate", "trainer"), "gate": ("trainer",)}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """Top-level package names a module imports, with the line of each import."""
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_layers_below_them(package):
    modules = sorted((ROOT / package).rglob("*.py"))
    assert len(modules) > 5
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {name}" for path in modules
             for name, line in sorted(imported_packages(path)) if name in FORBIDDEN[package]]
    assert not wrong, wrong


def test_the_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from trainer.media import x\n    import gate.cli as c\n")
    assert imported_packages(module) == {("os", 1), ("trainer", 4), ("gate", 5)}
