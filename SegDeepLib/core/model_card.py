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


def read_spec(folder: str | os.PathLike) -> dict[str, Any]:
    """Read and minimally validate ``model.json`` (no weights loaded)."""
    path = Path(folder) / SPEC_FILE
    if not path.exists():
        raise SegDeepError(f"{folder}: not a SegDeep model folder (no {SPEC_FILE})")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SegDeepError(f"{path}: not valid JSON ({exc})") from None
    for key in ("id", "networks", "labels", "weights"):
        if key not in spec:
            raise SegDeepError(f"{path}: missing key {key!r}")
    return spec
