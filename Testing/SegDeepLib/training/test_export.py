"""Model zips: round trip through the CLI, corrupt weights, path traversal and links refused."""

from __future__ import annotations

import zipfile

import pytest
import torch

from SegDeepLib.cli.main import main
from SegDeepLib.errors import SegDeepError
from SegDeepLib.io.model_folder import load_weights, read_spec, save_model_folder
from SegDeepLib.training.export import export_zip, import_zip


@pytest.fixture
def folder(tmp_path):
    spec = {"id": "m", "networks": {"main": {"name": "test_tiny3d"}}, "labels": {"labels": []}}
    return save_model_folder(tmp_path / "model", spec, {"main": {"w": torch.arange(6.0)}})


def test_cli_round_trip(folder, tmp_path, capsys):
    assert main(["export", str(folder), "-o", str(tmp_path / "m.zip")]) == 0
    assert main(["import", str(tmp_path / "m.zip"), "-o", str(tmp_path / "back")]) == 0
    assert read_spec(tmp_path / "back") == read_spec(folder)
    assert torch.equal(load_weights(tmp_path / "back")["main"]["w"], torch.arange(6.0))
    assert main(["import", str(tmp_path / "m.zip"), "-o", str(tmp_path / "back")]) == 2  # exists


def test_zip_of_the_folder_itself_is_accepted(folder, tmp_path):
    path = tmp_path / "nested.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for file in folder.iterdir():
            archive.write(file, f"model/{file.name}")
    assert read_spec(import_zip(path, tmp_path / "out"))["id"] == "m"


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt", "C:/evil.txt"])
def test_paths_escaping_the_target_are_refused(folder, tmp_path, name):
    path = tmp_path / "bad.zip"
    export_zip(folder, path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(name, "x")
    with pytest.raises(SegDeepError, match="outside the target folder"):
        import_zip(path, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_symlink_members_refused(folder, tmp_path):
    path = tmp_path / "link.zip"
    export_zip(folder, path)
    info = zipfile.ZipInfo("link")
    info.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(SegDeepError, match="symbolic link"):
        import_zip(path, tmp_path / "out")


def test_corrupt_weights_refused(folder, tmp_path):
    (folder / "weights.pt").write_bytes(b"garbage")
    with pytest.raises(SegDeepError, match="sha256"):
        export_zip(folder, tmp_path / "x.zip")
    not_zip = tmp_path / "no.zip"
    not_zip.write_text("hello")
    with pytest.raises(SegDeepError, match="not a zip"):
        import_zip(not_zip, tmp_path / "out")


@pytest.mark.parametrize("mode, window", [("sequence2d", 6), ("slices2d", None), ("patch3d", None)])
def test_inference_settings_run_sequence_models_on_their_training_length(mode, window):
    from SegDeepLib.training.config import TrainConfig
    from SegDeepLib.training.export import inference_settings

    config = TrainConfig()
    config.sampling.mode, config.sampling.sequence_length = mode, 6
    config.validation.pad_mode = "replicate"
    settings = inference_settings(config)
    assert settings.get("slices", {}).get("window") == window
    assert settings["pad_mode"] == "replicate"  # the predictor pads as validation did
