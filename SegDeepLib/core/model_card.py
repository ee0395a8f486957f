"""A model folder's card, ``model.json``: read and minimally validated, no weights (no torch).

The keys are described in :mod:`SegDeepLib.io.model_folder`, which writes the folders.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from SegDeepLib.errors import SegDeepError

SPEC_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"


def read_spec(folder: str | os.PathLike) -> dict[str, Any]:
    """Read and minimally validate ``model.json`` (no weights loaded)."""
    path = Path(folder) / SPEC_FILE
    if not path.exists():
        raise SegDeepError(f"{folder}: not a SegDeep model folder (no {SPEC_FILE})")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SegDeepError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise SegDeepError(f"{path}: must hold a JSON object")
    for key in ("id", "networks", "labels", "weights"):
        if key not in spec:
            raise SegDeepError(f"{path}: missing key {key!r}")
    weights_name(spec, path)
    return spec


def weights_name(spec: dict[str, Any], where: str | os.PathLike) -> str:
    """``weights.file``, refused unless it is a plain relative path inside the model folder."""
    weights = spec.get("weights")
    name = weights.get("file") if isinstance(weights, dict) else None
    if not isinstance(name, str) or not name:
        raise SegDeepError(f"{where}: 'weights.file' must name the weights file, e.g. {WEIGHTS_FILE!r}")
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0] or os.path.isabs(name):
        raise SegDeepError(
            f"{where}: 'weights.file' {name!r} points outside the model folder; refusing "
            "(the weights must lie inside the folder)"
        )
    return name

