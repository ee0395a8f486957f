"""The canonical network layout is an exact inverse and points the axes to L, P, S."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk

from SegDeepLib.io import from_canonical, same_grid, to_canonical
from Testing.SegDeepLib.io.test_image import oblique_direction, synthetic


def _signed_permutations():
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            matrix = np.zeros((3, 3))
            for col, row in enumerate(perm):
                matrix[row, col] = signs[col]
            yield tuple(matrix.flatten())


@pytest.mark.parametrize("direction", list(_signed_permutations()) + [oblique_direction(), oblique_direction((0.6, 0.1, -0.4), (-1, 1, -1))])
def test_exact_inverse(direction) -> None:
    image = synthetic(direction)
    array, layout = to_canonical(image, dtype=None)
    back = from_canonical(array, layout)
    assert same_grid(back, image, tol=0)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))
    # probabilities with a channel axis go back the same way
    stacked = np.stack([array, -array])
    np.testing.assert_array_equal(layout.from_array(stacked)[1], -sitk.GetArrayViewFromImage(image))


@pytest.mark.parametrize("direction", list(_signed_permutations()))
def test_axes_point_left_posterior_superior(direction) -> None:
    image = synthetic(direction)
    unique = sitk.GetImageFromArray(np.arange(7 * 9 * 11, dtype=np.int32).reshape(7, 9, 11))
    unique.CopyInformation(image)
    image = unique
    array, layout = to_canonical(image, dtype=None)
    # voxel [0,0,0] and one step along each canonical axis, located in world space
    voxels = sitk.GetArrayViewFromImage(image)
    size = np.array(array.shape)
    for axis, world in zip((2, 1, 0), (0, 1, 2)):  # X->L, Y->P, Z->S
        index = [0, 0, 0]
        index[axis] = 1
        value_a, value_b = array[0, 0, 0], array[tuple(index)]
        pa = _world_of_value(image, voxels, value_a)
        pb = _world_of_value(image, voxels, value_b)
        assert pb[world] - pa[world] > 0, (direction, axis)
    assert tuple(size) == tuple(image.GetSize()[i] for i in _size_order(direction))


def _world_of_value(image, voxels, value):
    k, j, i = np.argwhere(voxels == value)[0]
    return np.array(image.TransformIndexToPhysicalPoint((int(i), int(j), int(k))))


def _size_order(direction):
    matrix = np.array(direction).reshape(3, 3)
    return [int(np.argmax(np.abs(matrix[world]))) for world in (2, 1, 0)]


def test_spacing_in_array_order() -> None:
    image = synthetic((0, 0, 1, 1, 0, 0, 0, 1, 0), spacing=(0.5, 1.0, 4.0))
    _, layout = to_canonical(image)
    # direction columns: i -> P (y), j -> S (z), k -> L (x)
    assert layout.spacing_zyx == (1.0, 0.5, 4.0)


def test_shape_mismatch_is_refused() -> None:
    array, layout = to_canonical(synthetic())
    with pytest.raises(ValueError, match="does not match"):
        from_canonical(array[:-1], layout)


def test_array_owns_its_memory() -> None:
    image = synthetic((1, 0, 0, 0, 1, 0, 0, 0, 1))
    array, _ = to_canonical(image, dtype=None)
    assert array.flags.owndata and array.flags.c_contiguous
    expected = sitk.GetArrayFromImage(image)
    del image  # the array must not dangle into the freed image buffer
    np.testing.assert_array_equal(array, expected)


def _oblique_with_a_contested_axis() -> np.ndarray:
    """Voxel axes j and k both lie nearest to world P (0.728 and 0.682): the stronger (j) gets
    P, k takes its next nearest, L; i is nearest to S but points away from it."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("zyx", [52.0, 38.0, -60.0], degrees=True).as_matrix()


def test_contested_oblique_axes_get_the_best_assignment() -> None:
    matrix = _oblique_with_a_contested_axis()
    image = synthetic(tuple(matrix.flatten()))
    array, layout = to_canonical(image, dtype=None)
    # independent: the voxel-axis -> world-axis assignment with the largest total |cosine|
    best = max(itertools.permutations(range(3)),
               key=lambda w: sum(abs(matrix[w[v], v]) for v in range(3)))
    assert best == (2, 1, 0)
    voxel_of_world = [best.index(world) for world in (2, 1, 0)]  # canonical Z, Y, X
    assert layout.permutation == tuple(2 - v for v in voxel_of_world)
    assert layout.flips == tuple(bool(matrix[w, v] < 0) for w, v in zip((2, 1, 0), voxel_of_world))
    assert layout.flips == (True, False, False)
    back = from_canonical(array, layout)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))


@pytest.mark.parametrize("direction", [(0, 0, 1, 1, 0, 0, 0, 1, 0), (-1, 0, 0, 0, 0, 1, 0, -1, 0)])
def test_canonical_array_is_c_contiguous_and_of_the_asked_dtype(direction) -> None:
    image = sitk.Cast(synthetic(direction), sitk.sitkInt16)
    as_float, _ = to_canonical(image)
    assert as_float.dtype == np.float32 and as_float.flags.c_contiguous
    native, _ = to_canonical(image, dtype=None)
    assert native.dtype == np.int16 and native.flags.c_contiguous and native.flags.owndata
    double, _ = to_canonical(image, dtype=np.float64)
    assert double.dtype == np.float64
    np.testing.assert_array_equal(as_float, native.astype(np.float32))


def test_layout_keeps_a_one_voxel_geometry_holder() -> None:
    image = synthetic((0, 0, 1, 1, 0, 0, 0, 1, 0), spacing=(0.5, 1.0, 4.0))
    _, layout = to_canonical(image)
    assert layout.reference.GetSize() == (1, 1, 1)
    assert layout.reference.GetMetaData("segdeep_size") == " ".join(map(str, image.GetSize()))
    assert layout.reference.GetSpacing() == image.GetSpacing()


def test_same_grid_tolerance_is_absolute_and_one_micron_by_default() -> None:
    a = synthetic()
    a.SetOrigin((1000.0, -1000.0, 10.0))
    for setter, getter in ((a.SetOrigin, a.GetOrigin), (a.SetSpacing, a.GetSpacing)):
        b = sitk.Image(a)
        base = np.array(getter())
        for delta, same in ((5e-7, True), (5e-6, False), (1e-3, False)):
            b.CopyInformation(a)
            setters = {a.SetOrigin: b.SetOrigin, a.SetSpacing: b.SetSpacing}
            setters[setter](tuple(base + np.array([delta, 0.0, 0.0])))
            assert same_grid(a, b) is same, (getter.__name__, delta)
        b.CopyInformation(a)
        assert same_grid(a, b, tol=0)
    b = sitk.Image(a)
    b.SetDirection(tuple(np.array(a.GetDirection()) + np.array([0, 1e-5, 0, 0, 0, 0, 0, 0, 0])))
    assert not same_grid(a, b) and same_grid(a, b, tol=1e-4)
    assert not same_grid(a, sitk.Image([3, 3, 3], sitk.sitkFloat32))
