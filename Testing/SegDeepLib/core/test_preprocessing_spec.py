"""The preprocessing spec: defaults, normalisation and clear errors."""

from __future__ import annotations

import json

import pytest

from SegDeepLib.errors import SegDeepError
from SegDeepLib.preprocessing import num_channels, validate_spec


def test_defaults_are_filled_and_the_result_is_json_able() -> None:
    spec = validate_spec(None)
    assert spec == {
        "spacing": None,
        "intensity": {"kind": "none"},
        "crop": None,
        "margin_mm": 10.0,
        "body_threshold": -500.0,
        "interpolation": "linear",
        "label_interpolation": "nearest",
    }
    full = validate_spec(
        {"spacing": [3, 1.5, 1.5], "intensity": {"kind": "dual_channel"}, "crop": "body"}
    )
    assert full["spacing"] == [3.0, 1.5, 1.5]
    assert full["intensity"] == {
        "kind": "dual_channel",
        "level": 6.0,
        "width": 20.0,
        "window": [-1000.0, 1000.0],
    }
    assert json.loads(json.dumps(full)) == full
    assert validate_spec(full) == full  # idempotent


def test_input_is_not_modified() -> None:
    given = {"intensity": {"kind": "zscore"}}
    validate_spec(given)
    assert given == {"intensity": {"kind": "zscore"}}


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"spacingg": [1, 1, 1]}, r"unknown key\(s\) \['spacingg'\]"),
        ({"spacing": [1, 1]}, "'spacing' must be null or"),
        ({"spacing": [1, -1, 1]}, "'spacing' must be > 0"),
        ({"spacing": [1, "a", 1]}, "'spacing' must be a finite number"),
        ({"intensity": "window"}, "'intensity' must be a dict"),
        ({"intensity": {"kind": "gamma"}}, "unknown intensity kind 'gamma'"),
        ({"intensity": {"kind": "window"}}, r"needs \['window'\]"),
        ({"intensity": {"kind": "window", "window": [300, -200]}}, "needs lo < hi"),
        (
            {"intensity": {"kind": "window", "window": [0, 1], "level": 3}},
            r"unknown key\(s\) \['level'\]",
        ),
        ({"intensity": {"kind": "ct_nnunet", "clip": [0, 1], "mean": 0}}, r"needs \['std'\]"),
        (
            {"intensity": {"kind": "ct_nnunet", "clip": [0, 1], "mean": 0, "std": 0}},
            "'intensity.std' must be > 0",
        ),
        ({"intensity": {"kind": "dual_channel", "width": -2}}, "'intensity.width' must be > 0"),
        ({"intensity": {"kind": "zscore", "mask": "brain"}}, "'intensity.mask' must be one of"),
        ({"intensity": {"kind": "zscore", "mask": "region"}}, "needs a crop region"),
        ({"crop": "organs"}, "'crop' must be one of"),
        ({"margin_mm": -1}, "'margin_mm' must be >= 0"),
        ({"interpolation": "nearest"}, "'interpolation' must be one of"),
        ({"label_interpolation": "linear"}, "'label_interpolation' must be one of"),
        ({"body_threshold": float("nan")}, "'body_threshold' must be a finite number"),
        ([1, 2], "must be a dict"),
    ],
)
def test_bad_specs_are_clear_errors(spec, message) -> None:
    with pytest.raises(SegDeepError, match="preprocessing spec: .*" + message):
        validate_spec(spec)


def test_num_channels() -> None:
    assert num_channels({"intensity": {"kind": "dual_channel"}}) == 2
    assert num_channels({"intensity": {"kind": "window", "window": [-1, 1]}}) == 1
    assert num_channels(None) == 1
