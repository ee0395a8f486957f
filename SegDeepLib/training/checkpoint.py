"""Atomic training checkpoints holding only tensors and plain types (loadable with ``weights_only=True``).

A checkpoint holds the model, optimizer, scheduler and grad-scaler states, every RNG state (Python,
NumPy, torch CPU and CUDA), the position (epoch, step in epoch, global step) and the runner's
bookkeeping (best Dice, early stopping, growth). It is written to a temporary file beside the target,
flushed to disk and renamed, so a SIGKILL at any moment leaves either the old or the new file.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from SegDeepLib.errors import SegDeepError
from SegDeepLib.io.atomic import follow_umask


def rng_state() -> dict[str, Any]:
    """All global RNG states as tensors / plain types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    state = {
        "python": [version, list(py_state), gauss],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        follow_umask(tmp)
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise SegDeepError(f"{path}: no checkpoint to resume from; train without --resume first")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (torch raises many types for bad files)
        raise SegDeepError(f"{path}: unreadable checkpoint ({str(exc).splitlines()[0]})") from None


def clean_stale_temporaries(folder: str | os.PathLike) -> None:
    """Remove temporary files a killed run left behind (never the checkpoints themselves)."""
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
