"""Label tables are data: every shipped table loads, is consistent, and carries SNOMED codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from SegDeepLib.errors import SegDeepError
from SegDeepLib.io.labels import LABELS_DIR, LabelTable, load_label_table

SHIPPED = sorted(p.stem for p in LABELS_DIR.glob("*.json"))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_tables_are_valid(name: str) -> None:
    table = load_label_table(name)
    assert table.values == list(range(1, len(table.labels) + 1))
    for label in table.labels:
        assert all(0 <= c <= 255 for c in label.color)
        assert label.terminology["type"][0] == "SCT" and label.terminology["type"][1].isdigit()


def test_model_tables_agree_with_organs() -> None:
    organs = {lab.name: lab for lab in load_label_table("organs").labels}
    for name in SHIPPED:
        for label in load_label_table(name).labels:
            assert label.terminology == organs[label.name].terminology
            assert label.color == organs[label.name].color


def test_from_names_and_subset() -> None:
    table = LabelTable.from_names(["spleen", "my_custom_thing"])
    assert table.values == [1, 2]
    assert table.by_name("spleen").terminology["type"][2] == "Spleen"
    assert table.by_name("my_custom_thing").terminology == {}
    assert load_label_table("abdomen").subset(["pancreas"]).values == [5]
    with pytest.raises(SegDeepError, match="unknown label 'lung'"):
        load_label_table("abdomen").by_name("lung")


def test_bad_tables(tmp_path: Path) -> None:
    with pytest.raises(SegDeepError, match="no such label table"):
        load_label_table("nonexistent")
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps({"labels": [{"value": 1, "name": "a"}, {"value": 1, "name": "b"}]}))
    with pytest.raises(SegDeepError, match="duplicate"):
        load_label_table(dup)
    zero = tmp_path / "zero.json"
    zero.write_text(json.dumps({"labels": [{"value": 0, "name": "background"}]}))
    with pytest.raises(SegDeepError, match=">= 1"):
        load_label_table(zero)
