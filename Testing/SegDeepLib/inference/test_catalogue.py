"""The model catalogue: schema validation, consistency with the shipped folders, user models."""

from __future__ import annotations

import copy
import json

import pytest

from SegDeepLib.errors import SegDeepError
from SegDeepLib.inference.catalogue import (
    CATALOGUE_FILE,
    SCHEMA_FILE,
    build_catalogue,
    catalogue_entry,
    load_catalogue,
    rebuild_catalogue,
    resolve_model,
    schema_errors,
    validate,
)
from SegDeepLib.io.model_folder import sha256_file
from Testing.SegDeepLib.inference.tiny_nets import make_model_folder

NET = {"name": "test_centres", "centres": [0.0, 1.0, 2.0]}


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    folder = tmp_path / "user_models"
    folder.mkdir()
    monkeypatch.setenv("SEGDEEP_MODELS_DIR", str(folder))
    return folder


def test_schema_validator_reports_each_problem():
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema_errors({"format": "segdeep-catalogue/1", "models": []}, schema) == []
    errors = schema_errors({"format": "v0", "models": [{"id": "Bad Id"}], "extra": 1}, schema)
    text = " ".join(errors)
    assert "not one of" in text and "unknown key 'extra'" in text
    assert (
        "does not match" in text and "missing 'sha256'" not in text and "missing 'weights'" in text
    )
    small = {
        "type": "array",
        "items": {"type": "integer", "minimum": 0, "maximum": 255},
        "minItems": 3,
    }
    assert schema_errors([1, 2, 300], small) == ["$[2]: 300 > maximum 255"]
    assert schema_errors([1, True, 2], small) == ["$[1]: expected integer, got bool"]
    assert schema_errors([1], small) == ["$: needs at least 3 items"]


def test_entry_from_folder_validates_and_matches_the_weights(tmp_path):
    folder = make_model_folder(
        tmp_path / "tiny-model",
        {"main": NET},
        ["liver", "spleen"],
        metrics={"dice": {"liver": 0.5}},
        timing={"cpu_s": 3.0},
    )
    catalogue = build_catalogue(tmp_path, default_model="tiny-model")
    (entry,) = catalogue["models"]
    assert entry["weights"]["sha256"] == sha256_file(folder / "weights.pt")
    assert [o["name"] for o in entry["organs"]] == ["liver", "spleen"]
    assert entry["organs"][0]["terminology"]["type"][1] == "10200004"  # SNOMED liver
    assert entry["accuracy"] == {"dice": {"liver": 0.5}} and entry["timing"] == {"cpu_s": 3.0}
    broken = copy.deepcopy(catalogue)
    broken["models"][0]["weights"]["sha256"] = "xyz"
    with pytest.raises(SegDeepError, match="sha256"):
        validate(broken)
    broken = copy.deepcopy(catalogue)
    broken["models"].append(broken["models"][0])
    with pytest.raises(SegDeepError, match="duplicate"):
        validate(broken)


def test_shipped_catalogue_is_valid_and_matches_its_folders():
    assert CATALOGUE_FILE.exists(), f"the shipped catalogue is missing: {CATALOGUE_FILE}"
    catalogue = load_catalogue(include_user=False)
    assert catalogue["models"], "the shipped catalogue lists no model"
    ids = {m["id"] for m in catalogue["models"]}
    assert catalogue["default_model"] is None or catalogue["default_model"] in ids
    for entry in catalogue["models"]:
        fresh = catalogue_entry(entry["path"])
        assert fresh["weights"]["sha256"] == entry["weights"]["sha256"], (
            f"{entry['id']}: catalogue out of date"
        )
        assert fresh["organs"] == entry["organs"]
        assert entry["weights"]["size_bytes"] <= 20 * 2**20
        if entry["training"].get("synthetic_only"):
            assert "synthetic" in (entry["title"] + entry.get("notes", "")).lower()


def test_user_models_are_listed_and_resolved(user_dir):
    make_model_folder(user_dir / "my-model", {"main": NET}, ["liver", "spleen"])
    (user_dir / "junk").mkdir()
    (user_dir / "junk" / "model.json").write_text("{not json")
    catalogue = load_catalogue()
    mine = [m for m in catalogue["models"] if m["id"] == "my-model"]
    assert len(mine) == 1 and mine[0]["source"] == "user"
    assert resolve_model("my-model", catalogue) == user_dir / "my-model"
    assert resolve_model(str(user_dir / "my-model")) == user_dir / "my-model"


def test_resolve_errors_name_the_choices(user_dir, tmp_path):
    with pytest.raises(SegDeepError, match="not in the catalogue"):
        resolve_model("no-such-model")
    with pytest.raises(SegDeepError, match="not a SegDeep model folder"):
        resolve_model(str(tmp_path))
    with pytest.raises(SegDeepError, match="no model given"):
        resolve_model(None, {"models": [], "default_model": None})


def test_rebuild_keeps_the_default(tmp_path):
    make_model_folder(tmp_path / "a-model", {"main": NET}, ["liver", "spleen"])
    path = rebuild_catalogue(tmp_path, "a-model")
    make_model_folder(tmp_path / "b-model", {"main": NET}, ["liver", "spleen"])
    rebuild_catalogue(tmp_path)
    data = json.loads(path.read_text())
    assert data["default_model"] == "a-model" and [m["id"] for m in data["models"]] == [
        "a-model",
        "b-model",
    ]
    with pytest.raises(SegDeepError, match="default model"):
        rebuild_catalogue(tmp_path, "c-model")
