"""Training datasets in the layouts people already have.

- ``msd``: Medical Segmentation Decathlon, ``dataset.json`` with ``labels`` ({value: name}),
  ``modality`` and ``training`` ([{"image": ..., "label": ...}]); optional ``labels_present``
  ({case: [values]}) for partially labelled cases (3D-IRCADb export).
- ``nnunet``: nnU-Net v2 raw, ``imagesTr/{case}_{XXXX}{file_ending}``, ``labelsTr/{case}{file_ending}``,
  ``dataset.json`` with ``channel_names`` and ``labels`` ({name: value}).
- ``segnrrd``: a folder of volumes ``{case}.nii.gz|.nrrd|.mha`` beside ``{case}.seg.nrrd`` exported from
  Slicer; segments are matched to labels by name, each case annotates the segments it contains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


@dataclass
class Case:
    """One training case: its channel files, label file and annotated label values."""

    id: str
    images: list[Path]
    label: Path | None
    labels_present: list[int] | None = None  # dataset label values annotated; None = all


@dataclass
class Dataset:
    """A dataset: label table (value -> name), channel names and cases."""

    root: Path
    format: str
    labels: dict[int, str]
    channels: list[str]
    cases: list[Case]
    segment_names: dict[str, list[str]] = field(default_factory=dict)  # segnrrd: per case

    def case(self, case_id: str) -> Case:
        for case in self.cases:
            if case.id == case_id:
                return case
        raise SegDeepError(f"{self.root}: no case {case_id!r}")

    @property
    def case_ids(self) -> list[str]:
        return [c.id for c in self.cases]


def normalise_name(name: str) -> str:
    """Label names compare case- and separator-insensitively ("Urinary bladder" == "urinary_bladder")."""
    return "_".join(str(name).lower().replace("-", " ").replace("_", " ").split())


def _strip_suffix(name: str) -> str:
    for suffix in (".seg.nrrd",) + IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SegDeepError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SegDeepError(f"{path}: expected a JSON object")
    return data


def detect_format(root: Path) -> str:
    """``msd`` / ``nnunet`` (from dataset.json keys) or ``segnrrd`` (a folder with .seg.nrrd files)."""
    meta = root / "dataset.json"
    if meta.is_file():
        data = _read_json(meta)
        if "channel_names" in data:
            return "nnunet"
        if "training" in data:
            return "msd"
        raise SegDeepError(f"{meta}: neither 'training' (MSD) nor 'channel_names' (nnU-Net v2) found")
    if any(root.glob("*.seg.nrrd")):
        return "segnrrd"
    raise SegDeepError(f"{root}: no dataset.json and no .seg.nrrd files; not a dataset folder")


def load_dataset(root: str | Path, fmt: str = "auto") -> Dataset:
    """Read a dataset folder (format detected unless given)."""
    root = Path(root)
    if not root.is_dir():
        raise SegDeepError(f"{root}: dataset folder not found; check data.root")
    fmt = detect_format(root) if fmt == "auto" else fmt
    loaders = {"msd": _load_msd, "nnunet": _load_nnunet, "segnrrd": _load_segnrrd}
    if fmt not in loaders:
        raise SegDeepError(f"{root}: unknown dataset format {fmt!r}; use {', '.join(loaders)}")
    dataset = loaders[fmt](root)
    if not dataset.cases:
        raise SegDeepError(f"{root}: no training cases found ({fmt} layout)")
    return dataset


def _int_keys(mapping: dict[str, Any], where: str) -> dict[int, str]:
    try:
        return {int(k): str(v) for k, v in mapping.items()}
    except (TypeError, ValueError):
        raise SegDeepError(f"{where}: 'labels' keys must be integer values") from None


def _existing(path: Path, what: str) -> Path:
    if not path.exists():
        raise SegDeepError(f"{path}: {what} listed in dataset.json is missing")
    return path


def _load_msd(root: Path) -> Dataset:
    meta_path = root / "dataset.json"
    meta = _read_json(meta_path)
    labels = _int_keys(meta.get("labels", {}), str(meta_path))
    channels = [str(v) for _, v in sorted(meta.get("modality", {"0": "image"}).items(), key=lambda kv: int(kv[0]))]
    present = {str(k): [int(v) for v in vals] for k, vals in meta.get("labels_present", {}).items()}
    cases = []
    for entry in meta.get("training", []):
        image = _existing((root / entry["image"]).resolve(), "image")
        label = _existing((root / entry["label"]).resolve(), "label") if entry.get("label") else None
        case_id = _strip_suffix(image.name)
        listed = entry.get("labels_present", present.get(case_id))
        cases.append(Case(case_id, [image], label, _present_values(listed, labels, meta_path)))
    return Dataset(root, "msd", labels, channels, cases)


def _present_values(listed: Any, labels: dict[int, str], where: Path) -> list[int] | None:
    """``labels_present`` as values; entries may be values or label names."""
    if listed is None:
        return None
    lookup = {normalise_name(n): v for v, n in labels.items()}
    values = []
    for item in listed:
        if isinstance(item, int):
            values.append(item)
        elif normalise_name(str(item)) in lookup:
            values.append(lookup[normalise_name(str(item))])
        else:
            raise SegDeepError(f"{where}: labels_present names unknown label {item!r}")
    return sorted(values)


def _load_nnunet(root: Path) -> Dataset:
    meta_path = root / "dataset.json"
    meta = _read_json(meta_path)
    labels = {}
    for name, value in meta.get("labels", {}).items():
        if not isinstance(value, int):
            raise SegDeepError(f"{meta_path}: label {name!r} is a region ({value!r}); only integer labels are supported")
        labels[value] = str(name)
    channels = [str(v) for _, v in sorted(meta["channel_names"].items(), key=lambda kv: int(kv[0]))]
    ending = meta.get("file_ending", ".nii.gz")
    present = {str(k): [int(v) for v in vals] for k, vals in meta.get("labels_present", {}).items()}
    cases = []
    for first in sorted((root / "imagesTr").glob(f"*_0000{ending}")):
        case_id = first.name[: -len(f"_0000{ending}")]
        images = [_existing(root / "imagesTr" / f"{case_id}_{i:04d}{ending}", "channel") for i in range(len(channels))]
        label = root / "labelsTr" / f"{case_id}{ending}"
        cases.append(Case(case_id, images, label if label.exists() else None, present.get(case_id)))
    return Dataset(root, "nnunet", labels, channels, cases)


def _segment_names(path: Path) -> list[str]:
    import slicerio

    try:
        seg = slicerio.read_segmentation(str(path), skip_voxels=True)
    except TypeError:
        seg = slicerio.read_segmentation(str(path))
    except Exception as exc:  # noqa: BLE001 (slicerio raises many types for bad files)
        raise SegDeepError(f"{path}: not a readable Slicer segmentation ({exc})") from None
    return [str(s.get("name", s.get("id"))) for s in seg.get("segments", [])]


def _load_segnrrd(root: Path) -> Dataset:
    names: list[str] = []
    per_case: dict[str, list[str]] = {}
    cases = []
    for seg_path in sorted(root.glob("*.seg.nrrd")):
        case_id = _strip_suffix(seg_path.name)
        image = next((root / f"{case_id}{s}" for s in IMAGE_SUFFIXES if (root / f"{case_id}{s}").exists()), None)
        if image is None:
            raise SegDeepError(f"{seg_path}: no volume {case_id}.nii.gz/.nrrd/.mha beside it")
        per_case[case_id] = _segment_names(seg_path)
        for name in per_case[case_id]:
            if normalise_name(name) not in {normalise_name(n) for n in names}:
                names.append(name)
        cases.append(Case(case_id, [image], seg_path))
    labels = {0: "background", **{i: n for i, n in enumerate(names, start=1)}}
    lookup = {normalise_name(n): v for v, n in labels.items()}
    for case in cases:
        case.labels_present = sorted(lookup[normalise_name(n)] for n in per_case[case.id])
    return Dataset(root, "segnrrd", labels, ["image"], cases, per_case)


def read_case_image(case: Case) -> list[sitk.Image]:
    """The case's channels as images (read with the project's exact-geometry reader)."""
    from SegDeepLib.io import read_image

    return [read_image(path) for path in case.images]


def read_case_label(dataset: Dataset, case: Case, reference: sitk.Image) -> sitk.Image:
    """The case's label map with the dataset's label values, on ``reference``'s grid."""
    from SegDeepLib.io import read_image

    if case.label is None:
        raise SegDeepError(f"case {case.id}: no label file; training needs labels")
    if dataset.format == "segnrrd":
        label = _segnrrd_label(dataset, case)
    else:
        label = read_image(case.label)
    return _on_grid(label, reference, case)


def _segnrrd_label(dataset: Dataset, case: Case) -> sitk.Image:
    from SegDeepLib.io import read_segmentation

    image, table = read_segmentation(case.label)
    lookup = {normalise_name(n): v for v, n in dataset.labels.items()}
    array = sitk.GetArrayViewFromImage(image)
    out = np.zeros(array.shape, np.uint16)
    for lab in table.labels:
        out[array == lab.value] = lookup[normalise_name(lab.name)]
    result = sitk.GetImageFromArray(out.astype(np.uint8) if out.max(initial=0) < 256 else out)
    result.CopyInformation(image)
    return result


def _on_grid(label: sitk.Image, reference: sitk.Image, case: Case) -> sitk.Image:
    """Labels on another grid (e.g. a .seg.nrrd cropped to its extent) are resampled, nearest."""
    same = (label.GetSize() == reference.GetSize()
            and np.allclose(label.GetSpacing(), reference.GetSpacing(), atol=1e-4)
            and np.allclose(label.GetOrigin(), reference.GetOrigin(), atol=1e-3)
            and np.allclose(label.GetDirection(), reference.GetDirection(), atol=1e-5))
    if same:
        label.CopyInformation(reference)
        return label
    if label.GetDimension() != reference.GetDimension():
        raise SegDeepError(f"case {case.id}: label map is {label.GetDimension()}D, image is {reference.GetDimension()}D")
    return sitk.Resample(label, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, label.GetPixelID())
