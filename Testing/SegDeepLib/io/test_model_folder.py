"""Model folders: atomic save, sha256 check, safe loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from SegDeepLib.errors import SegDeepError
from SegDeepLib.io.model_folder import load_weights, read_spec, save_model_folder


def spec() -> dict:
    return {"id": "t", "networks": {"main": {"name": "x"}}, "labels": {"labels": []}}


def test_save_load_half(tmp_path: Path) -> None:
    net = torch.nn.Conv3d(2, 3, 3)
    folder = save_model_folder(tmp_path / "m", spec(), {"main": net.state_dict()}, half=True)
    loaded = load_weights(folder)
    assert read_spec(folder)["weights"]["dtype"] == "float16"
    assert loaded["main"]["weight"].dtype == torch.float32
    torch.testing.assert_close(loaded["main"]["weight"], net.weight.detach().half().float())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_overwrite_and_tamper(tmp_path: Path) -> None:
    folder = save_model_folder(tmp_path / "m", spec(), {"main": {"w": torch.ones(2)}})
    with pytest.raises(SegDeepError, match="already exists"):
        save_model_folder(folder, spec(), {"main": {"w": torch.zeros(2)}})
    save_model_folder(folder, spec(), {"main": {"w": torch.zeros(2)}}, overwrite=True)
    assert load_weights(folder)["main"]["w"].sum() == 0
    weights = folder / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:-3] + b"xyz")
    with pytest.raises(SegDeepError, match="sha256 mismatch"):
        load_weights(folder)


def test_refuses_pickled_objects(tmp_path: Path) -> None:
    from SegDeepLib.io.model_folder import sha256_file

    folder = save_model_folder(tmp_path / "m", spec(), {"main": {"w": torch.ones(1)}})
    torch.save({"main": {"w": torch.ones(1)}, "evil": Path("/")}, folder / "weights.pt")
    data = json.loads((folder / "model.json").read_text())
    data["weights"]["sha256"] = sha256_file(folder / "weights.pt")
    (folder / "model.json").write_text(json.dumps(data))
    with pytest.raises(SegDeepError, match="not a tensors-only weights file") as info:
        load_weights(folder)
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)


def test_missing_pieces(tmp_path: Path) -> None:
    with pytest.raises(SegDeepError, match="not a SegDeep model folder"):
        read_spec(tmp_path)
    folder = save_model_folder(tmp_path / "m", spec(), {"main": {"w": torch.ones(1)}})
    (folder / "weights.pt").unlink()
    with pytest.raises(SegDeepError, match="weights file missing"):
        load_weights(folder)
