"""Fixtures for the Slicer module tests: the strict stand-in installed as ``slicer``/``qt``/``vtk``..."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "SegDeep"
_OURS = ("SegDeep", "SegDeepHelpers")


def _forget_modules() -> None:
    from Testing.SegDeep import slicer_standin

    for name in list(sys.modules):
        if name in slicer_standin.MODULE_NAMES or name.split(".")[0] in _OURS:
            del sys.modules[name]


@pytest.fixture
def helpers_path():
    """SegDeep/ on sys.path so ``SegDeepHelpers`` imports like inside Slicer."""
    sys.path.insert(0, str(MODULE_DIR))
    yield MODULE_DIR
    sys.path.remove(str(MODULE_DIR))
    for name in list(sys.modules):
        if name.split(".")[0] in _OURS:
            del sys.modules[name]


@pytest.fixture(params=[(5, 10)])
def standin(request, helpers_path):
    """The stand-in Slicer modules (Slicer 5.10 by default; parametrize with (5, 8) for 5.8)."""
    from Testing.SegDeep import slicer_standin

    _forget_modules()
    modules = slicer_standin.build(request.param)
    sys.modules.update(modules)
    yield slicer_standin
    _forget_modules()
