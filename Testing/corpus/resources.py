"""Inputs for the bad-input corpus, made at test time from ../shared/data (synthetic when absent).

Nothing here is committed data: real images are cropped into the test's temporary folder, DICOM
series are copied there before being damaged, and every model is a tiny hand-set network.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import SimpleITK as sitk

import Testing.SegDeepLib.training.helpers  # noqa: F401  (registers test_tiny3d)
from SegDeepLib.preprocessing import make_phantom
from Testing.conftest import SHARED_DATA
from Testing.SegDeepLib.inference.tiny_nets import make_model_folder

CT_FILE = SHARED_DATA / "totalsegmentator-testfiles/ct_abdomen_pelvis_3mm/example_ct_sm.nii.gz"
MR_FILE = SHARED_DATA / "totalsegmentator-testfiles/mr_abdomen_3mm/example_mr_sm.nii.gz"
DICOM_DIR = SHARED_DATA / "prostatex-dicom-mr/ProstateX-0000_t2_tse_tra"
DICOM_3SLICE = SHARED_DATA / "dcmqi-ct-3slice/ct-3slice"
PNG_FILE = SHARED_DATA / "isbi2012-em/train/label/0.png"
CENTRES = [0.0, 100.0, 200.0]


@dataclass
class Spec:
    """One corpus case: the command, what must come out, and what must not change."""

    argv: list[str]
    rc: int = 2
    names: str | None = None  # must appear in the error line (usually the file's name)
    protect: list[Path] = field(default_factory=list)  # byte-for-byte unchanged
    absent: list[Path] = field(default_factory=list)  # must not exist afterwards
    warn: str | None = None  # a "segdeep: warning:" line must contain this
    env: dict[str, str] = field(default_factory=dict)
    check: Callable[[], None] | None = None  # extra assertions on success


@dataclass
class Resources:
    root: Path
    ct: sitk.Image
    mr: sitk.Image
    model: Path
    model_resample: Path
    model_mr: Path
    real: bool
    png: Path
    dicom: Path
    dicom_3slice: Path | None


def _crop_real_ct() -> sitk.Image | None:
    if not CT_FILE.exists():
        return None
    image = sitk.ReadImage(str(CT_FILE))
    return image[:, :, 8:20]  # 12 slices of a real abdomen (body and air), geometry kept


def _crop_real_mr() -> sitk.Image | None:
    if not MR_FILE.exists():
        return None
    image = sitk.ReadImage(str(MR_FILE))
    size = image.GetSize()
    return image[size[0] // 2 - 16 : size[0] // 2 + 16, size[1] // 2 - 16 : size[1] // 2 + 16, 0:10]


def _synthetic_mr() -> sitk.Image:
    rng = np.random.default_rng(1)
    image = sitk.GetImageFromArray(rng.uniform(0, 900, (10, 32, 32)).astype(np.int16))
    image.SetSpacing((1.5, 1.5, 4.0))
    return image


def write_dicom_series(image: sitk.Image, folder: Path) -> Path:
    """A synthetic single-series DICOM folder (the fallback without shared data)."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.1.4242"
    direction = image.GetDirection()
    for k in range(image.GetDepth()):
        piece = image[:, :, k]
        origin = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT", "0020|000e": uid, "0020|000d": uid + ".1",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in origin),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (direction[0], direction[3], direction[6],
                                                       direction[1], direction[4], direction[7])),
            "0028|0030": f"{image.GetSpacing()[1]:.6f}\\{image.GetSpacing()[0]:.6f}",
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
            "0008|0018": f"{uid}.2.{k + 1}",
        }
        for tag, value in tags.items():
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"1-{k + 1:02d}.dcm"))
        writer.Execute(piece)
    return folder


def _png(root: Path) -> Path:
    if PNG_FILE.exists():
        return PNG_FILE
    path = root / "slice.png"
    sitk.WriteImage(sitk.GetImageFromArray((np.arange(64 * 64) % 256).reshape(64, 64).astype(np.uint8)), str(path))
    return path


def build_resources(root: Path) -> Resources:
    root.mkdir(parents=True, exist_ok=True)
    ct = _crop_real_ct()
    real = ct is not None
    if ct is None:
        ct = make_phantom((12, 32, 32), (3.0, 1.5, 1.5), seed=0)[0]
    mr = _crop_real_mr()
    mr = _synthetic_mr() if mr is None else mr
    inference = {"tile_size": [16, 32, 32], "overlap": 0.0, "batch_size": 2}
    nets = {"main": {"name": "test_centres", "centres": CENTRES, "scale": 0.01}}
    model = make_model_folder(root / "model", nets, ["liver", "spleen"], inference=inference)
    model_resample = make_model_folder(
        root / "model-resample", nets, ["liver", "spleen"], inference=inference,
        preprocessing={"spacing": [2.0, 2.0, 2.0], "intensity": {"kind": "none"}},
    )
    model_mr = make_model_folder(root / "model-mr", nets, ["liver", "spleen"], inference=inference)
    spec = json.loads((model_mr / "model.json").read_text())
    spec["modality"] = "MR"
    (model_mr / "model.json").write_text(json.dumps(spec))
    if DICOM_DIR.exists():
        dicom = DICOM_DIR
    else:
        series = sitk.GetImageFromArray(np.random.default_rng(2).integers(0, 800, (12, 24, 24)).astype(np.int16))
        series.SetSpacing((0.5, 0.5, 3.0))
        dicom = write_dicom_series(series, root / "dicom-synthetic")
    return Resources(root, ct, mr, model, model_resample, model_mr, real, _png(root), dicom,
                     DICOM_3SLICE if DICOM_3SLICE.exists() else None)


def copy_series(source: Path, target: Path) -> Path:
    """A writable copy of a DICOM series folder (the shared data is read-only)."""
    shutil.copytree(source, target)
    target.chmod(0o755)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


def write(image: sitk.Image, path: Path, compress: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=compress)
    return path


def with_array(reference: sitk.Image, array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def cut(path: Path, fraction: float) -> Path:
    """Truncate a file to ``fraction`` of its bytes (an interrupted copy)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def snapshot(paths: list[Path]) -> dict[str, Any]:
    """Bytes of every file under ``paths`` (folders recursively)."""
    state: dict[str, Any] = {}
    for path in paths:
        if path.is_dir():
            for item in sorted(path.rglob("*")):
                if item.is_file():
                    state[str(item)] = item.read_bytes()
        elif path.exists():
            state[str(path)] = path.read_bytes()
        else:
            state[str(path)] = None
    return state
