"""Fixtures for the Slicer module tests: the strict stand-in installed as ``slicer``/``vtk``/``ctk``.

Two lanes. Tests that need Qt (every test using the ``standin`` fixture, and those marked
``pythonqt``) run only inside the real PythonQt host (``Testing/SegDeep/pythonqt_lane.sh``, which
``make test`` runs after the main suite): there ``qt`` is the binding Slicer embeds, with its
semantics. The plain-Python run deselects them and says so; the PythonQt run deselects the others.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "SegDeep"
_OURS = ("SegDeep", "SegDeepHelpers")

try:
    import PythonQt  # noqa: F401 - exists only inside a PythonQt host

    IN_PYTHONQT = True
except ImportError:
    IN_PYTHONQT = False


def needsPythonQt(item: pytest.Item) -> bool:
    return "standin" in getattr(item, "fixturenames", ()) or item.get_closest_marker("pythonqt") is not None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pythonqt: runs only under the real PythonQt (the PythonQt lane)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    ours = [item for item in items if here in Path(str(item.fspath)).resolve().parents]
    if IN_PYTHONQT:  # the lane: only the module's tests, and only those that need Qt
        drop = [item for item in items if item not in ours or not needsPythonQt(item)]
    else:
        drop = [item for item in ours if needsPythonQt(item)]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [item for item in items if item not in drop]
    config._segdeepPythonQtDeselected = 0 if IN_PYTHONQT else len(drop)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    count = getattr(config, "_segdeepPythonQtDeselected", 0)
    if count:
        terminalreporter.write_line(
            f"SegDeep: {count} Slicer-module tests need the real PythonQt and were deselected here; "
            "Testing/SegDeep/pythonqt_lane.sh runs them (make test does)")


if IN_PYTHONQT:
    @pytest.fixture(autouse=True)
    def _few_threads():
        """Overrides Testing/conftest.py's: torch is never imported into the PythonQt (Slicer) process."""
        yield


@pytest.fixture(autouse=True)
def _private_temp_root(tmp_path_factory, monkeypatch):
    """Each test's job folders in a temp root of its own: other test runs on the machine create and
    remove SegDeep-* folders in the shared /tmp at the same time."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("tmp")))


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
