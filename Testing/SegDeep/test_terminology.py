"""Label-table terminology -> Slicer TerminologyEntry strings, checked against slicerio's parser."""

from __future__ import annotations

import pytest


@pytest.fixture
def terminology(helpers_path):
    from SegDeepHelpers import terminology

    return terminology


def test_hand_computed_liver_entry(terminology):
    entry = terminology.terminologyString({"category": ["SCT", "123037004", "Anatomical Structure"],
                                           "type": ["SCT", "10200004", "Liver"]})
    assert entry == ("Segmentation category and type - 3D Slicer General Anatomy list"
                     "~SCT^123037004^Anatomical Structure~SCT^10200004^Liver~^^~~^^~^^")


def test_region_and_modifier_get_the_anatomic_context(terminology):
    entry = terminology.terminologyString({
        "category": ["SCT", "49755003", "Morphologically Altered Structure"],
        "type": ["SCT", "4147007", "Mass"], "anatomicRegion": ["SCT", "23451007", "Adrenal gland"],
        "anatomicRegionModifier": ["SCT", "24028007", "Right"]})
    assert entry.split("~")[4:] == ["Anatomic codes - DICOM master list",
                                    "SCT^23451007^Adrenal gland", "SCT^24028007^Right"]


def test_every_shipped_label_round_trips_through_slicerio(terminology):
    """Independent parser: slicerio.segmentation.terminology_entry_from_string."""
    from slicerio.segmentation import terminology_entry_from_string

    from SegDeepLib.io.labels import LABELS_DIR, load_label_table, slicer_terminology

    checked = 0
    for path in sorted(LABELS_DIR.glob("*.json")):
        for label in load_label_table(path).labels:
            term = slicer_terminology(label)
            entry = terminology.terminologyString(term)
            if not term:
                assert entry == ""
                continue
            parsed = terminology_entry_from_string(entry)
            for key in ("category", "type", "typeModifier", "anatomicRegion", "anatomicRegionModifier"):
                assert parsed.get(key) == (list(term[key]) if key in term else None), (label.name, key)
            assert parsed["contextName"] == term["contextName"]
            checked += 1
    assert checked >= 10


def test_no_terminology_and_bad_codes(terminology):
    assert terminology.terminologyString({}) == ""
    assert terminology.terminologyString({"category": ["SCT", "1", "x"]}) == ""
    with pytest.raises(ValueError, match="scheme, code, meaning"):
        terminology.terminologyString({"category": ["SCT", "1"], "type": ["SCT", "2", "y"]})
