"""Exact-geometry image I/O: synthetic round trips, real files, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError
from SegDeepLib.io import (
    check_finite,
    list_dicom_series,
    read_image,
    require_3d,
    same_grid,
    write_image,
)
from Testing.conftest import SHARED_DATA, shared_file


def oblique_direction(angles=(0.3, -0.2, 0.5), flip=(1, -1, 1)) -> tuple:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return tuple((rz @ ry @ rx @ np.diag(flip)).flatten())


def synthetic(direction=None, spacing=(0.7, 1.3, 3.1), dtype=np.int16) -> sitk.Image:
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.integers(-1000, 1500, size=(7, 9, 11)).astype(dtype))
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 40.25, 100.125))
    image.SetDirection(direction or oblique_direction())
    return image


def assert_identical(a: sitk.Image, b: sitk.Image, tol: float = 0.0) -> None:
    """Same voxels; geometry equal to ``tol`` (0 = bit for bit)."""
    assert a.GetSize() == b.GetSize()
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=tol, rtol=0)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=tol * 100, rtol=0)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=tol, rtol=0)


# What each format can hold: NRRD/MetaImage store spacing*direction as decimal text (a last-bit
# rounding on oblique grids), NIfTI stores float32 header fields.
FORMAT_TOLERANCE = {".nrrd": 1e-12, ".mha": 1e-12, ".nii.gz": 1e-6, ".nii": 1e-6}


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii.gz", ".nii"])
@pytest.mark.parametrize("direction", [None, (1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, 1, 0, 0, 0, -1),
                                       (0, 0, 1, 1, 0, 0, 0, 1, 0)], ids=["oblique", "identity", "flipped", "permuted"])
def test_round_trip_geometry(tmp_path: Path, suffix: str, direction) -> None:
    image = synthetic(direction)
    path = write_image(image, tmp_path / f"img{suffix}")
    back = read_image(path)
    assert_identical(image, back, tol=FORMAT_TOLERANCE[suffix])


def test_axis_aligned_nrrd_geometry_is_bit_exact(tmp_path: Path) -> None:
    image = synthetic((-1, 0, 0, 0, -1, 0, 0, 0, 1), spacing=(0.75, 0.75, 2.5))
    back = read_image(write_image(image, tmp_path / "x.nrrd"))
    assert back.GetDirection() == image.GetDirection()
    assert back.GetOrigin() == image.GetOrigin()
    assert back.GetSpacing() == image.GetSpacing()


REAL_VOLUMES = [
    "totalsegmentator-testfiles/ct_abdomen_pelvis_3mm/example_ct.nii.gz",
    "totalsegmentator-testfiles/ct_abdomen_pelvis_3mm/example_seg_fast_force_split.nii.gz",
    "totalsegmentator-testfiles/mr_abdomen_3mm/example_mr_sm.nii.gz",
    "totalsegmentator-v2-dataset/labelsTr/totalseg_s0009.nii.gz",
    "dcmqi-ct-3slice/liver_seg.nrrd",
    "dcmqi-ct-3slice/ct-3slice",
    "prostatex-dicom-mr",
]


@pytest.mark.realdata
@pytest.mark.parametrize("relative", REAL_VOLUMES)
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_real_volumes_round_trip(tmp_path: Path, relative: str, suffix: str) -> None:
    source = shared_file(relative)
    if source.is_dir() and not list_dicom_series(source):
        source = next(p for p in source.rglob("*") if p.is_dir() and list_dicom_series(p))
    image = read_image(source)
    back = read_image(write_image(image, tmp_path / f"out{suffix}"))
    assert back.GetPixelID() == image.GetPixelID()
    # Written back in its own format: bit for bit. Into another format: what that format holds
    # (DICOM spacings such as 0.8105469942 are written by ITK's NRRD writer with 6 digits).
    same_format = source.name.endswith(suffix)
    assert_identical(image, back, tol=0.0 if same_format else 1e-6)


@pytest.mark.realdata
def test_dicom_series_geometry_matches_headers() -> None:
    folder = shared_file("dcmqi-ct-3slice/ct-3slice")
    series = list_dicom_series(folder)
    assert len(series) == 1
    image = read_image(folder)
    assert image.GetSize()[2] == 3
    reference = read_image(shared_file("dcmqi-ct-3slice/liver_seg.nrrd"))
    assert same_grid(image, reference, tol=1e-3)


def test_folder_with_several_series_asks_for_uid(tmp_path: Path) -> None:
    for index, uid in enumerate(("1.2.826.0.1.3680043.2.1125.1", "1.2.826.0.1.3680043.2.1125.2")):
        image = sitk.Cast(synthetic((1, 0, 0, 0, 1, 0, 0, 0, 1)), sitk.sitkInt16)
        for k in range(image.GetSize()[2]):
            sl = image[:, :, k]
            sl.SetMetaData("0020|000e", uid)
            sl.SetMetaData("0020|0013", str(k))
            sl.SetMetaData("0020|0032", "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
            sl.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
            sl.SetMetaData("0008|0060", "CT")
            sl.SetMetaData("0008|0018", f"{uid}.{k + 1}")
            writer = sitk.ImageFileWriter()
            writer.KeepOriginalImageUIDOn()
            writer.SetFileName(str(tmp_path / f"s{index}_{k}.dcm"))
            writer.Execute(sl)
    series = list_dicom_series(tmp_path)
    assert len(series) == 2
    with pytest.raises(SegDeepError, match="2 DICOM series"):
        read_image(tmp_path)
    image = read_image(tmp_path, series_uid="1.2.826.0.1.3680043.2.1125.2")
    assert image.GetSize() == (11, 9, 7)
    with pytest.raises(SegDeepError, match="no DICOM series 9.9"):
        read_image(tmp_path, series_uid="9.9")


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(SegDeepError, match="no such file"):
        read_image(tmp_path / "missing.nii.gz")
    junk = tmp_path / "notes.nii.gz"
    junk.write_text("this is not an image")
    with pytest.raises(SegDeepError, match="notes.nii.gz: not a readable image"):
        read_image(junk)
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(SegDeepError, match="no DICOM series"):
        read_image(empty)


def test_require_3d_and_finite() -> None:
    with pytest.raises(SegDeepError, match="3D volume is needed, this image is 2D"):
        require_3d(sitk.Image(4, 4, sitk.sitkFloat32), "slice.png")
    with pytest.raises(SegDeepError, match="4D"):
        require_3d(sitk.Image([4, 4, 4, 2], sitk.sitkFloat32), "movie.nii")
    squeezed = require_3d(sitk.Image([4, 5, 6, 1], sitk.sitkFloat32))
    assert squeezed.GetSize() == (4, 5, 6)
    with pytest.raises(SegDeepError, match="components"):
        require_3d(sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 3))
    array = np.zeros((3, 3, 3), np.float32)
    array[1, 1, 1] = np.nan
    array[0, 0, 0] = np.inf
    with pytest.raises(SegDeepError, match="2 voxels are NaN or infinite"):
        check_finite(sitk.GetImageFromArray(array), "ct.nii")
    check_finite(sitk.GetImageFromArray(np.zeros((2, 2, 2), np.int16)))


def test_write_never_overwrites_unless_asked(tmp_path: Path) -> None:
    target = tmp_path / "out.nrrd"
    target.write_text("precious")
    with pytest.raises(SegDeepError, match="already exists"):
        write_image(synthetic(), target)
    assert target.read_text() == "precious"
    write_image(synthetic(), target, overwrite=True)
    assert read_image(target).GetSize() == (11, 9, 7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nrrd"]  # no temp files left
    with pytest.raises(SegDeepError, match="unsupported output format"):
        write_image(synthetic(), tmp_path / "out.png")


def test_shared_data_location_is_outside_repo() -> None:
    repo = Path(__file__).resolve().parents[3]
    assert repo not in SHARED_DATA.resolve().parents
