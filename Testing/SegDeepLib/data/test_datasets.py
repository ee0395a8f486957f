"""Datasets (MSD, nnU-Net raw, .seg.nrrd folder), label mapping by name, partial labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from SegDeepLib.data.datasets import load_dataset, read_case_image, read_case_label
from SegDeepLib.data.label_map import build_mapping
from SegDeepLib.errors import SegDeepError
from SegDeepLib.io import write_segmentation
from SegDeepLib.io.labels import LabelTable
from SegDeepLib.preprocessing import make_phantom
from Testing.conftest import shared_file
from Testing.SegDeepLib.training.helpers import make_msd_dataset


def test_msd_layout(tmp_path):
    root = make_msd_dataset(tmp_path, cases=2, labels_present={"case1": [1, 2]})
    ds = load_dataset(root)
    assert ds.format == "msd" and ds.case_ids == ["case0", "case1"]
    assert ds.labels[1] == "liver" and ds.channels == ["CT"]
    assert ds.case("case0").labels_present is None and ds.case("case1").labels_present == [1, 2]


def test_msd_per_entry_labels_present_by_name(tmp_path):
    root = make_msd_dataset(tmp_path, cases=2)
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"][0]["labels_present"] = ["spleen", "Liver"]
    (root / "dataset.json").write_text(json.dumps(meta))
    ds = load_dataset(root)
    assert ds.case("case0").labels_present == [1, 2] and ds.case("case1").labels_present is None
    mapping = build_mapping(ds, ["liver", "pancreas"])
    assert mapping.class_present(ds.case("case0")) == [True, True, False]


def test_nnunet_layout_multichannel(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    ct, lab = make_phantom((10, 16, 16), (5.0, 10.0, 10.0), seed=1)
    for case in ("la_001", "la_002"):
        for channel in range(2):
            sitk.WriteImage(ct, str(tmp_path / "imagesTr" / f"{case}_{channel:04d}.nii.gz"))
        sitk.WriteImage(lab, str(tmp_path / "labelsTr" / f"{case}.nii.gz"))
    meta = {"channel_names": {"0": "CT", "1": "CT2"}, "labels": {"background": 0, "liver": 1, "spleen": 2},
            "numTraining": 2, "file_ending": ".nii.gz"}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    ds = load_dataset(tmp_path)
    assert ds.format == "nnunet" and ds.case_ids == ["la_001", "la_002"]
    assert [p.name for p in ds.cases[0].images] == ["la_001_0000.nii.gz", "la_001_0001.nii.gz"]
    assert ds.labels == {0: "background", 1: "liver", 2: "spleen"}


def test_segnrrd_folder_maps_segments_by_name(tmp_path):
    ct, lab = make_phantom((10, 16, 16), (5.0, 10.0, 10.0), seed=2)
    arr = sitk.GetArrayFromImage(lab)
    for case, names in (("a", ["liver", "spleen"]), ("b", ["spleen"])):
        sitk.WriteImage(ct, str(tmp_path / f"{case}.nii.gz"))
        values = {"liver": 1, "spleen": 2}
        out = np.zeros_like(arr)
        for k, name in enumerate(names, start=1):
            out[arr == values[name]] = k  # segment order differs between the cases
        seg = sitk.GetImageFromArray(out)
        seg.CopyInformation(lab)
        write_segmentation(seg, tmp_path / f"{case}.seg.nrrd", LabelTable.from_names(names))
    ds = load_dataset(tmp_path)
    assert ds.format == "segnrrd" and ds.labels == {0: "background", 1: "liver", 2: "spleen"}
    assert ds.case("b").labels_present == [2]
    image = read_case_image(ds.case("b"))[0]
    got = sitk.GetArrayFromImage(read_case_label(ds, ds.case("b"), image))
    assert np.array_equal(got == 2, arr == 2) and not np.any(got == 1)


def test_label_mapping_by_name_and_errors(tmp_path):
    ds = load_dataset(make_msd_dataset(tmp_path, cases=1))
    mapping = build_mapping(ds, ["Spleen", "urinary bladder"])
    assert mapping.values == (2, 6) and mapping.num_classes == 3
    labels = np.array([0, 1, 2, 6, 5])
    assert mapping.apply(labels).tolist() == [0, 0, 1, 2, 0]
    with pytest.raises(SegDeepError, match="prostate.*available: liver"):
        build_mapping(ds, ["prostate"])
    assert build_mapping(ds, []).names[0] == "liver"


def test_missing_dataset_is_clear(tmp_path):
    with pytest.raises(SegDeepError, match="dataset folder not found"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(SegDeepError, match="not a dataset folder"):
        load_dataset(tmp_path)


def test_ircad_partial_labels_real():
    root = shared_file("ircadb01/dataset.json").parent
    ds = load_dataset(root)
    mapping = build_mapping(ds, ["liver", "spleen", "kidney_left"])
    present = {c.id: mapping.class_present(c) for c in ds.cases}
    assert present["ircadb01_01"] == [True, True, True, True]
    assert present["ircadb01_17"] == [True, True, False, False]  # 17 annotates no spleen/kidneys
