"""Self-describing model folders: the one format shared by training (export) and inference.

Layout::

    my_model/
      model.json   # the spec, see below
      weights.pt   # {network_key: state_dict}, torch.save'd tensors only

``model.json`` keys (training writes them, the catalogue and predictor read them):

- ``format``: ``"segdeep-model/1"``; ``id``, ``version``, ``title``, ``method``, ``modality``
- ``networks``: ``{key: build_model config}`` (``"main"``, or ``"stage1"``/``"stage2"`` for the
  cascade, ``"crf"`` state lives with the network that owns it)
- ``preprocessing``: spec for :func:`SegDeepLib.preprocessing.pipeline.preprocess`
- ``labels``: a label table dict (:class:`SegDeepLib.io.labels.LabelTable`)
- ``inference``: predictor settings (tile size, overlap, 2D/3D, TTA, postprocessing, crf...)
- ``weights``: ``{"file": "weights.pt", "sha256": ..., "dtype": "float16"|"float32"}``
- optional: ``training`` (data, licence, number of cases), ``metrics``, ``timing``, ``library_version``

Weights are checked against their sha256 before loading and loaded with ``weights_only=True``.
The folder is written to a temporary sibling and renamed into place (atomic).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from SegDeepLib.core.model_card import SPEC_FILE, WEIGHTS_FILE, read_spec, weights_name
from SegDeepLib.errors import SegDeepError
from SegDeepLib.io.atomic import follow_umask

FORMAT = "segdeep-model/1"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model_folder(
    folder: str | os.PathLike,
    spec: dict[str, Any],
    state_dicts: dict[str, dict[str, Any]],
    half: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write ``spec`` + weights atomically. ``half`` stores floating tensors as float16."""
    import torch

    from SegDeepLib.version import __version__

    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise SegDeepError(f"{folder}: already exists; choose another folder or pass overwrite")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    follow_umask(tmp, folder=True)
    try:
        weights = {key: {name: _store(t, half) for name, t in sd.items()} for key, sd in state_dicts.items()}
        torch.save(weights, tmp / WEIGHTS_FILE)
        spec = dict(spec, format=FORMAT, library_version=spec.get("library_version", __version__))
        spec["weights"] = {
            "file": WEIGHTS_FILE,
            "sha256": sha256_file(tmp / WEIGHTS_FILE),
            "dtype": "float16" if half else "float32",
        }
        (tmp / SPEC_FILE).write_text(json.dumps(spec, indent=2))
        if folder.exists():
            backup = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(folder, backup)
            os.replace(tmp, folder)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _store(tensor: Any, half: bool) -> Any:
    tensor = tensor.detach().cpu()
    if half and tensor.is_floating_point():
        return tensor.half()
    return tensor.clone()


def weights_path(folder: str | os.PathLike, spec: dict[str, Any]) -> Path:
    """The weights file, checked to resolve inside ``folder`` (symbolic links included)."""
    folder = Path(folder)
    path = folder / weights_name(spec, folder / SPEC_FILE)
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        raise SegDeepError(
            f"{path}: resolves to {path.resolve()}, outside the model folder (a symbolic link?); refusing"
        ) from None
    return path


def load_weights(folder: str | os.PathLike, spec: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Verify the sha256 and load the state dicts safely (``weights_only=True``), as float32."""
    import torch

    folder = Path(folder)
    spec = spec or read_spec(folder)
    path = weights_path(folder, spec)
    if not path.exists():
        raise SegDeepError(f"{path}: weights file missing; reinstall or re-export model {spec['id']!r}")
    expected = spec["weights"].get("sha256")
    actual = sha256_file(path)
    if expected != actual:
        raise SegDeepError(f"{path}: sha256 mismatch (expected {expected}, got {actual}); the file is corrupt or was changed")
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's message suggests weights_only=False: never pass that on
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            first = "it holds pickled Python objects, which SegDeep never loads"
        raise SegDeepError(
            f"{path}: not a tensors-only weights file ({first[:200]}); save plain state_dicts "
            "(segdeep train / export write them)"
        ) from None
    if not isinstance(weights, dict) or not all(isinstance(sd, dict) for sd in weights.values()):
        raise SegDeepError(f"{path}: expected {{network: state_dict}}; re-export the model")
    return {key: {n: (t.float() if t.is_floating_point() else t) for n, t in sd.items()} for key, sd in weights.items()}
