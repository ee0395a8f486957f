"""The one registry helper behind networks and losses: registration, building, lazy built-ins."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from SegDeepLib.errors import SegDeepError
from SegDeepLib.registry import Registry

LIB = Path(__file__).resolve().parents[2] / "SegDeepLib"


class Thing:
    def __init__(self, size: int = 1) -> None:
        self.size = size


def test_register_and_build_with_clear_errors():
    things = Registry("thing")
    assert things.register("thing")(Thing) is Thing
    things.register("thing")(Thing)  # the same constructor again is fine
    assert things.build({"name": "thing", "size": 3}).size == 3
    assert things.names() == ["thing"]
    with pytest.raises(ValueError, match="thing name 'thing' registered twice"):
        things.register("thing")(dict)
    with pytest.raises(SegDeepError, match="unknown thing 'nope'; available: thing"):
        things.build({"name": "nope"})
    with pytest.raises(SegDeepError, match="thing 'thing': bad parameters"):
        things.build({"name": "thing", "colour": "red"})


def test_built_ins_are_the_package_modules_imported_on_first_use(monkeypatch):
    from SegDeepLib.models.registry import NETWORKS

    assert {"vnet", "unet3d", "cnn_crf"} <= set(NETWORKS.names())
    monkeypatch.delitem(NETWORKS.factories, "cnn_crf")
    monkeypatch.delitem(sys.modules, "SegDeepLib.models.cnn_crf")
    assert "cnn_crf" in NETWORKS.names()
    assert "SegDeepLib.models.cnn_crf" in sys.modules


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("package", ["models", "losses"])
def test_registries_import_none_of_their_plug_ins(package):
    """No circle: the plug-ins import the registry, never the other way round."""
    imported = _imports(LIB / package / "registry.py") | _imports(LIB / "registry.py")
    assert {name for name in imported if name.startswith("SegDeepLib.")} <= {
        "SegDeepLib.errors",
        "SegDeepLib.registry",
    }


def test_networks_live_in_models_and_import_nothing_from_training():
    for path in (LIB / "models").glob("*.py"):
        assert not any(name.startswith("SegDeepLib.training") for name in _imports(path)), path
    assert not (LIB / "training" / "cnn_crf.py").exists()
