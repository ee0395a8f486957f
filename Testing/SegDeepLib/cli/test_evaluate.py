"""``segdeep evaluate`` end to end: the real TotalSegmentator label map against itself and against a
copy shifted by one voxel (values checked against cKDTree on physical points), folders, errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import cKDTree

from SegDeepLib.cli.main import main
from SegDeepLib.io import LabelTable, write_segmentation
from Testing.conftest import shared_file

TS_SEG = "totalsegmentator-testfiles/ct_abdomen_pelvis_3mm/example_seg_fast_force_split.nii.gz"
DISTANCES = ("asd", "msd", "hd95", "avd")


def _read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _physical(image: sitk.Image, mask: np.ndarray) -> np.ndarray:
    """Physical coordinates (mm) of the True voxels: origin + D @ (index * spacing)."""
    index_xyz = np.argwhere(mask)[:, ::-1].astype(float)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.asarray(image.GetOrigin()) + (index_xyz * image.GetSpacing()) @ direction.T


def _independent(image: sitk.Image, pred: np.ndarray, ref: np.ndarray, tol: float) -> dict[str, float]:
    """Reference values: scipy erosion surfaces, cKDTree nearest neighbours in physical space."""
    cross = ndimage.generate_binary_structure(3, 1)
    surf = [m & ~ndimage.binary_erosion(m, cross, border_value=0) for m in (pred, ref)]
    sp, sr = _physical(image, surf[0]), _physical(image, surf[1])
    d_pr, d_rp = cKDTree(sr).query(sp)[0], cKDTree(sp).query(sr)[0]
    vp, vr = _physical(image, pred), _physical(image, ref)
    both = np.concatenate([d_pr, d_rp])
    tp = np.count_nonzero(pred & ref)
    return {
        "dsc": 2 * tp / (pred.sum() + ref.sum()),
        "jaccard": tp / np.count_nonzero(pred | ref),
        "precision": tp / pred.sum(),
        "recall": tp / ref.sum(),
        "rvd": (pred.sum() - ref.sum()) / ref.sum(),
        "asd": both.mean(),
        "msd": both.max(),
        "hd95": max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)),
        "nsd": np.mean(both <= tol),
        "avd": max(cKDTree(vr).query(vp)[0].mean(), cKDTree(vp).query(vr)[0].mean()),
    }


@pytest.mark.realdata
def test_real_label_map_against_itself_is_perfect(tmp_path, capsys):
    seg = shared_file(TS_SEG)
    out = tmp_path / "self"
    assert main(["evaluate", str(seg), str(seg), "--output-dir", str(out)]) == 0
    rows = _read_csv(out / "per_case.csv")
    present = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(seg))))
    assert sorted(int(r["label"]) for r in rows) == sorted(int(v) for v in present if v)
    for row in rows:
        assert float(row["dsc"]) == 1.0 and float(row["nsd"]) == 1.0
        assert all(float(row[m]) == 0.0 for m in DISTANCES)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["dsc"]["min"] == 1.0 and summary["overall"]["msd"]["max"] == 0.0
    assert "DSC" in capsys.readouterr().out


@pytest.mark.realdata
def test_real_label_map_shifted_by_one_voxel_matches_independent_computation(tmp_path):
    seg_path = shared_file(TS_SEG)
    image = sitk.ReadImage(str(seg_path))
    ref = sitk.GetArrayFromImage(image)
    shifted = np.zeros_like(ref)
    shifted[:, 1:, :] = ref[:, :-1, :]  # one voxel along the image's j axis
    shifted_image = sitk.GetImageFromArray(shifted)
    shifted_image.CopyInformation(image)
    pred_path = tmp_path / "shifted.nii.gz"
    sitk.WriteImage(shifted_image, str(pred_path))
    out = tmp_path / "eval"
    labels = [1, 5, 18, 21, 110]  # spleen, liver, and others down to 68 voxels
    argv = ["evaluate", str(pred_path), str(seg_path), "--labels", ",".join(map(str, labels)),
            "--tolerance-mm", "2", "--output-dir", str(out)]
    assert main(argv) == 0
    rows = {int(r["label"]): r for r in _read_csv(out / "per_case.csv")}
    assert sorted(rows) == labels
    for value in labels:
        expected = _independent(image, shifted == value, ref == value, 2.0)
        for metric, number in expected.items():
            assert float(rows[value][metric]) == pytest.approx(number, rel=1e-6, abs=1e-9), (value, metric)
    # a one-voxel shift of a 3 mm grid: the surfaces are at most 3 mm apart
    assert all(float(r["msd"]) == pytest.approx(3.0) for r in rows.values() if float(r["dsc"]) < 1)


@pytest.mark.realdata
def test_label_names_through_a_label_table(tmp_path):
    seg = shared_file(TS_SEG)
    class_map = json.loads(shared_file("totalsegmentator-testfiles/class_map_total.json").read_text())
    table = {"name": "total", "labels": [{"value": int(k), "name": v, "color": [200, 100, 50]}
                                         for k, v in class_map.items()]}
    table_path = tmp_path / "total.json"
    table_path.write_text(json.dumps(table))
    out = tmp_path / "named"
    argv = ["evaluate", str(seg), str(seg), "--label-table", str(table_path),
            "--labels", "liver,spleen,urinary_bladder", "--output-dir", str(out)]
    assert main(argv) == 0
    rows = _read_csv(out / "per_case.csv")
    assert [(r["label"], r["name"]) for r in rows] == [("5", "liver"), ("1", "spleen"),
                                                      ("21", "urinary_bladder")]
    assert set(json.loads((out / "summary.json").read_text())["per_class"]) == {
        "liver", "spleen", "urinary_bladder"}


def _write(path, array, spacing=(1.0, 1.0, 2.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return image


def _cube(offset=0, value=1, shape=(8, 10, 10)):
    array = np.zeros(shape, np.uint8)
    array[2:6, 3 + offset:7 + offset, 3:7] = value
    return array


def test_folders_matched_by_case_name_with_unmatched_reported(tmp_path, capsys):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    _write(pred / "a.nii.gz", _cube(0))
    _write(ref / "a.nrrd", _cube(0))
    _write(pred / "b.nii.gz", _cube(1))
    _write(ref / "b.nii.gz", _cube(0))
    _write(pred / "extra.nii.gz", _cube(0))
    _write(ref / "missing.nii.gz", _cube(0))
    out = tmp_path / "out"
    assert main(["evaluate", str(pred), str(ref), "--output-dir", str(out)]) == 0
    captured = capsys.readouterr()
    assert "extra" in captured.err and "missing" in captured.err
    rows = _read_csv(out / "per_case.csv")
    assert [r["case"] for r in rows] == ["a", "b"]
    assert float(rows[0]["dsc"]) == 1.0 and float(rows[1]["dsc"]) == pytest.approx(2 * 48 / 128)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unmatched_predictions"] == ["extra"]
    assert summary["unmatched_references"] == ["missing"]
    dsc = summary["per_class"]["1"]["dsc"]
    assert dsc["mean"] == pytest.approx((1 + 0.75) / 2) and dsc["n"] == 2
    assert dsc["median"] == pytest.approx(0.875) and dsc["min"] == pytest.approx(0.75)


def test_empty_prediction_is_reported_and_excluded(tmp_path, capsys):
    _write(tmp_path / "p.nii.gz", np.zeros((8, 10, 10), np.uint8))
    _write(tmp_path / "r.nii.gz", _cube(0))
    out = tmp_path / "out"
    assert main(["evaluate", str(tmp_path / "p.nii.gz"), str(tmp_path / "r.nii.gz"),
                 "--output-dir", str(out)]) == 0
    row = _read_csv(out / "per_case.csv")[0]
    assert (row["dsc"], row["msd"], row["precision"]) == ("0.0", "inf", "nan")
    msd = json.loads((out / "summary.json").read_text())["per_class"]["1"]["msd"]
    assert msd == {"n": 0, "n_excluded": 1, "mean": None, "std": None, "median": None,
                   "min": None, "max": None}
    assert "left out" in capsys.readouterr().out


def test_seg_nrrd_prediction_is_matched_by_segment_name(tmp_path):
    table = LabelTable.from_names(["liver", "spleen"])
    both = _cube(0, value=1)
    both[6:8, 0:2, 0:2] = 2
    image = _write(tmp_path / "ref.nii.gz", both)
    # the .seg.nrrd numbers its segments spleen=1, liver=2: evaluation must go by name
    swapped = np.where(both == 1, 2, np.where(both == 2, 1, 0)).astype(np.uint8)
    swapped_image = sitk.GetImageFromArray(swapped)
    swapped_image.CopyInformation(image)
    write_segmentation(swapped_image, tmp_path / "pred.seg.nrrd", LabelTable.from_names(["spleen", "liver"]))
    table_path = tmp_path / "t.json"
    table_path.write_text(json.dumps(table.to_dict()))
    out = tmp_path / "out"
    assert main(["evaluate", str(tmp_path / "pred.seg.nrrd"), str(tmp_path / "ref.nii.gz"),
                 "--label-table", str(table_path), "--output-dir", str(out)]) == 0
    rows = _read_csv(out / "per_case.csv")
    assert [(r["name"], float(r["dsc"])) for r in rows] == [("liver", 1.0), ("spleen", 1.0)]


def test_em_mode_on_2d_maps(tmp_path):
    ref = np.full((32, 32), 255, np.uint8)
    ref[:, 16] = 0  # one membrane: two cells
    pred = np.full((32, 32), 255, np.uint8)  # membrane missed: cells merged
    for name, array in (("r.png", ref), ("p.png", pred)):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / name))
    out = tmp_path / "out"
    assert main(["evaluate", str(tmp_path / "p.png"), str(tmp_path / "r.png"), "--em",
                 "--output-dir", str(out)]) == 0
    row = _read_csv(out / "per_case.csv")[0]
    assert float(row["v_rand_split"]) == pytest.approx(1.0)
    # cells of 16 and 15 columns merged into one segment: sum p^2 = (16^2 + 15^2) / 31^2, sum s^2 = 1
    assert float(row["v_rand_merge"]) == pytest.approx((16**2 + 15**2) / 31**2)
    assert float(row["v_info"]) == pytest.approx(0.0)


def test_em_mode_scores_each_slice_of_a_stack(tmp_path):
    ref = np.full((3, 20, 20), 1, np.uint8)
    ref[:, :, 10] = 0
    pred = ref.copy()
    pred[1, :, 10] = 1  # slice 1 merges the two cells
    for name, array in (("r.nrrd", ref), ("p.nrrd", pred)):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / name))
    out = tmp_path / "out"
    assert main(["evaluate", str(tmp_path / "p.nrrd"), str(tmp_path / "r.nrrd"), "--em",
                 "--output-dir", str(out)]) == 0
    rows = _read_csv(out / "per_case.csv")
    assert [r["case"] for r in rows] == ["r[0]", "r[1]", "r[2]"]  # two files: the case is named after the reference
    assert [float(r["v_rand"]) for r in rows][::2] == [1.0, 1.0]
    assert float(rows[1]["v_rand"]) < 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["per_class"]["cell interior"]["v_rand"]["n"] == 3


@pytest.mark.parametrize(
    "setup, message",
    [
        ("missing", "no such file"),
        ("grid", "not on the grid"),
        ("text", "not a readable image"),
        ("labels", "is a name; give --label-table"),
        ("exists", "already exists"),
        ("unknown", "not in the label table"),
        ("tolerance", "--tolerance-mm"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, setup, message):
    pred, ref = tmp_path / "p.nii.gz", tmp_path / "r.nii.gz"
    _write(ref, _cube(0))
    _write(pred, _cube(0))
    out = tmp_path / "out"
    extra: list[str] = []
    if setup == "missing":
        pred = tmp_path / "nope.nii.gz"
    elif setup == "grid":
        _write(pred, _cube(0), spacing=(1.0, 1.0, 3.0))
    elif setup == "text":
        pred = tmp_path / "p.nrrd"
        pred.write_text("not an image")
    elif setup == "labels":
        extra = ["--labels", "liver"]
    elif setup == "exists":
        out.mkdir()
        (out / "summary.json").write_text("{}")
    elif setup == "unknown":
        _write(pred, _cube(0, value=9))
        extra = ["--label-table", "abdomen"]
    elif setup == "tolerance":
        extra = ["--tolerance-mm", "0"]
    code = main(["evaluate", str(pred), str(ref), "--output-dir", str(out), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]
    if setup == "exists":
        assert (out / "summary.json").read_text() == "{}"  # nothing overwritten
