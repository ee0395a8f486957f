"""Config schema: YAML <-> dataclasses, overrides, one clear error per mistake, shipped recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from SegDeepLib.cli.main import main
from SegDeepLib.errors import SegDeepError
from SegDeepLib.training.config import TrainConfig, load_config, save_config
from SegDeepLib.training.schema import apply_overrides, parse_override

REPO = Path(__file__).resolve().parents[3]
BASE = {"data": {"root": "/data"}, "model": {"name": "vnet"}}


def test_yaml_round_trip_and_types(tmp_path):
    c = load_config({**BASE, "optimizer": {"name": "sgd", "lr": 1e-4, "momentum": 0.99}})
    assert isinstance(c, TrainConfig) and c.optimizer.lr == 1e-4 and c.optimizer.momentum == 0.99
    save_config(c, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == c
    assert load_config({**BASE, "optimizer": {"lr": 1}}).optimizer.lr == 1.0  # ints accepted as floats


def test_overrides_are_typed_and_nested():
    c = load_config(BASE, ["optimizer.lr=1e-3", "training.epochs=7", "sampling.patch_size=[32,32,32]",
                           "training.grad_clip=null", "model.width=8", "data.labels=[liver, spleen]"])
    assert c.optimizer.lr == pytest.approx(1e-3) and c.training.epochs == 7
    assert c.sampling.patch_size == [32, 32, 32] and c.training.grad_clip is None
    assert c.model == {"name": "vnet", "width": 8} and c.data.labels == ["liver", "spleen"]
    assert parse_override("a.b=text") == (["a", "b"], "text")
    assert apply_overrides({"a": {"x": 1}}, ["a.y=2"]) == {"a": {"x": 1, "y": 2}}


@pytest.mark.parametrize("data, overrides, message", [
    ({**BASE, "optimiser": {}}, [], "optimiser': unknown key; did you mean 'optimizer'"),
    (BASE, ["training.epochs=ten"], "training.epochs': expected an integer"),
    (BASE, ["training.deterministic=3"], "expected true/false"),
    (BASE, ["optimizer.name=adagrad"], "must be one of"),
    ({"model": {"name": "vnet"}}, [], "data.root': missing"),
    ({"data": {"root": "/d"}}, [], "model.name': missing"),
    (BASE, ["sampling.patch_size=[32,32]"], "needs 3 positive sizes"),
    (BASE, ["data.fold=5"], "data.fold"),
    (BASE, ["data.preprocessing.intensity.kind=magic"], "preprocessing spec"),
    (BASE, ["training.epochs"], "use key.sub=value"),
])
def test_bad_configs_fail_with_one_clear_message(data, overrides, message):
    with pytest.raises(SegDeepError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(data, overrides)


def test_cli_bad_config_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**BASE, "training": {"epochz": 3}}))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training.epochz" in err[0] and "epochs" in err[0]
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    path.write_text("a: [")
    assert main(["train", str(path)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_missing_dataset_and_wrong_labels_stop_before_training(tmp_path, capsys):
    from Testing.SegDeepLib.training.helpers import make_msd_dataset, tiny_config

    root = make_msd_dataset(tmp_path / "ds", cases=2)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path / "nowhere", tmp_path / "run")))
    assert main(["train", str(cfg)]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    cfg.write_text(yaml.safe_dump(tiny_config(root, tmp_path / "run", data={"labels": ["livr"]})))
    assert main(["train", str(cfg)]) == 2
    assert "['livr'] not in" in capsys.readouterr().err
    cfg.write_text(yaml.safe_dump(tiny_config(root, tmp_path / "run", model={"num_classes": 5})))
    assert main(["train", str(cfg), "--check"]) == 2
    assert "model.num_classes': 5 but the data gives 3" in capsys.readouterr().err
    assert main(["train", str(cfg), "model.num_classes=3", "--check"]) == 0
    assert main(["train", str(cfg), "--check", "model.num_classes=3"]) == 0  # overrides after options
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["train", str(cfg), "--check", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("recipe", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_are_valid(recipe):
    c = load_config(recipe)
    assert c.model["name"] and c.loss["name"]


def _crf_recipes() -> list[Path]:
    recipes = sorted((REPO / "configs").glob("*.yaml")) + sorted((REPO / "scripts" / "default_models").glob("*_*.yaml"))
    return [r for r in recipes if yaml.safe_load(r.read_text())["model"]["name"] == "cnn_crf"]


@pytest.mark.parametrize("recipe", _crf_recipes(), ids=lambda p: p.name)
def test_trainable_crf_theta_beta_is_in_the_feature_channels_units(recipe):
    # The CRF sees the network's input channels (window-rescaled to [0, 1]), so theta_beta must be
    # given in those units: a few to a hundred HU, not the paper's HU value applied to [0, 1] data.
    c = load_config(recipe)
    low, high = c.data.preprocessing["intensity"]["window"]
    theta_beta_hu = float(c.model["crf"]["theta_beta"]) * (high - low)
    assert 1.0 <= theta_beta_hu <= 200.0, f"theta_beta = {theta_beta_hu:g} HU"


def test_class_shift_names_must_be_classes():
    with pytest.raises(SegDeepError, match="augmentation.class_shift"):
        load_config({"data": {"root": "x", "labels": ["liver"]}, "model": {"name": "unet3d"},
                     "loss": {"name": "dice"}, "augmentation": {"class_shift": {"livr": 0.2}}})
    c = load_config({"data": {"root": "x", "labels": ["liver"]}, "model": {"name": "unet3d"},
                     "loss": {"name": "dice"}, "augmentation": {"class_shift": {"liver": 0.2},
                                                                 "class_shift_probability": 0.5}})
    from SegDeepLib.training.setup import augment_settings

    assert augment_settings(c, ["spleen", "liver"]).class_shift == {2: 0.2}  # class index of liver
