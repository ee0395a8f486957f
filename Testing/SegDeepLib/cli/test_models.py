"""`segdeep models`: the catalogue as text and JSON, with user models."""

from __future__ import annotations

import json

import pytest

from SegDeepLib.cli.main import main
from Testing.SegDeepLib.inference.tiny_nets import make_model_folder


@pytest.fixture
def user_model(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGDEEP_MODELS_DIR", str(tmp_path))
    return make_model_folder(
        tmp_path / "my-user-model",
        {"main": {"name": "test_centres", "centres": [0, 1, 2]}},
        ["liver", "spleen"],
        metrics={"dice_heldout": {"liver": 0.91}},
        timing={"cpu_s": 12.5},
    )


def test_text_listing_shows_the_card(user_model, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "my-user-model (v0.1)" in out and "[user]" in out
    assert "organs:    liver, spleen" in out
    assert "dice_heldout: liver: 0.91" in out and "cpu_s: 12.5" in out
    assert str(user_model.parent) in out


def test_json_listing_and_one_model(user_model, capsys):
    assert main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    ids = [m["id"] for m in data["models"]]
    assert "my-user-model" in ids and data["format"] == "segdeep-catalogue/1"
    assert main(["models", "--json", "--id", "my-user-model"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["models"]
    assert entry["path"] == str(user_model) and entry["organs"][1]["name"] == "spleen"


def test_unknown_id_is_an_error(user_model, capsys):
    assert main(["models", "--id", "nope"]) == 2
    assert "my-user-model" in capsys.readouterr().err
