"""Slicer .seg.nrrd read/write with names, colours and terminology; plain label maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError
from SegDeepLib.io import (
    load_label_table,
    read_image,
    read_segmentation,
    same_grid,
    write_segmentation,
)
from Testing.conftest import shared_file
from Testing.SegDeepLib.io.test_image import synthetic


def labelmap(direction=None) -> sitk.Image:
    array = np.zeros((7, 9, 11), np.uint8)
    array[1:4, 2:5, 3:8] = 1
    array[4:6, 5:8, 1:3] = 3
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(synthetic(direction))
    return image


def test_seg_nrrd_round_trip_with_terminology(tmp_path: Path) -> None:
    table = load_label_table("abdomen")
    image = labelmap()
    path = write_segmentation(image, tmp_path / "out.seg.nrrd", table)
    back, back_table = read_segmentation(path)
    assert same_grid(back, image, tol=1e-12)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))
    assert back_table.names == table.names
    assert [lab.color for lab in back_table.labels] == [lab.color for lab in table.labels]
    kidney = back_table.by_name("kidney_right")
    assert kidney.terminology["type"] == ["SCT", "64033007", "Kidney"]
    assert kidney.terminology["typeModifier"] == ["SCT", "24028007", "Right"]


def test_seg_nrrd_header_is_what_slicer_reads(tmp_path: Path) -> None:
    import slicerio

    path = write_segmentation(labelmap(), tmp_path / "out.seg.nrrd", load_label_table("abdomen"))
    seg = slicerio.read_segmentation(str(path))
    liver = slicerio.segment_from_name(seg, "liver")
    assert liver["terminology"]["contextName"].startswith("Segmentation category and type")
    assert liver["terminology"]["category"] == ["SCT", "123037004", "Anatomical Structure"]
    header = path.read_bytes()[:4000].decode("latin-1")
    assert "Segment0_Name:=liver" in header
    assert "Segment0_Color:=" in header and "Segment0_LabelValue:=1" in header


def test_unknown_label_values_are_refused(tmp_path: Path) -> None:
    image = labelmap()
    with pytest.raises(SegDeepError, match=r"label values \[3\] are not in label table"):
        write_segmentation(image, tmp_path / "x.seg.nrrd", load_label_table("bladder"))
    assert not list(tmp_path.iterdir())


def test_plain_labelmap_output(tmp_path: Path) -> None:
    image = labelmap()
    path = write_segmentation(image, tmp_path / "x.nii.gz", load_label_table("abdomen"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(path)), sitk.GetArrayFromImage(image))


@pytest.mark.realdata
def test_real_labelmap_as_seg_nrrd(tmp_path: Path) -> None:
    source = read_image(shared_file("totalsegmentator-testfiles/ct_abdomen_pelvis_3mm/example_seg_fast_force_split.nii.gz"))
    array = sitk.GetArrayFromImage(source)
    mapped = np.zeros_like(array)
    for value, ts_value in enumerate((5, 1, 2, 3, 7, 21), start=1):  # abdomen table order
        mapped[array == ts_value] = value
    image = sitk.GetImageFromArray(mapped)
    image.CopyInformation(source)
    back, table = read_segmentation(write_segmentation(image, tmp_path / "ts.seg.nrrd", load_label_table("abdomen")))
    assert same_grid(back, source, tol=0)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), mapped)
    assert table.names == ["liver", "spleen", "kidney_right", "kidney_left", "pancreas", "urinary_bladder"]


def test_read_bad_segmentation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.seg.nrrd"
    bad.write_text("NRRD0004\nnonsense\n")
    with pytest.raises(SegDeepError, match="bad.seg.nrrd"):
        read_segmentation(bad)
