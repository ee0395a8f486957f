"""Exact geometry: an oblique IJK-to-RAS volume -> the NRRD handed to the subprocess -> back."""

from __future__ import annotations

import numpy as np
import pytest

from Testing.conftest import shared_file
from Testing.SegDeep.helpers import fake_python, oblique_ijk_to_ras, phantom_array


@pytest.fixture
def geometry(helpers_path):
    from SegDeepHelpers import geometry

    return geometry


def test_written_file_places_every_voxel_at_its_ras_position(geometry, tmp_path):
    """Independent check: SimpleITK's physical point (LPS) of voxel (i,j,k) equals the node's
    IJK-to-RAS applied to (i,j,k), with x and y negated."""
    import SimpleITK as sitk

    array, ijkToRAS = phantom_array(), oblique_ijk_to_ras()
    path = geometry.writeVolumeFile(array, ijkToRAS, tmp_path / "input.nrrd")
    image = sitk.ReadImage(str(path))
    assert "gzip" not in path.read_bytes()[:400].decode("latin-1")  # uncompressed (fast)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), array)
    for k, j, i in [(0, 0, 0), (8, 13, 16), (3, 7, 2), (5, 0, 11)]:
        ras = ijkToRAS @ np.array([i, j, k, 1.0])
        lps = image.TransformIndexToPhysicalPoint((i, j, k))
        np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-9)
        assert image.GetPixel(i, j, k) == array[k, j, i]


def test_matrix_round_trip_is_exact(geometry, tmp_path):
    import SimpleITK as sitk

    ijkToRAS = oblique_ijk_to_ras()
    path = geometry.writeVolumeFile(phantom_array(), ijkToRAS, tmp_path / "v.nrrd")
    np.testing.assert_allclose(geometry.ijkToRASFromImage(sitk.ReadImage(str(path))), ijkToRAS,
                               atol=1e-9)
    assert geometry.sameGrid((9, 14, 17), ijkToRAS, (9, 14, 17), ijkToRAS.copy())
    shifted = ijkToRAS.copy()
    shifted[0, 3] += 0.01
    assert not geometry.sameGrid((9, 14, 17), ijkToRAS, (9, 14, 17), shifted)
    assert not geometry.sameGrid((9, 14, 17), ijkToRAS, (9, 17, 14), ijkToRAS)


def test_bad_matrix_is_refused(geometry):
    with pytest.raises(ValueError, match="zero-length"):
        geometry.imageFromArray(phantom_array(), np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="4x4"):
        geometry.imageFromArray(phantom_array(), np.eye(3))


def test_real_ct_geometry_survives_the_round_trip(geometry, tmp_path):
    """The shared TotalSegmentator CT: (array, IJK-to-RAS) -> file -> same array and matrix."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(shared_file(
        "totalsegmentator-testfiles/ct_abdomen_pelvis_3mm/example_ct.nii.gz")))
    array, ijkToRAS = sitk.GetArrayFromImage(image), geometry.ijkToRASFromImage(image)
    back = sitk.ReadImage(str(geometry.writeVolumeFile(array, ijkToRAS, tmp_path / "ct.nrrd")))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), array)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-9)
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-9)


def test_segmentation_lands_on_the_same_voxels(standin, tmp_path):
    """Whole path through the subprocess: the fake CLI labels voxels by intensity in the file it
    receives; the segments on the oblique input node must be exactly those voxels."""
    import SegDeep
    from Testing.SegDeep.fake_cli import THRESHOLDS

    array = phantom_array()
    volume = standin.slicer.util.addVolumeFromArray(array, oblique_ijk_to_ras(), "oblique")
    logic = SegDeep.SegDeepLogic(python=fake_python(tmp_path))
    result = logic.segment(volume, "fake-abdomen", device="cpu")
    segmentation = result.segmentationNode.GetSegmentation()
    for name, (low, high) in THRESHOLDS.items():
        segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(name))
        np.testing.assert_array_equal(segment._mask, (array >= low) & (array < high))
        np.testing.assert_allclose(segment._ijkToRAS, oblique_ijk_to_ras())
    corner = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("spleen"))._mask
    assert corner[0, 0, 0] == 1 and corner[-1, -1, -1] == 0  # orientation, not just counts
