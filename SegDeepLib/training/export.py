"""Training output as a self-describing model folder (:mod:`SegDeepLib.io.model_folder`), and zips.

``export_run`` writes ``model.json`` (networks, preprocessing, labels, inference settings, training
summary, validation metrics, library version) + ``weights.pt``. ``export_zip`` / ``import_zip`` move a
model folder to and from a ``.zip``; imports reject members that would land outside the target.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from SegDeepLib.errors import SegDeepError
from SegDeepLib.io.labels import LabelTable
from SegDeepLib.io.model_folder import SPEC_FILE, load_weights, read_spec, save_model_folder
from SegDeepLib.training.config import TrainConfig
from SegDeepLib.training.setup import DataSetup


def inference_settings(c: TrainConfig) -> dict[str, Any]:
    """The predictor's ``inference`` section (:mod:`SegDeepLib.inference.settings`), matching validation."""
    settings: dict[str, Any] = {
        "mode": "3d" if c.sampling.mode == "patch3d" else "2d",
        "tile_size": list(c.validation.tile_size or c.sampling.patch_size),
        "overlap": c.validation.overlap,
        "weighting": "gaussian",
        "pad_mode": c.validation.pad_mode,
    }
    if c.sampling.mode != "patch3d":
        sequence = c.sampling.mode == "sequence2d"
        # a sequence model reads runs of the slice count it was trained on (as in validation)
        settings["slices"] = {"context": c.sampling.context_slices // 2, "sequence": sequence,
                              "sequence_network": None,
                              "window": c.sampling.sequence_length if sequence else None}
    return _merge(settings, c.export.inference)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _cascade(spec: dict[str, Any], stage1: Path, dilation_mm: float) -> dict[str, Any]:
    """Stage 2 of a cascade: one model folder holding both networks (``mode: cascade``)."""
    first = read_spec(stage1)
    s1 = first.get("inference", {})
    spec["networks"] = {"stage1": first["networks"]["main"], "stage2": spec["networks"]["main"]}
    spec["inference"] = {
        **{k: v for k, v in spec["inference"].items() if k not in ("mode", "tile_size", "overlap")},
        "mode": "cascade",
        "cascade": {
            "stage1": {"network": "stage1", "preprocessing": first["preprocessing"],
                       "tile_size": s1.get("tile_size"), "overlap": s1.get("overlap", 0.0)},
            "stage2": {"network": "stage2", "tile_size": spec["inference"]["tile_size"],
                       "overlap": spec["inference"]["overlap"]},
            "dilation": dilation_mm, "dilation_in_mm": True,
        },
    }
    return spec


def build_spec(c: TrainConfig, setup: DataSetup, model_cfg: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    position = state.get("position", {})
    table = LabelTable.from_names(list(setup.mapping.names), name=c.name)
    return {
        "id": c.export.id or c.name,
        "version": "1",
        "title": c.export.title or c.name,
        "method": c.export.method or str(model_cfg.get("name")),
        "modality": c.export.modality,
        "networks": {"main": model_cfg},
        "preprocessing": setup.spec,
        "labels": table.to_dict(),
        "inference": inference_settings(c),
        "training": {
            "dataset": str(setup.dataset.root),
            "dataset_format": setup.dataset.format,
            "num_training_cases": len(setup.train_ids),
            "training_cases": setup.train_ids,
            "validation_cases": setup.val_ids,
            "fold": c.data.fold,
            "epochs": int(position.get("epoch", 0)),
            "global_step": int(position.get("global_step", 0)),
            "config": c.to_dict(),
        },
        "metrics": {"best_validation_mean_dice": position.get("best_dice"), "best_epoch": position.get("best_epoch"),
                    "history": position.get("history", [])},
    }


def export_run(c: TrainConfig, setup: DataSetup, model_cfg: dict[str, Any], state: dict[str, Any]) -> Path:
    """Write the run's model folder from a checkpoint state (``best`` when validation ran)."""
    folder = Path(c.export.folder) if c.export.folder else c.out / "model"
    spec = build_spec(c, setup, model_cfg, state)
    weights = {"main": state["model"]}
    if c.data.region_from:
        spec = _cascade(spec, Path(c.data.region_from), c.data.region_dilation_mm)
        weights = {"stage1": load_weights(c.data.region_from)["main"], "stage2": state["model"]}
    _check_inference(spec)
    return save_model_folder(folder, spec, weights, half=c.export.half, overwrite=True)


def _check_inference(spec: dict[str, Any]) -> None:
    """The predictor must accept the folder: validate ``inference`` with its own rules."""
    try:
        from SegDeepLib.inference.settings import inference_settings as check
    except ImportError:  # inference package absent in a stripped-down install
        return
    check(spec, where="export")


def export_zip(folder: str | os.PathLike, target: str | os.PathLike, overwrite: bool = False) -> Path:
    """Zip a model folder (checked: spec readable, weights' sha256 valid)."""
    folder, target = Path(folder), Path(target)
    spec = read_spec(folder)
    load_weights(folder, spec)
    if target.exists() and not overwrite:
        raise SegDeepError(f"{target}: already exists; choose another name or pass --overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(folder).as_posix())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _safe_members(archive: zipfile.ZipFile, zip_path: Path) -> list[zipfile.ZipInfo]:
    members = []
    for info in archive.infolist():
        name = PurePosixPath(info.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts or (name.parts and ":" in name.parts[0]):
            raise SegDeepError(f"{zip_path}: member {info.filename!r} would be written outside the target folder; refusing")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise SegDeepError(f"{zip_path}: member {info.filename!r} is a symbolic link; refusing")
        members.append(info)
    return members


def import_zip(zip_path: str | os.PathLike, target: str | os.PathLike, overwrite: bool = False) -> Path:
    """Unpack a model zip into ``target`` (atomically), then verify it like any model folder."""
    zip_path, target = Path(zip_path), Path(target)
    if not zipfile.is_zipfile(zip_path):
        raise SegDeepError(f"{zip_path}: not a zip file")
    if target.exists() and not overwrite:
        raise SegDeepError(f"{target}: already exists; choose another folder or pass --overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = _safe_members(archive, zip_path)
            root = _common_root(members)
            for info in members:
                if info.is_dir():
                    continue
                relative = PurePosixPath(info.filename).relative_to(root) if root else PurePosixPath(info.filename)
                out = tmp / Path(*relative.parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        load_weights(tmp, read_spec(tmp))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _common_root(members: list[zipfile.ZipInfo]) -> str:
    """Accept zips holding the folder itself (``name/model.json``) as well as its content."""
    names = [PurePosixPath(m.filename) for m in members if not m.is_dir()]
    if any(n.name == SPEC_FILE and len(n.parts) == 1 for n in names):
        return ""
    firsts = {n.parts[0] for n in names if len(n.parts) > 1}
    return firsts.pop() if len(firsts) == 1 and all(len(n.parts) > 1 for n in names) else ""
