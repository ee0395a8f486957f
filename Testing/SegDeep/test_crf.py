"""SegDeepHelpers.crf: the CRF parameter table, model defaults from model.json, --crf-param flags."""

from __future__ import annotations

import inspect
import json

import pytest

from Testing.SegDeep.helpers import FAKE_BLADDER_CRF, write_catalogue


@pytest.fixture
def crf(helpers_path):
    from SegDeepHelpers import crf

    return crf


def test_table_matches_segdeeplib_crfrnn_and_the_cli(crf):
    """Independent references: CRFRNN's signature defaults and the CLI's accepted names."""
    from SegDeepLib.cli.segment import CRF_PARAMS
    from SegDeepLib.crf.crfrnn import CRFRNN

    signature = inspect.signature(CRFRNN.__init__).parameters
    assert {p.name: p.default for p in crf.PARAMETERS} == {
        name: signature[name].default for name in CRF_PARAMS}
    assert [p.name for p in crf.PARAMETERS] == list(CRF_PARAMS)


def test_parameter_node_defaults_match_the_table(standin):
    from SegDeepHelpers import crf

    import SegDeep

    node = SegDeep.SegDeepLogic().getParameterNode()
    assert {p.name: getattr(node, p.attribute) for p in crf.PARAMETERS} == {
        p.name: p.default for p in crf.PARAMETERS}


def test_model_defaults_from_a_shipped_folder_and_from_a_user_model_json(crf, tmp_path):
    from SegDeepHelpers import catalogue

    abdomen, bladder = catalogue.loadCatalogue(write_catalogue(tmp_path / "c.json"), userDir=tmp_path / "none")
    assert crf.modelDefaults(abdomen) is None  # no inference.crf: nothing to tune
    assert crf.modelDefaults(bladder) == {**FAKE_BLADDER_CRF, "num_iterations": 5}
    user = catalogue.entryFromDict({"id": "u", "inference": {"crf": {"params": {"theta_beta": [12.3456]}}}})
    assert crf.modelDefaults(user)["theta_beta"] == 12.346  # a one-channel list, as the spin box shows it
    assert crf.modelDefaults(catalogue.entryFromDict({"id": "u", "inference": {"crf": None}})) is None
    broken = catalogue.entryFromDict({"id": "b", "folder": "b"}, tmp_path / "missing")
    assert crf.modelDefaults(broken) is None


def test_shipped_crf_model_defaults_equal_its_model_json(crf):
    from SegDeepHelpers import catalogue

    models = {m.id: m for m in catalogue.loadCatalogue()}
    assert "bladder-vnet-crf" in models, "the bladder CRF model is missing from the catalogue"
    path = catalogue.defaultCataloguePath().parent / "bladder-vnet-crf" / "model.json"
    params = json.loads(path.read_text())["inference"]["crf"]["params"]
    assert crf.modelDefaults(models["bladder-vnet-crf"]) == params
    assert all(crf.modelDefaults(m) is None for m in models.values()
               if json.loads((catalogue.defaultCataloguePath().parent / m.raw["folder"] / "model.json")
                             .read_text())["inference"].get("crf") is None)


def test_changed_values_and_cli_flags(crf):
    defaults = {**FAKE_BLADDER_CRF, "num_iterations": 5}
    values = {**defaults, "theta_alpha": 7.25, "w2": 1.5000001, "num_iterations": 8}
    changed = crf.changedValues(values, defaults)
    assert changed == {"theta_alpha": 7.25, "num_iterations": 8}  # w2 rounds to its default
    assert crf.cliArguments(changed) == ["--crf-param", "theta_alpha=7.25",
                                         "--crf-param", "num_iterations=8"]
    assert crf.cliArguments({"w1": 2, "theta_beta": 0.1}) == ["--crf-param", "theta_beta=0.1",
                                                               "--crf-param", "w1=2.0"]
    with pytest.raises(ValueError, match="unknown CRF parameter"):
        crf.cliArguments({"alpha": 1.0})
