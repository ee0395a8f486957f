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
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from SegDeepLib.errors import SegDeepError
from SegDeepLib.io.atomic import check_output_path, follow_umask
from SegDeepLib.io.labels import LabelTable
from SegDeepLib.io.model_folder import (
    SPEC_FILE,
    load_weights,
    read_spec,
    save_model_folder,
    weights_name,
)
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
    if not folder.is_dir():
        raise SegDeepError(f"{folder}: no such model folder")
    if target.suffix.lower() != ".zip":
        raise SegDeepError(f"{target}: the output must be a .zip file")
    check_output_path(target, overwrite, inputs=(folder,))
    spec = read_spec(folder)
    load_weights(folder, spec)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    follow_umask(tmp)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not path.samefile(tmp):
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


def _zip_spec(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], root: str, zip_path: Path) -> dict[str, Any]:
    """The zip's ``model.json``, read from the archive before anything is extracted."""
    import json

    wanted = str(PurePosixPath(root) / SPEC_FILE) if root else SPEC_FILE
    info = next((m for m in members if m.filename == wanted), None)
    if info is None:
        raise SegDeepError(f"{zip_path}: not a SegDeep model zip (no {SPEC_FILE}); export it with segdeep export")
    try:
        spec = json.loads(archive.read(info).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SegDeepError(f"{zip_path}: {wanted} is not valid JSON ({exc})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("id"), str) or not spec["id"].strip():
        raise SegDeepError(f"{zip_path}: {wanted} has no model 'id'")
    weights_name(spec, f"{zip_path}: {wanted}")
    return spec


def _safe_id(model_id: str, zip_path: Path) -> str:
    name = model_id.strip()
    if name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise SegDeepError(f"{zip_path}: model id {model_id!r} is not a usable folder name; pass -o FOLDER")
    return name


def import_zip(
    zip_path: str | os.PathLike, target: str | os.PathLike | None = None, overwrite: bool = False
) -> Path:
    """Unpack a model zip into ``target`` (default: ``$SEGDEEP_MODELS_DIR/<id>``) atomically, then
    verify it like any model folder. Nothing is written unless every check passes."""
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise SegDeepError(f"{zip_path}: no such file" if not zip_path.exists() else f"{zip_path}: not a file")
    if not zipfile.is_zipfile(zip_path):
        raise SegDeepError(f"{zip_path}: not a zip file (export models with segdeep export)")
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SegDeepError(f"{zip_path}: unreadable zip ({exc})") from None
    with archive:
        members = _safe_members(archive, zip_path)
        root = _common_root(members)
        spec = _zip_spec(archive, members, root, zip_path)
        if target is None:
            from SegDeepLib.inference.catalogue import user_models_dir

            models = user_models_dir()
            models.mkdir(parents=True, exist_ok=True)
            target = models / _safe_id(spec["id"], zip_path)
        target = check_output_path(Path(target), overwrite, inputs=(zip_path,), folder=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        follow_umask(tmp, folder=True)
        try:
            _extract(archive, members, root, tmp, zip_path)
            try:
                load_weights(tmp, read_spec(tmp))
            except SegDeepError as exc:  # name the zip, not the temporary folder
                raise SegDeepError(str(exc).replace(str(tmp), f"{zip_path}:")) from None
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _extract(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], root: str, tmp: Path, zip_path: Path) -> None:
    for info in members:
        if info.is_dir():
            continue
        relative = PurePosixPath(info.filename).relative_to(root) if root else PurePosixPath(info.filename)
        out = tmp / Path(*relative.parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with archive.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise SegDeepError(f"{zip_path}: member {info.filename!r} is corrupt ({exc})") from None


def _common_root(members: list[zipfile.ZipInfo]) -> str:
    """Accept zips holding the folder itself (``name/model.json``) as well as its content."""
    names = [PurePosixPath(m.filename) for m in members if not m.is_dir()]
    if any(n.name == SPEC_FILE and len(n.parts) == 1 for n in names):
        return ""
    firsts = {n.parts[0] for n in names if len(n.parts) > 1}
    return firsts.pop() if len(firsts) == 1 and all(len(n.parts) > 1 for n in names) else ""
