"""The CRF refinement parameters of the Advanced section: table, model defaults, widgets, CLI flags.

The parameters, their library defaults and limits come from SegDeepLib's CRF parameter table (read by
the torch-free core, :mod:`SegDeepLib.core.crf_params`); a model's defaults come from its
``model.json`` (``inference.crf.params``, read as a file: importing ``SegDeepLib.crf`` would import
torch into Slicer). Only the values the user
changed are sent, as ``--crf-param NAME=VALUE``, so the model's exact values are kept otherwise.
Widgets are reached through ``ui`` (from ``childWidgetVariables``) with PythonQt's rules (a Qt
property such as ``value`` or ``checked`` is an attribute); nothing here imports Slicer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

NO_MODEL_SETTINGS = ("This model has no tuned CRF parameters: with CRF on, SegDeepLib's defaults "
                     "(shown) are used.")


@dataclass(frozen=True)
class CrfParameter:
    """One CRF parameter: SegDeepLib name, parameter-node attribute, SegDeepLib default, decimals."""

    name: str  # as in model.json inference.crf.params and --crf-param
    attribute: str  # parameter-node attribute = SlicerParameterName of its spin box
    default: float  # SegDeepLib's CRFRNN default, used when the model does not set it
    decimals: int  # 0: an integer (QSpinBox)

    @property
    def spinBox(self) -> str:
        return f"{self.attribute}SpinBox"

    @property
    def label(self) -> str:
        return f"{self.attribute}Label"

    def clean(self, value: Any) -> Any:
        """The value as its spin box holds it (rounded to its decimals, int for iterations)."""
        return round(float(value)) if self.decimals == 0 else round(float(value), self.decimals)


try:  # the one table (SegDeepLib/resources/crf/parameters.json), read by SegDeepLib's torch-free core
    from SegDeepLib.core.crf_params import PARAMETERS as _TABLE
except ImportError:  # SegDeepLib not importable: no parameters (catalogue.CORE_MISSING says why)
    _TABLE = ()

PARAMETERS = tuple(CrfParameter(p.name, p.slicer["attribute"], p.default, int(p.slicer["decimals"]))
                   for p in _TABLE)
BY_NAME = {p.name: p for p in PARAMETERS}
_NODE_RANGES = {p.slicer["attribute"]: tuple(p.slicer["range"]) for p in _TABLE}


def nodeDefault(attribute: str) -> Any:
    """The parameter node's default of a CRF attribute (the table's; 0 without SegDeepLib)."""
    found = [p.clean(p.default) for p in PARAMETERS if p.attribute == attribute]
    return found[0] if found else 0


def nodeRange(attribute: str) -> tuple[float, float]:
    """The parameter node's limits of a CRF attribute (the table's; any value without SegDeepLib)."""
    return _NODE_RANGES.get(attribute, (0, 1e9))


def libraryDefaults() -> dict[str, Any]:
    return {p.name: p.clean(p.default) for p in PARAMETERS}


def modelCrfSettings(model: Any) -> Optional[dict[str, Any]]:
    """``inference.crf`` of a catalogue entry's ``model.json``; None when it has none (or no file)."""
    inference = model.raw.get("inference")
    if inference is None and model.folder:
        try:
            spec = json.loads((Path(model.folder) / "model.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        inference = spec.get("inference") if isinstance(spec, dict) else None
    crf = inference.get("crf") if isinstance(inference, dict) else None
    return crf if isinstance(crf, dict) else None


def crfDefault(model: Any) -> bool:
    """Whether the model recommends CRF refinement (``inference.crf.default``; off when unset)."""
    return bool((modelCrfSettings(model) or {}).get("default", False))


def modelDefaults(model: Any) -> Optional[dict[str, Any]]:
    """The model's CRF parameters as the spin boxes show them (SegDeepLib's default for those it
    does not set); None when the model has no CRF settings."""
    settings = modelCrfSettings(model)
    if settings is None:
        return None
    params = settings.get("params") if isinstance(settings.get("params"), dict) else {}
    values = libraryDefaults()
    for name, value in params.items():
        if name in BY_NAME:
            if isinstance(value, (list, tuple)):  # theta_beta per channel: show the first one
                value = value[0] if value else BY_NAME[name].default
            values[name] = BY_NAME[name].clean(value)
    return values


def changedValues(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The values that differ from ``defaults`` (both as the spin boxes hold them)."""
    return {p.name: p.clean(values[p.name]) for p in PARAMETERS
            if p.clean(values[p.name]) != p.clean(defaults[p.name])}


def cliArguments(params: Mapping[str, Any]) -> list[str]:
    """``--crf-param NAME=VALUE`` flags, in table order; unknown names raise ValueError."""
    unknown = sorted(set(params) - set(BY_NAME))
    if unknown:
        raise ValueError(f"unknown CRF parameter(s) {unknown}; use {', '.join(BY_NAME)}")
    args: list[str] = []
    for p in PARAMETERS:
        if p.name in params:
            args += ["--crf-param", f"{p.name}={p.clean(params[p.name])!r}"]
    return args


class CrfControls:
    """The CRF parameter spin boxes, their labels, the reset button and the note label."""

    def __init__(self, ui: Any, tr: Callable[[str], str] = str) -> None:
        self.ui, self.tr = ui, tr
        self.defaults: Optional[dict[str, Any]] = None  # the selected model's; None: no settings

    def setup(self) -> None:
        # the CRF checkbox is followed through the parameter node (panel.updateButtons)
        self.ui.crfResetButton.connect("clicked(bool)", self.resetToDefaults)

    def setModel(self, model: Any, fill: bool = True) -> None:
        """Remember ``model``'s defaults; ``fill`` the spin boxes with them (a newly chosen model)."""
        self.defaults = modelDefaults(model) if model is not None else None
        if fill:
            self.resetToDefaults()
        noSettings = model is not None and self.defaults is None
        self.ui.crfNoteLabel.text = self.tr(NO_MODEL_SETTINGS) if noSettings else ""
        self.updateEnabled()

    def resetToDefaults(self, checked: bool = False) -> None:
        values = self.defaults or libraryDefaults()
        for p in PARAMETERS:
            getattr(self.ui, p.spinBox).setValue(values[p.name])

    def values(self) -> dict[str, Any]:
        return {p.name: p.clean(getattr(self.ui, p.spinBox).value) for p in PARAMETERS}

    def isActive(self) -> bool:
        return self.ui.crfCheckBox.checked and self.defaults is not None

    def overrides(self) -> dict[str, Any]:
        """What the run must change in the model's CRF parameters ({} when CRF is off)."""
        return changedValues(self.values(), self.defaults) if self.isActive() else {}

    def updateEnabled(self) -> None:
        active = self.isActive()
        for p in PARAMETERS:
            getattr(self.ui, p.spinBox).setEnabled(active)
            getattr(self.ui, p.label).setEnabled(active)
        self.ui.crfResetButton.setEnabled(active)
