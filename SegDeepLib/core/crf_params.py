"""The dense-CRF parameter table (``resources/crf/parameters.json``): names, types, defaults, limits.

One table, read by :class:`SegDeepLib.crf.CRFRNN` (its defaults), ``segdeep segment --crf-param``
(accepted names and limits), ``segdeep crf`` (option defaults) and the Slicer module (spin boxes and
parameter node), so a default is written once. A model's ``inference.crf.params`` override it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from SegDeepLib.errors import SegDeepError

TABLE_FILE = Path(__file__).resolve().parent.parent / "resources" / "crf" / "parameters.json"
FORMAT = "segdeep-crf-parameters/1"


@dataclass(frozen=True)
class CrfParam:
    """One CRF parameter of the table."""

    name: str  # as CRFRNN/crf_refine keyword, model.json inference.crf.params and --crf-param
    kind: type  # float or int
    default: float | int
    minimum: float
    inclusive: bool  # whether ``minimum`` itself is allowed
    unit: str
    help: str
    slicer: dict[str, Any]  # attribute (parameter node), decimals (spin box), range (node limits)

    def check(self, value: Any, where: str) -> float | int:
        """``value`` as this parameter's type, or :class:`SegDeepError` naming ``where``."""
        try:
            number = self.kind(value)
            ok = math.isfinite(number) and (
                number >= self.minimum if self.inclusive else number > self.minimum
            )
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            need = f"{'an integer' if self.kind is int else 'a number'} "
            need += f"{'>=' if self.inclusive else '>'} {self.minimum:g}"
            raise SegDeepError(f"{where}: {self.name} must be {need}")
        return number


def _param(entry: dict[str, Any]) -> CrfParam:
    kind = int if entry["type"] == "integer" else float
    return CrfParam(
        name=entry["name"],
        kind=kind,
        default=kind(entry["default"]),
        minimum=entry["minimum"],
        inclusive=not entry["exclusive_minimum"],
        unit=entry.get("unit", ""),
        help=entry.get("help", ""),
        slicer=dict(entry.get("slicer") or {}),
    )


def load_table(path: str | Path = TABLE_FILE) -> tuple[CrfParam, ...]:
    """The parameters of a table file, in its order."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise KeyError(f"format is not {FORMAT!r}")
        return tuple(_param(entry) for entry in data["parameters"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SegDeepError(f"{path}: unreadable CRF parameter table ({exc}); reinstall SegDeep") from None


PARAMETERS = load_table()
BY_NAME = {p.name: p for p in PARAMETERS}
DEFAULTS: dict[str, float | int] = {p.name: p.default for p in PARAMETERS}
