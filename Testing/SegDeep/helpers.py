"""Shared builders for the SegDeep module tests (tiny volumes, catalogue, fake CLI launcher)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def oblique_ijk_to_ras() -> np.ndarray:
    """An oblique, anisotropic, left-handed-in-LPS IJK-to-RAS matrix with an odd origin."""
    angle = np.deg2rad(23.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0],
                         [np.sin(angle) * np.cos(0.4), np.cos(angle) * np.cos(0.4), -np.sin(0.4)],
                         [np.sin(angle) * np.sin(0.4), np.cos(angle) * np.sin(0.4), np.cos(0.4)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag([0.8, -1.3, 2.5])
    matrix[:3, 3] = [-112.5, 37.25, -401.0]
    return matrix


def phantom_array(shape=(9, 14, 17), seed: int = 0) -> np.ndarray:
    """An asymmetric int16 volume: two blobs (liver-range and spleen-range intensities) + noise."""
    rng = np.random.default_rng(seed)
    array = rng.integers(-50, 50, size=shape).astype(np.int16)
    array[1:5, 2:9, 3:7] = 150  # "liver"
    array[5:8, 8:13, 10:16] = 300  # "spleen"
    array[0, 0, 0] = 250  # a single spleen voxel in a corner: catches flips
    return array


def plain_python() -> str:
    """A Python interpreter for child processes: this one, or the venv's inside the PythonQt host
    (whose ``sys.executable`` is the host program)."""
    venv = os.environ.get("VIRTUAL_ENV")
    if "PythonQt" in sys.modules and venv:
        return str(Path(venv) / "bin" / "python")
    return sys.executable


def fake_python(tmp_path: Path) -> str:
    """An executable that behaves like ``python`` for ``[childguard.py] -m SegDeepLib ...`` but runs
    fake_cli.py (which honours the child guard as the real one does)."""
    script = tmp_path / "fakepython"
    script.write_text(f'#!/bin/sh\nexec "{plain_python()}" "{HERE / "fake_cli.py"}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


FAKE_BLADDER_CRF = {"theta_alpha": 10.0, "theta_beta": 0.1, "theta_gamma": 3.0, "w1": 1.0, "w2": 1.5}


def write_catalogue(path: Path) -> Path:
    models = [
        {"id": "fake-abdomen", "title": "Abdomen (fake)", "method": "3D U-Net cascade",
         "organs": ["liver", "spleen"], "modality": "CT", "accuracy": {"liver": 0.91},
         "timing": {"cpu_s": 340, "gpu_s": 12}, "licence": "CC BY 4.0"},
        {"id": "fake-bladder", "title": "Bladder (fake)", "method": "V-Net + CRF-RNN",
         "organs": [{"value": 1, "name": "urinary_bladder"}], "modality": "CT",
         "timing": {"cpu_s": 60}, "license": "Apache-2.0", "folder": "fake-bladder"},
    ]
    path.write_text(json.dumps({"models": models}))
    # the bladder model's folder (next to the catalogue, as shipped): CRF settings in model.json;
    # num_iterations is left out (SegDeepLib's default applies)
    (path.parent / "fake-bladder").mkdir(exist_ok=True)
    (path.parent / "fake-bladder" / "model.json").write_text(json.dumps({
        "id": "fake-bladder", "inference": {"crf": {"default": True, "params": FAKE_BLADDER_CRF}}}))
    return path


def segdeep_temp_dirs() -> set[str]:
    import tempfile

    root = tempfile.gettempdir()
    return {name for name in os.listdir(root) if name.startswith("SegDeep-")}
