"""The Slicer module reads SegDeepLib's torch-free core, and never imports torch.

Each check runs in a fresh interpreter (``sys.modules`` of this one already holds torch) where
``import torch`` fails, as before the dependencies are installed into Slicer's Python.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "SegDeep"
HELPERS = sorted(p.stem for p in (MODULE_DIR / "SegDeepHelpers").glob("*.py") if p.stem != "__init__")


def _run(code: str, block: tuple[str, ...] = ("torch",), env: dict | None = None) -> dict:
    """Run ``code`` with ``block`` unimportable; it prints one JSON object, returned here."""
    guard = "".join(f"sys.modules[{name!r}] = None\n" for name in block)
    script = f"import json, sys\n{guard}sys.path[:0] = [{str(MODULE_DIR)!r}, {str(ROOT)!r}]\n{code}"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=str(ROOT), timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _user_model(root: Path) -> Path:
    folder = root / "my-liver"
    folder.mkdir(parents=True)
    spec = {"id": "my-liver", "title": "My liver", "networks": {"main": {}}, "weights": {"file": "w.pt"},
            "labels": {"labels": [{"value": 1, "name": "liver"}]}, "training": {"licence": "CC BY 4.0"}}
    (folder / "model.json").write_text(json.dumps(spec))
    return root


def test_helpers_and_core_import_without_torch(tmp_path):
    import os

    env = dict(os.environ, SEGDEEP_MODELS_DIR=str(_user_model(tmp_path / "user")))
    out = _run(
        "import importlib\n"
        f"for name in {HELPERS!r}: importlib.import_module('SegDeepHelpers.' + name)\n"
        "from SegDeepHelpers import catalogue, crf\n"
        "models = catalogue.loadCatalogue()\n"
        "print(json.dumps({'ids': [m.id for m in models], 'missing': catalogue.CORE_MISSING,\n"
        "                  'crf': [p.name for p in crf.PARAMETERS],\n"
        "                  'core': catalogue.core.__name__, 'torch': sys.modules.get('torch') is not None}))",
        env=env)
    assert out["core"] == "SegDeepLib.core.catalogue" and out["missing"] == "" and not out["torch"]
    assert out["crf"] == ["theta_alpha", "theta_beta", "theta_gamma", "w1", "w2", "num_iterations"]
    assert out["ids"][-1] == "my-liver"  # the user's folder, made an entry by the core
    from SegDeepLib.core.catalogue import load_catalogue

    shipped = [m["id"] for m in load_catalogue(include_user=False)["models"]]
    assert out["ids"] == [*shipped, "my-liver"]


def test_core_imports_no_torch_nor_numpy():
    """Importing the core needs the standard library only (numpy, SimpleITK: not even loaded)."""
    out = _run("import SegDeepLib.core.catalogue, SegDeepLib.core.labels, SegDeepLib.core.model_card\n"
               "table = SegDeepLib.core.labels.load_label_table('abdomen')\n"
               "heavy = [m for m in ('torch', 'numpy', 'SimpleITK') if sys.modules.get(m) is not None]\n"
               "print(json.dumps({'heavy': heavy, 'labels': len(table.labels)}))")
    assert out["heavy"] == [] and out["labels"] > 0


def test_without_segdeeplib_the_panel_lists_nothing_and_says_why():
    out = _run("import importlib\n"
               f"for name in {HELPERS!r}: importlib.import_module('SegDeepHelpers.' + name)\n"
               "from SegDeepHelpers import catalogue, crf\n"
               "print(json.dumps({'models': catalogue.loadCatalogue(), 'missing': catalogue.CORE_MISSING,\n"
               "                  'path': catalogue.defaultCataloguePath() is None, 'crf': len(crf.PARAMETERS),\n"
               "                  'node': [crf.nodeDefault('crfThetaAlpha'), crf.nodeRange('crfThetaAlpha')]}))",
               block=("torch", "SegDeepLib"))
    assert out["models"] == [] and out["path"] is True
    assert out["crf"] == 0 and out["node"] == [0, [0, 1e9]]  # the parameter node can still be declared
    assert out["missing"].startswith("SegDeepLib is not importable") and "restart Slicer" in out["missing"]
