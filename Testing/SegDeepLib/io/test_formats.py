"""`io` owns every format: one suffix table, atomic probability maps, no import circle inside io."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import SegDeepLib.io as io_package
from SegDeepLib.errors import SegDeepError
from SegDeepLib.io import (
    LabelTable,
    read_image,
    read_label_map,
    read_probabilities,
    read_segmentation,
    write_probabilities,
    write_segmentation,
)
from SegDeepLib.io.suffixes import format_of


def _grid() -> sitk.Image:
    image = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.int16))
    image.SetSpacing((0.5, 0.7, 2.0))
    image.SetOrigin((1.0, 2.0, 3.0))
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    return image


def test_suffix_table() -> None:
    assert format_of("a/B.SEG.NRRD").holds == "segmentation"
    assert format_of("x.nrrd").holds == "image"
    assert format_of("x.nii.gz").suffix == ".nii.gz"
    assert format_of("p.npy").holds == "probabilities"
    assert format_of("x.png") is None


@pytest.mark.parametrize("suffix", [".npy", ".nrrd", ".nii.gz"])
def test_probabilities_round_trip_atomically(tmp_path: Path, suffix: str) -> None:
    grid = _grid()
    probs = np.random.default_rng(0).random((3, 3, 4, 5)).astype(np.float32)
    path = write_probabilities(probs, grid, tmp_path / f"p{suffix}")
    np.testing.assert_array_equal(read_probabilities(path, grid), probs)
    assert [p.name for p in tmp_path.iterdir()] == [f"p{suffix}"]
    with pytest.raises(SegDeepError, match="already exists"):
        write_probabilities(probs, grid, path)
    with pytest.raises(SegDeepError, match="unsupported probabilities format"):
        write_probabilities(probs, grid, tmp_path / "p.txt")


def test_probabilities_refused_with_the_file_named(tmp_path: Path) -> None:
    grid = _grid()
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(SegDeepError, match=r"s\.npy: holds"):
        read_probabilities(tmp_path / "s.npy", grid)
    (tmp_path / "t.npy").write_text("1 2 3")
    with pytest.raises(SegDeepError, match=r"t\.npy: not a readable \.npy"):
        read_probabilities(tmp_path / "t.npy", grid)


def test_seg_nrrd_through_the_table(tmp_path: Path) -> None:
    labels = sitk.GetImageFromArray((np.arange(60).reshape(3, 4, 5) % 3).astype(np.uint8))
    labels.CopyInformation(_grid())
    table = LabelTable.from_names(["liver", "spleen"])
    path = write_segmentation(labels, tmp_path / "s.seg.nrrd", table)
    image = read_image(path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(read_segmentation(path)[0]))
    other = LabelTable.from_names(["spleen", "liver"])
    renumbered, used = read_label_map(path, other)
    assert used is other
    array = sitk.GetArrayFromImage(renumbered)
    original = sitk.GetArrayFromImage(labels)
    assert (array[original == 1] == other.by_name("liver").value).all()


def test_no_module_of_io_imports_a_later_one() -> None:
    """Layers: suffixes/atomic/integrity <- image <- segmentation <- formats (and no lazy imports back)."""
    order = ["errors", "suffixes", "atomic", "integrity", "labels", "layout", "image", "segmentation",
             "formats"]
    folder = Path(io_package.__file__).parent
    for name in order[1:]:
        tree = ast.parse((folder / f"{name}.py").read_text())
        imported = {
            node.module.rsplit(".", 1)[-1]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("SegDeepLib.io.")
        }
        later = imported & set(order[order.index(name):])
        assert not later, f"io/{name}.py imports {later}"
