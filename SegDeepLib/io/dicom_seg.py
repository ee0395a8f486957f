"""DICOM Segmentation objects (SEG, BINARY) via highdicom: written on the source series' grid.

A DICOM SEG refers to the DICOM images it was made from, so writing one needs the source series'
headers (:func:`read_series_headers`); the label map must lie on that series' grid (what
:func:`SegDeepLib.io.read_image` gives for the folder, and what the predictor returns). Segments
carry the label table's names, colours and SNOMED-CT codes (the same terminology as ``.seg.nrrd``)
and name the algorithm (``AUTOMATIC``, "SegDeep <model>"). Frames take their positions and
orientation from the matching source images (oblique series included) and reference them; frames
with no segmented voxel are left out, as dcmqi and highdicom do by default.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError
from SegDeepLib.io.atomic import atomic_path
from SegDeepLib.io.image import list_dicom_series
from SegDeepLib.io.labels import Label, LabelTable

if TYPE_CHECKING:
    import pydicom

DICOM_SEG_SUFFIXES = (".dcm",)
ANATOMICAL_STRUCTURE = ("SCT", "123037004", "Anatomical Structure")
TISSUE = ("SCT", "85756007", "Tissue")  # code of a label without terminology (Slicer's generic)
AI_FAMILY = ("DCM", "123110", "Artificial Intelligence")  # CID 7162 Algorithm Family
SERIES_NUMBER = 300
# highdicom warns about harmless oddities of the *source* headers (e.g. one-part patient names)
_SOURCE_WARNINGS = r"(The string .* is unlikely to represent the intended person name)"


@dataclass(frozen=True)
class Algorithm:
    """What made the segmentation: written as the segments' algorithm identification."""

    name: str
    version: str


def is_dicom_seg_path(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(DICOM_SEG_SUFFIXES)


def _highdicom():
    try:
        import highdicom
    except ImportError:
        raise SegDeepError(
            "DICOM SEG output needs the highdicom package; install it (pip install highdicom)"
        ) from None
    return highdicom


def require_dicom_source(input_path: str | os.PathLike, output: str | os.PathLike) -> None:
    """Refuse a DICOM SEG output for an input that is not a DICOM series folder (checked early)."""
    if is_dicom_seg_path(output) and not Path(input_path).is_dir():
        raise SegDeepError(
            f"{input_path}: a DICOM SEG output ({output}) needs a DICOM series folder as input, "
            "which it references; give the series folder or write .seg.nrrd/.nii.gz instead"
        )


def read_series_headers(
    folder: str | os.PathLike, series_uid: str | None = None
) -> list[pydicom.Dataset]:
    """The headers (no pixel data) of the series' files, in the order SimpleITK reads them."""
    import pydicom

    series = list_dicom_series(folder)
    if series_uid is None and len(series) == 1:
        series_uid = next(iter(series))
    if series_uid not in series:
        raise SegDeepError(f"{folder}: no single DICOM series to reference; pass --series-uid")
    return [pydicom.dcmread(name, stop_before_pixels=True) for name in series[series_uid]]


def _code(hd, triple: Sequence[str]):
    scheme, value, meaning = (str(t) for t in triple)
    return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _segment(hd, number: int, label: Label, algorithm: Algorithm):
    term = label.terminology
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label.name[:64],
        segmented_property_category=_code(hd, term.get("category") or _default_category(term)),
        segmented_property_type=_code(hd, term.get("type", TISSUE)),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm.name[:64], version=algorithm.version[:64], family=_code(hd, AI_FAMILY)
        ),
        anatomic_regions=[_code(hd, term["anatomicRegion"])] if "anatomicRegion" in term else None,
        display_color=hd.color.CIELabColor.from_rgb(*label.color),
    )
    _add_modifier(
        hd,
        description.SegmentedPropertyTypeCodeSequence[0],
        term.get("typeModifier"),
        "SegmentedPropertyTypeModifierCodeSequence",
    )
    if "anatomicRegion" in term:
        _add_modifier(
            hd,
            description.AnatomicRegionSequence[0],
            term.get("anatomicRegionModifier"),
            "AnatomicRegionModifierSequence",
        )
    return description


def _default_category(term: dict[str, Any]) -> tuple[str, str, str]:
    return ANATOMICAL_STRUCTURE if "type" in term else TISSUE


def _add_modifier(hd, item: Any, modifier: Sequence[str] | None, keyword: str) -> None:
    if modifier:
        setattr(item, keyword, [_code(hd, modifier)])


def _volume(hd, labelmap: sitk.Image, frame_of_reference_uid: str):
    """The label map as a highdicom Volume whose first axis is the slice axis (frames = slices)."""
    array = sitk.GetArrayFromImage(labelmap)  # (k, j, i)
    direction = np.array(labelmap.GetDirection(), dtype=float).reshape(3, 3)
    return hd.Volume.from_components(
        array,
        spacing=tuple(labelmap.GetSpacing())[::-1],
        coordinate_system="PATIENT",
        position=labelmap.GetOrigin(),
        direction=direction[:, ::-1],
        frame_of_reference_uid=frame_of_reference_uid,
    )


def _check_grid(labelmap: sitk.Image, source: Sequence[pydicom.Dataset], path: Path) -> None:
    size = labelmap.GetSize()
    rows, columns = int(source[0].Rows), int(source[0].Columns)
    if labelmap.GetDimension() != 3 or (size[0], size[1], size[2]) != (columns, rows, len(source)):
        raise SegDeepError(
            f"{path}: the label map ({size}) is not on the source series' grid "
            f"({columns}x{rows}x{len(source)}); segment the series itself"
        )


def _encode(labelmap: sitk.Image, table: LabelTable) -> tuple[sitk.Image, list[Label], bool]:
    """Label values -> segment numbers 1..N over the labels present (all if none is)."""
    array = sitk.GetArrayViewFromImage(labelmap)
    present = set(np.unique(array).tolist()) - {0}
    labels = [lab for lab in table.labels if lab.value in present] or list(table.labels)
    lookup = np.zeros(max([lab.value for lab in table.labels] + [int(array.max())]) + 1, np.uint16)
    for number, lab in enumerate(labels, start=1):
        lookup[lab.value] = number
    dtype = np.uint8 if len(labels) < 256 else np.uint16
    encoded = sitk.GetImageFromArray(lookup[np.asarray(array)].astype(dtype))
    encoded.CopyInformation(labelmap)
    return encoded, labels, bool(present)


def _segmentation(
    hd,
    encoded: sitk.Image,
    labels: list[Label],
    source: Sequence[pydicom.Dataset],
    algorithm: Algorithm,
    any_voxel: bool,
):
    from SegDeepLib.version import __version__

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SOURCE_WARNINGS, category=UserWarning)
        return hd.seg.Segmentation(
            source_images=list(source),
            pixel_array=_volume(hd, encoded, source[0].FrameOfReferenceUID),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[
                _segment(hd, n, lab, algorithm) for n, lab in enumerate(labels, 1)
            ],
            series_instance_uid=hd.UID(),
            series_number=SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="SegDeep",
            manufacturer_model_name="SegDeepLib",
            software_versions=__version__,
            device_serial_number="0",
            series_description=f"{algorithm.name} segmentation"[:64],
            content_label="SEGDEEP",
            content_description=f"{algorithm.name} {algorithm.version}"[:64],
            omit_empty_frames=any_voxel,
            # an empty (0008,0005) in the source means the default repertoire
            specific_character_set=source[0].get("SpecificCharacterSet") or None,
        )


def write_dicom_seg(
    labelmap: sitk.Image,
    path: str | os.PathLike,
    table: LabelTable,
    source: Sequence[pydicom.Dataset],
    algorithm: Algorithm,
    overwrite: bool = False,
) -> Path:
    """Write ``labelmap`` (on the grid of the series ``source``) as a BINARY DICOM SEG, atomically.

    One segment per label present in the label map (table order); an empty label map gives every
    table label as an empty segment.
    """
    hd = _highdicom()
    path = Path(path)
    if not source:
        raise SegDeepError(f"{path}: a DICOM SEG needs the source series' DICOM headers")
    unknown = sorted(
        set(np.unique(sitk.GetArrayViewFromImage(labelmap)).tolist()) - {0} - set(table.values)
    )
    if unknown:
        raise SegDeepError(f"{path}: label values {unknown} are not in label table {table.name!r}")
    _check_grid(labelmap, source, path)
    encoded, labels, any_voxel = _encode(labelmap, table)
    try:
        seg = _segmentation(hd, encoded, labels, source, algorithm, any_voxel)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:  # highdicom's checks
        raise SegDeepError(f"{path}: cannot make a DICOM SEG for this series ({exc})") from None
    with atomic_path(path, overwrite=overwrite) as tmp:
        seg.save_as(str(tmp))
    return path


def _label(description: Any) -> Label:
    import highdicom as hd

    def triple(item: Any) -> list[str]:
        return [str(item.CodingSchemeDesignator), str(item.CodeValue), str(item.CodeMeaning)]

    type_item = description.SegmentedPropertyTypeCodeSequence[0]
    term = {
        "category": triple(description.SegmentedPropertyCategoryCodeSequence[0]),
        "type": triple(type_item),
    }
    if "SegmentedPropertyTypeModifierCodeSequence" in type_item:
        term["typeModifier"] = triple(type_item.SegmentedPropertyTypeModifierCodeSequence[0])
    if "AnatomicRegionSequence" in description:
        region = description.AnatomicRegionSequence[0]
        term["anatomicRegion"] = triple(region)
        if "AnatomicRegionModifierSequence" in region:
            term["anatomicRegionModifier"] = triple(region.AnatomicRegionModifierSequence[0])
    color = (128, 128, 128)
    if "RecommendedDisplayCIELabValue" in description:
        lab = hd.color.CIELabColor.from_dicom_value(description.RecommendedDisplayCIELabValue)
        color = tuple(int(c) for c in lab.to_rgb(clip=True))
    return Label(int(description.SegmentNumber), str(description.SegmentLabel), color, term)


def _to_sitk(volume: Any) -> sitk.Image:
    """A highdicom Volume (array axes a0, a1, a2) as a SimpleITK image (x = a2, y = a1, z = a0)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array))
    direction = np.asarray(volume.direction, dtype=float)[:, ::-1]
    image.SetSpacing(tuple(float(s) for s in volume.spacing[::-1]))
    image.SetOrigin(tuple(float(p) for p in volume.position))
    image.SetDirection(tuple(direction.flatten()))
    return image


def read_dicom_seg(
    path: str | os.PathLike, reference: sitk.Image | None = None
) -> tuple[sitk.Image, LabelTable]:
    """Read a DICOM SEG (any writer) into one label map (value = segment number) and its table.

    With ``reference`` (the source series as read by :func:`read_image`), the label map is put on
    that grid (frames land on their own slices; slices without a frame are background); without,
    it spans the SEG's own frames. Overlapping segments raise an error.
    """
    hd = _highdicom()
    path = Path(path)
    if not path.exists():
        raise SegDeepError(f"{path}: no such file")
    try:
        seg = hd.seg.segread(str(path))
        volume = seg.get_volume(combine_segments=True, dtype=np.uint16)
    except Exception as exc:  # pydicom/highdicom raise many types for bad or unsupported files
        raise SegDeepError(f"{path}: not a readable DICOM segmentation volume ({exc})") from None
    labels = tuple(_label(d) for d in seg.SegmentSequence)
    image = _to_sitk(volume)
    if reference is not None:
        image = sitk.Resample(
            image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, image.GetPixelID()
        )
    if max((lab.value for lab in labels), default=0) < 256:
        image = sitk.Cast(image, sitk.sitkUInt8)
    return image, LabelTable(labels, path.name)
