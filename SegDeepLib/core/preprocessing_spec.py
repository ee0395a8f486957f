"""The preprocessing spec: a JSON-able dict stored in model folders, validated with clear errors.

::

    {
      "spacing": [z, y, x] | null,          # target spacing in mm (canonical array order); null = keep
      "intensity": {...},                   # see INTENSITY_KINDS
      "crop": "body" | "mask" | null,       # crop to C1 (body mask) or to a caller-given region mask
      "margin_mm": 10,                      # margin around the crop region
      "body_threshold": -500,               # C1 threshold (HU)
      "interpolation": "linear" | "bspline",          # images
      "label_interpolation": "nearest" | "onehot_linear"  # label maps (preprocess_label)
    }

Intensity kinds (defaults in brackets)::

    {"kind": "window", "window": [lo, hi]}
    {"kind": "ct_nnunet", "clip": [lo, hi], "mean": m, "std": s}   # from ct_fingerprint()
    {"kind": "zscore", "mask": null | "nonzero" | "region"}         # [null]
    {"kind": "dual_channel", "level": 6, "width": 20, "window": [-1000, 1000]}
    {"kind": "none"}
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

from SegDeepLib.errors import SegDeepError

TOP_DEFAULTS: dict[str, Any] = {
    "spacing": None,
    "intensity": {"kind": "none"},
    "crop": None,
    "margin_mm": 10.0,
    "body_threshold": -500.0,
    "interpolation": "linear",
    "label_interpolation": "nearest",
}
INTENSITY_KINDS: dict[str, dict[str, Any]] = {
    "window": {"window": None},
    "ct_nnunet": {"clip": None, "mean": None, "std": None},
    "zscore": {"mask": None},
    "dual_channel": {"level": 6.0, "width": 20.0, "window": [-1000.0, 1000.0]},
    "none": {},
}
CROPS = (None, "body", "mask")
ZSCORE_MASKS = (None, "nonzero", "region")
INTERPOLATIONS = ("linear", "bspline")
LABEL_INTERPOLATIONS = ("nearest", "onehot_linear")


def _fail(problem: str) -> SegDeepError:
    return SegDeepError(f"preprocessing spec: {problem}")


def _number(value: Any, name: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(f"'{name}' must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise _fail(f"'{name}' must be > 0, got {value!r}")
    return float(value)


def _pair(value: Any, name: str) -> list[float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _fail(f"'{name}' must be a list [lo, hi], got {value!r}")
    lo, hi = (_number(v, name) for v in value)
    if not lo < hi:
        raise _fail(f"'{name}' needs lo < hi, got {value!r}")
    return [lo, hi]


def _check_keys(given: Mapping[str, Any], allowed: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise _fail(f"unknown key(s) {unknown} in {where}; allowed: {sorted(allowed)}")


def _choice(value: Any, name: str, options: tuple) -> Any:
    if value not in options:
        raise _fail(f"'{name}' must be one of {list(options)}, got {value!r}")
    return value


def validate_intensity(intensity: Any) -> dict[str, Any]:
    """A complete copy of an intensity spec (defaults filled) or a :class:`SegDeepError`."""
    if not isinstance(intensity, Mapping) or "kind" not in intensity:
        raise _fail(
            f"'intensity' must be a dict with a 'kind' ({', '.join(INTENSITY_KINDS)}), got {intensity!r}"
        )
    kind = intensity["kind"]
    if kind not in INTENSITY_KINDS:
        raise _fail(f"unknown intensity kind {kind!r}; use one of {list(INTENSITY_KINDS)}")
    fields = INTENSITY_KINDS[kind]
    _check_keys(
        {k: v for k, v in intensity.items() if k != "kind"}, fields, f"intensity kind '{kind}'"
    )
    out: dict[str, Any] = {"kind": kind, **copy.deepcopy(fields), **copy.deepcopy(dict(intensity))}
    missing = [k for k, v in out.items() if v is None and not (kind == "zscore" and k == "mask")]
    if missing:
        raise _fail(f"intensity kind '{kind}' needs {missing}")
    for key in ("window", "clip"):
        if key in out:
            out[key] = _pair(out[key], f"intensity.{key}")
    for key in ("level", "mean"):
        if key in out:
            out[key] = _number(out[key], f"intensity.{key}")
    for key in ("width", "std"):
        if key in out:
            out[key] = _number(out[key], f"intensity.{key}", positive=True)
    if kind == "zscore":
        _choice(out["mask"], "intensity.mask", ZSCORE_MASKS)
    return out


def validate_spec(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return a complete, normalised copy of ``spec`` (defaults filled) or raise :class:`SegDeepError`."""
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise _fail(f"must be a dict, got {type(spec).__name__}")
    _check_keys(spec, TOP_DEFAULTS, "the spec")
    out = {**copy.deepcopy(TOP_DEFAULTS), **copy.deepcopy(dict(spec))}
    if out["spacing"] is not None:
        if not isinstance(out["spacing"], (list, tuple)) or len(out["spacing"]) != 3:
            raise _fail(f"'spacing' must be null or [z, y, x] in mm, got {out['spacing']!r}")
        out["spacing"] = [_number(s, "spacing", positive=True) for s in out["spacing"]]
    out["intensity"] = validate_intensity(out["intensity"])
    _choice(out["crop"], "crop", CROPS)
    out["margin_mm"] = _number(out["margin_mm"], "margin_mm")
    if out["margin_mm"] < 0:
        raise _fail(f"'margin_mm' must be >= 0, got {out['margin_mm']}")
    out["body_threshold"] = _number(out["body_threshold"], "body_threshold")
    _choice(out["interpolation"], "interpolation", INTERPOLATIONS)
    _choice(out["label_interpolation"], "label_interpolation", LABEL_INTERPOLATIONS)
    if out["intensity"].get("mask") == "region" and out["crop"] is None:
        raise _fail("intensity.mask 'region' needs a crop region ('crop': 'body' or 'mask')")
    return out


def num_channels(spec: Mapping[str, Any] | None) -> int:
    """Number of network input channels the spec produces (2 for dual_channel, else 1)."""
    return 2 if validate_spec(spec)["intensity"]["kind"] == "dual_channel" else 1
