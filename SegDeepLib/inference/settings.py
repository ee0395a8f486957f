"""The ``inference`` section of a model folder's ``model.json``: defaults and validation.

::

    "inference": {
      "mode": "3d" | "2d" | "cascade",
      "tile_size": [z, y, x],           # 3D: network input tile (valid-conv nets: their input)
      "overlap": 0.5,                   # fraction of an output tile (0 = non-overlapping tiles)
      "weighting": "gaussian" | "constant",
      "batch_size": 1,                  # tiles (3D) or slices (2D) per forward pass
      "pad_mode": "constant" | "replicate", "pad_value": 0.0,
      "ensemble": ["main"],             # network keys whose probabilities are averaged (folds)
      "tta": false,                     # flip test-time augmentation by default
      "tta_axes": [[0], [1], [2]],      # spatial axes flipped, one list per extra pass
      "postprocess": {"largest_component": true | [names], "fill_holes": true | [names]},
      "crf": null | {"default": true, "params": {...}},   # post-processing CRF (crf_refine)
      "fast": {...},                    # overrides applied with --fast (e.g. spacing, overlap)
      "slices": {"context": 1, "sequence": false, "sequence_network": null,   # 2D models
                 "window": null},       # sequence models: runs of this many slices (as trained)
      "cascade": {"stage1": {"network": "stage1", "preprocessing": {...}, "tile_size": [...],
                             "overlap": 0.0},
                  "stage2": {"network": "stage2", "tile_size": [...], "overlap": 0.5},
                  "dilation": 3, "dilation_in_mm": false}
    }

In cascade mode the top-level ``preprocessing`` is stage 2's (its ``crop`` is forced to ``"mask"``:
the C2 region); stage 1 has its own (usually ``"crop": "body"`` = C1 at a coarser spacing).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from SegDeepLib.errors import SegDeepError

MODES = ("3d", "2d", "cascade")
DEFAULTS: dict[str, Any] = {
    "mode": "3d",
    "tile_size": [96, 96, 96],
    "overlap": 0.5,
    "weighting": "gaussian",
    "batch_size": 1,
    "sigma_scale": 0.125,
    "pad_mode": "constant",
    "pad_value": 0.0,
    "ensemble": None,
    "tta": False,
    "tta_axes": [[0], [1], [2]],
    "postprocess": {"largest_component": False, "fill_holes": False},
    "crf": None,
    "fast": {},
    "slices": {"context": 1, "sequence": False, "sequence_network": None, "window": None},
    "cascade": None,
    "autocast": True,
}
STAGE_KEYS = {"network", "preprocessing", "tile_size", "overlap", "weighting", "batch_size"}


def _fail(where: str, problem: str) -> SegDeepError:
    return SegDeepError(f"{where}: inference settings: {problem}")


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def inference_settings(
    spec: Mapping[str, Any], fast: bool = False, where: str = "model"
) -> dict[str, Any]:
    """Complete inference settings of a model spec (defaults filled, ``fast`` overrides applied)."""
    given = spec.get("inference") or {}
    if not isinstance(given, Mapping):
        raise _fail(where, f"'inference' must be a dict, got {type(given).__name__}")
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise _fail(where, f"unknown key(s) {unknown}; allowed: {sorted(DEFAULTS)}")
    settings = _merge(DEFAULTS, given)
    if fast and settings["fast"]:
        settings = _merge(
            settings, {k: v for k, v in settings["fast"].items() if k != "preprocessing"}
        )
    _check(settings, spec, where)
    if settings["ensemble"] is None:
        settings["ensemble"] = ["main"] if settings["mode"] != "cascade" else []
    return settings


def _check(settings: dict[str, Any], spec: Mapping[str, Any], where: str) -> None:
    if settings["mode"] not in MODES:
        raise _fail(where, f"mode {settings['mode']!r}: use one of {list(MODES)}")
    if not 0 <= float(settings["overlap"]) < 1:
        raise _fail(where, f"overlap {settings['overlap']}: need 0 <= overlap < 1")
    networks = spec.get("networks", {})
    for key in settings["ensemble"] or []:
        if key not in networks:
            raise _fail(where, f"ensemble network {key!r} not in networks {sorted(networks)}")
    if settings["mode"] == "cascade":
        cascade = settings["cascade"]
        if not isinstance(cascade, Mapping) or "stage1" not in cascade or "stage2" not in cascade:
            raise _fail(where, "mode 'cascade' needs 'cascade': {'stage1': {...}, 'stage2': {...}}")
        for name in ("stage1", "stage2"):
            stage = cascade[name]
            extra = sorted(set(stage) - STAGE_KEYS)
            if extra:
                raise _fail(
                    where, f"cascade.{name}: unknown key(s) {extra}; allowed: {sorted(STAGE_KEYS)}"
                )
            if stage.get("network", name) not in networks:
                raise _fail(
                    where, f"cascade.{name}: network {stage.get('network', name)!r} not in networks"
                )
        if "preprocessing" not in cascade["stage1"]:
            raise _fail(
                where, "cascade.stage1 needs its own 'preprocessing' spec (e.g. crop 'body')"
            )


def fast_preprocessing(
    spec: Mapping[str, Any], settings_given: Mapping[str, Any]
) -> dict[str, Any]:
    """The preprocessing spec with ``inference.fast.preprocessing`` overrides merged in."""
    override = (settings_given.get("fast") or {}).get("preprocessing") or {}
    return _merge(dict(spec.get("preprocessing") or {}), override)
