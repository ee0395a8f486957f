"""Independent checks of image files (truncation, NaN in NIfTI, DICOM gaps), outputs and memory."""

from __future__ import annotations

import os
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError
from SegDeepLib.io import read_image
from SegDeepLib.io.atomic import atomic_path, check_output_path
from SegDeepLib.io.integrity import check_complete, nifti_layout, read_series_with_gaps
from SegDeepLib.preprocessing.guard import check_memory, estimate_memory, memory_budget
from Testing.conftest import shared_file


def _volume(dtype=np.int16) -> sitk.Image:
    image = sitk.GetImageFromArray(np.arange(6 * 7 * 8, dtype=dtype).reshape(6, 7, 8))
    image.SetSpacing((0.8, 0.9, 2.5))
    return image


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_complete_nifti_passes_and_every_cut_is_refused(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"v{suffix}"
    sitk.WriteImage(_volume(), str(path))
    check_complete(path)
    data = path.read_bytes()
    for keep in (len(data) - 1, len(data) // 2, 400):
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(data[:keep])
        with pytest.raises(SegDeepError, match="truncated"):
            check_complete(cut)
        with pytest.raises(SegDeepError, match="cut"):
            read_image(cut)


def test_big_endian_and_nifti2_headers() -> None:
    header = bytearray(348)
    header[0:4] = struct.pack(">i", 348)
    header[40:56] = struct.pack(">8h", 3, 10, 20, 30, 1, 1, 1, 1)
    header[70:72] = struct.pack(">h", 16)
    header[72:74] = struct.pack(">h", 32)
    header[108:112] = struct.pack(">f", 352.0)
    offset, size, dtype = nifti_layout(bytes(header))
    assert (offset, size, dtype) == (352, 10 * 20 * 30 * 4, np.dtype(">f4"))
    header2 = bytearray(540)
    header2[0:4] = struct.pack("<i", 540)
    header2[12:14] = struct.pack("<h", 4)
    header2[14:16] = struct.pack("<h", 16)
    header2[16:80] = struct.pack("<8q", 3, 5, 6, 7, 1, 1, 1, 1)
    header2[168:176] = struct.pack("<q", 544)
    assert nifti_layout(bytes(header2)) == (544, 5 * 6 * 7 * 2, None)
    assert nifti_layout(b"not a header" * 50) is None


def test_nan_in_nifti_is_refused_though_itk_reads_zero(tmp_path: Path) -> None:
    array = np.zeros((4, 5, 6), np.float32)
    array[1, 2, 3] = np.nan
    path = tmp_path / "nan.nii"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    assert not np.isnan(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).any()  # ITK: silently 0
    with pytest.raises(SegDeepError, match="1 voxels are NaN"):
        read_image(path)


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_metaimage(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / "v.mha"
    sitk.WriteImage(_volume(np.float32), str(path), useCompression=compress)
    check_complete(path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(SegDeepError, match="truncated MetaImage"):
        check_complete(path)


def test_gaps_read_keeps_the_true_geometry(tmp_path: Path) -> None:
    source = shared_file("prostatex-dicom-mr/ProstateX-0000_t2_tse_tra")
    intact = read_image(source)
    folder = Path(shutil.copytree(source, tmp_path / "s"))
    folder.chmod(0o755)
    files = sorted(folder.iterdir())
    files[9].unlink()
    with pytest.raises(SegDeepError, match="missing slice"):
        read_image(folder)
    image = read_image(folder, allow_gaps=True)
    assert image.GetSize() == intact.GetSize()
    np.testing.assert_allclose(image.GetSpacing(), intact.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), intact.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(image.GetDirection(), intact.GetDirection(), atol=1e-9)
    a, b = sitk.GetArrayFromImage(intact), sitk.GetArrayFromImage(image)
    same = [bool((a[k] == b[k]).all()) for k in range(a.shape[0])]
    assert sum(same) == a.shape[0] - 1  # only the missing slice differs (interpolated)
    whole, notes = read_series_with_gaps(sorted(str(p) for p in Path(source).iterdir()))
    assert notes == [] and (sitk.GetArrayFromImage(whole) == a).all()


def test_output_checks(tmp_path: Path) -> None:
    source = tmp_path / "in.nii.gz"
    source.write_bytes(b"x")
    os.link(source, tmp_path / "hard.nii.gz")
    with pytest.raises(SegDeepError, match="is also an input"):
        check_output_path(tmp_path / "hard.nii.gz", True, (source,))
    with pytest.raises(SegDeepError, match="is a folder"):
        check_output_path(tmp_path, True)
    with pytest.raises(SegDeepError, match="does not exist"):
        check_output_path(tmp_path / "a" / "b.nii.gz", False)
    assert check_output_path(tmp_path / "new.nii.gz", False) == tmp_path / "new.nii.gz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.nii.gz", "in.nii.gz"]


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_follow_the_umask(tmp_path: Path, mask: int, mode: int) -> None:
    old = os.umask(mask)
    try:
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("data")
    finally:
        os.umask(old)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == mode


def test_memory_guard_refuses_in_well_under_5_s() -> None:
    image = sitk.Image([512, 512, 300], sitk.sitkInt16)
    image.SetSpacing((100.0, 100.0, 100.0))
    spec = {"spacing": [1.5, 1.5, 1.5]}
    estimate = estimate_memory(image.GetSize(), image.GetSpacing(), image.GetDirection(), [spec], 3)
    assert estimate.grid_zyx == (20000, 34133, 34133)
    assert estimate.bytes > 1e15
    start = time.perf_counter()
    with pytest.raises(SegDeepError, match=r"ct\.nii\.gz: needs about .* GB .*20000x34133x34133"):
        check_memory(image, [spec], 3, "ct.nii.gz", limit_gb=8)
    assert time.perf_counter() - start < 1.0
    assert check_memory(image, [None], 3, "ct.nii.gz", limit_gb=8).grid_zyx == (300, 512, 512)


def test_memory_budget_sources(monkeypatch) -> None:
    monkeypatch.setenv("SEGDEEP_MEMORY_LIMIT_GB", "3")
    assert memory_budget() == 3 * 1024**3
    assert memory_budget(1.5) == int(1.5 * 1024**3)
    monkeypatch.setenv("SEGDEEP_MEMORY_LIMIT_GB", "x")
    with pytest.raises(SegDeepError, match="SEGDEEP_MEMORY_LIMIT_GB"):
        memory_budget()
    monkeypatch.delenv("SEGDEEP_MEMORY_LIMIT_GB")
    assert memory_budget() > 0
