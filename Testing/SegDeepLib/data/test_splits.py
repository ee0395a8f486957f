"""k-fold split files: partition, persistence, user edits, bad files."""

from __future__ import annotations

import json

import pytest

from SegDeepLib.data.splits import fold_cases, load_or_create_splits, make_splits
from SegDeepLib.errors import SegDeepError


@pytest.mark.parametrize("folds", [4, 5])
def test_every_case_validated_exactly_once(folds):
    ids = [f"c{i}" for i in range(13)]
    splits = make_splits(ids, folds, seed=1)
    assert len(splits) == folds
    vals = [c for fold in splits for c in fold["val"]]
    assert sorted(vals) == sorted(ids)
    for fold in splits:
        assert not set(fold["train"]) & set(fold["val"])
        assert sorted(fold["train"] + fold["val"]) == sorted(ids)
    sizes = [len(f["val"]) for f in splits]
    assert max(sizes) - min(sizes) <= 1


def test_file_persisted_and_user_edits_respected(tmp_path):
    path = tmp_path / "splits.json"
    ids = ["a", "b", "c", "d"]
    first = load_or_create_splits(path, ids, folds=2, seed=0)
    assert json.loads(path.read_text()) == first
    edited = [{"train": ["a", "b", "c"], "val": ["d"]}, {"train": ["d"], "val": ["a", "b", "c"]}]
    path.write_text(json.dumps(edited))
    assert load_or_create_splits(path, ids, folds=5, seed=9) == edited
    assert fold_cases(edited, 0, ids) == (["a", "b", "c"], ["d"])
    assert fold_cases(edited, -1, ids) == (ids, [])


def test_bad_split_files(tmp_path):
    path = tmp_path / "splits.json"
    path.write_text(json.dumps([{"train": ["zz"], "val": ["a"]}]))
    with pytest.raises(SegDeepError, match="unknown cases"):
        load_or_create_splits(path, ["a"], 2)
    path.write_text("{")
    with pytest.raises(SegDeepError, match="not valid JSON"):
        load_or_create_splits(path, ["a"], 2)
    with pytest.raises(SegDeepError, match="2 folds"):
        fold_cases(make_splits(["a", "b"], 2), 3, ["a", "b"])
