"""Package-level rules: SegDeepLib never imports Slicer-only modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "SegDeepLib"
FORBIDDEN = {"slicer", "qt", "ctk", "vtk", "mrml", "PythonQt"}


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted(LIB.rglob("*.py")), ids=lambda p: str(p.relative_to(LIB)))
def test_no_slicer_imports(path: Path) -> None:
    assert not (_imported_roots(path) & FORBIDDEN), f"{path} imports a Slicer-only module"


def test_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import vtk\nfrom slicer.util import arrayFromVolume\n")
    assert _imported_roots(bad) & FORBIDDEN == {"vtk", "slicer"}


def test_python_m_and_console_script_share_main() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "SegDeepLib", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("segment", "train", "evaluate", "models", "demo", "info"):
        assert command in out.stdout
