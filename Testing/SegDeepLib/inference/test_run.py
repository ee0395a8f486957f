"""The run of one prediction lives in its own module, below the predictor and the cascade."""

from __future__ import annotations

import ast
from pathlib import Path

INFERENCE = Path(__file__).resolve().parents[3] / "SegDeepLib" / "inference"


def _imported(module: str) -> set[str]:
    """Every SegDeepLib module ``module`` imports (top level, in functions, for type checking)."""
    tree = ast.parse((INFERENCE / f"{module}.py").read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("SegDeepLib.")}


def test_predictor_chains_run_and_cascade_without_a_circle():
    assert "SegDeepLib.inference.run" in _imported("cascade")
    assert {"SegDeepLib.inference.run", "SegDeepLib.inference.cascade"} <= _imported("predictor")
    for module in ("run", "cascade"):
        imported = _imported(module)
        assert "SegDeepLib.inference.predictor" not in imported, module
    assert "SegDeepLib.inference.cascade" not in _imported("run")


def test_prediction_run_is_public():
    from SegDeepLib.inference import predictor, run

    assert predictor.PredictionRun is run.PredictionRun and run.PredictionRun.__doc__
    assert not hasattr(predictor, "_Run")
