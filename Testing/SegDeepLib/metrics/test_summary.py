"""Statistics with non-finite values, CSV/JSON writing, case matching."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from SegDeepLib.errors import SegDeepError
from SegDeepLib.metrics.cases import case_name, match_cases
from SegDeepLib.metrics.summary import describe, rows_to_csv, summarize, to_json, write_text


def test_describe_leaves_out_and_counts_non_finite_values():
    stats = describe([1.0, 3.0, math.inf, math.nan, 2.0, 6.0])
    finite = np.array([1.0, 3.0, 2.0, 6.0])
    assert stats["n"] == 4 and stats["n_excluded"] == 2
    assert stats["mean"] == pytest.approx(finite.mean())
    assert stats["std"] == pytest.approx(finite.std())
    assert stats["median"] == pytest.approx(2.5)
    assert (stats["min"], stats["max"]) == (1.0, 6.0)
    assert describe([math.inf])["mean"] is None


def test_summarize_per_class_and_overall():
    rows = [
        {"case": "a", "label": 1, "name": "liver", "dsc": 0.8},
        {"case": "b", "label": 1, "name": "liver", "dsc": 0.6},
        {"case": "a", "label": 2, "name": "spleen", "dsc": 0.0},
    ]
    summary = summarize(rows, ["dsc"])
    assert summary["per_class"]["liver"]["dsc"]["mean"] == pytest.approx(0.7)
    assert summary["per_class"]["liver"]["cases"] == 2
    assert summary["per_class"]["spleen"]["label"] == 2
    assert summary["overall"]["dsc"]["mean"] == pytest.approx(1.4 / 3)


def test_csv_and_strict_json(tmp_path):
    rows = [{"case": "a", "dsc": 0.5, "msd": math.inf, "recall": math.nan}]
    text = rows_to_csv(rows, ["case", "dsc", "msd", "recall"])
    parsed = list(csv.DictReader(text.splitlines()))
    assert parsed == [{"case": "a", "dsc": "0.5", "msd": "inf", "recall": "nan"}]
    assert float(parsed[0]["msd"]) == math.inf
    data = json.loads(to_json({"x": math.inf, "y": [np.float64(1.5), math.nan]}))
    assert data == {"x": None, "y": [1.5, None]}
    path = write_text(tmp_path / "out" / "s.json", "{}")
    assert path.read_text() == "{}"
    with pytest.raises(SegDeepError, match="already exists"):
        write_text(path, "new")
    write_text(path, "new", overwrite=True)
    assert path.read_text() == "new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.json"]  # no temporary left behind


@pytest.mark.parametrize(
    "name, case",
    [("liver_003.nii.gz", "liver_003"), ("a.b.seg.nrrd", "a.b"), ("x.nrrd", "x"), ("x.mha", "x"),
     ("y.nii", "y"), ("notes.txt", None), (".nii.gz", None)],
)
def test_case_name(name, case):
    assert case_name(name) == case


def test_match_folders_reports_unmatched(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    for name in ("c1.nii.gz", "c2.nrrd", "only_pred.nii.gz", "readme.txt"):
        (pred / name).write_bytes(b"")
    for name in ("c1.nii.gz", "c2.nii.gz", "only_ref.mha"):
        (ref / name).write_bytes(b"")
    cases = match_cases(pred, ref)
    assert [(c, p.name, r.name) for c, p, r in cases.pairs] == [
        ("c1", "c1.nii.gz", "c1.nii.gz"), ("c2", "c2.nrrd", "c2.nii.gz")]
    assert cases.unmatched_predictions == ["only_pred"]
    assert cases.unmatched_references == ["only_ref"]


def test_match_errors(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.nii.gz").write_bytes(b"")
    (tmp_path / "b" / "y.nii.gz").write_bytes(b"")
    (tmp_path / "f.nii.gz").write_bytes(b"")
    with pytest.raises(SegDeepError, match="no case names in common"):
        match_cases(tmp_path / "a", tmp_path / "b")
    with pytest.raises(SegDeepError, match="two files or two folders"):
        match_cases(tmp_path / "a", tmp_path / "f.nii.gz")
    with pytest.raises(SegDeepError, match="no such file"):
        match_cases(tmp_path / "missing.nii.gz", tmp_path / "f.nii.gz")
    (tmp_path / "a" / "x.nrrd").write_bytes(b"")
    with pytest.raises(SegDeepError, match="two files for case 'x'"):
        match_cases(tmp_path / "a", tmp_path / "b")
