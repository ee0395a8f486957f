"""The one CRF parameter table (resources/crf/parameters.json) and everything that reads it."""

from __future__ import annotations

import inspect
import json

import pytest

from SegDeepLib.core import crf_params
from SegDeepLib.errors import SegDeepError

EXPECTED_DEFAULTS = {  # as docs/crf.md measures them and CRFRNN always had them
    "theta_alpha": 4.0,
    "theta_beta": 15.0,
    "theta_gamma": 2.0,
    "w1": 5.0,
    "w2": 3.0,
    "num_iterations": 5,
}


def test_table_defaults():
    assert crf_params.DEFAULTS == EXPECTED_DEFAULTS
    assert isinstance(crf_params.DEFAULTS["num_iterations"], int)


def test_crfrnn_segment_and_crf_cli_all_use_the_table():
    from SegDeepLib.cli.crf import CRF_FLAGS
    from SegDeepLib.cli.main import build_parser
    from SegDeepLib.cli.segment import CRF_PARAMS
    from SegDeepLib.crf.crfrnn import CRFRNN

    signature = inspect.signature(CRFRNN.__init__).parameters
    assert {name: signature[name].default for name in EXPECTED_DEFAULTS} == EXPECTED_DEFAULTS
    assert list(CRF_PARAMS) == list(EXPECTED_DEFAULTS)
    args = vars(build_parser().parse_args(["crf", "p.npy", "ct.nii.gz", "-o", "out.nii.gz"]))
    flags = {name: args[flag.lstrip("-").replace("-", "_")] for name, flag in CRF_FLAGS.items()}
    assert flags == EXPECTED_DEFAULTS  # segdeep crf had theta_alpha 12 and theta_gamma 6


def test_check_values_and_messages():
    alpha, iterations = crf_params.BY_NAME["theta_alpha"], crf_params.BY_NAME["num_iterations"]
    assert alpha.check("2.5", "x") == 2.5 and iterations.check("0", "x") == 0
    with pytest.raises(SegDeepError, match=r"^where: theta_alpha must be a number > 0$"):
        alpha.check("0", "where")
    with pytest.raises(SegDeepError, match="num_iterations must be an integer >= 0"):
        iterations.check("1.5", "where")
    with pytest.raises(SegDeepError, match="must be a number"):
        alpha.check("nan", "where")


def test_unreadable_table_names_the_file(tmp_path):
    path = tmp_path / "parameters.json"
    path.write_text(json.dumps({"format": "other", "parameters": []}))
    with pytest.raises(SegDeepError, match=r"parameters\.json: unreadable CRF parameter table"):
        crf_params.load_table(path)
    path.write_text("{")
    with pytest.raises(SegDeepError, match="reinstall SegDeep"):
        crf_params.load_table(path)
