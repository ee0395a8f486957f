"""Label-table terminology (slicerio dict form) -> Slicer's 7-part ``TerminologyEntry`` string."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

SLICER_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
_EMPTY_CODE = ("", "", "")


def _code(value: Optional[Sequence[str]]) -> str:
    parts = tuple(value) if value else _EMPTY_CODE
    if len(parts) != 3:
        raise ValueError(f"terminology code must be [scheme, code, meaning], got {value!r}")
    return "^".join(str(p) for p in parts)


def terminologyString(term: dict[str, Any]) -> str:
    """Serialize ``{"category": [...], "type": [...], ...}`` as Slicer's terminology entry string.

    Format (Slicer developer guide, segmentations): ``context~category~type~typeModifier~
    anatomicContext~anatomicRegion~anatomicRegionModifier`` with coded parts ``scheme^code^meaning``.
    Returns "" when the dict has no category/type (no terminology known for that label).
    """
    if not term or not term.get("category") or not term.get("type"):
        return ""
    hasRegion = bool(term.get("anatomicRegion"))
    anatomicContext = term.get("anatomicContextName", ANATOMIC_CONTEXT if hasRegion else "")
    parts = [
        term.get("contextName", SLICER_CONTEXT),
        _code(term["category"]),
        _code(term["type"]),
        _code(term.get("typeModifier")),
        anatomicContext,
        _code(term.get("anatomicRegion")),
        _code(term.get("anatomicRegionModifier")),
    ]
    return "~".join(parts)
