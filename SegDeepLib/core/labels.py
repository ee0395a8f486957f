"""Label tables: label value -> name, RGB colour and SNOMED-CT terminology. Tables are JSON data.

File format (``SegDeepLib/resources/labels/*.json``)::

    {"name": "abdomen", "labels": [
        {"value": 1, "name": "liver", "color": [221, 130, 101],
         "terminology": {"category": ["SCT", "123037004", "Anatomical Structure"],
                         "type": ["SCT", "10200004", "Liver"]}}]}

``terminology`` follows slicerio's dict form (``typeModifier``, ``anatomicRegion``... optional).
Value 0 is always background and is not listed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from SegDeepLib.errors import SegDeepError

LABELS_DIR = Path(__file__).resolve().parent.parent / "resources" / "labels"
SLICER_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


@dataclass(frozen=True)
class Label:
    value: int
    name: str
    color: tuple[int, int, int]
    terminology: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "name": self.name, "color": list(self.color)}
        if self.terminology:
            out["terminology"] = self.terminology
        return out


@dataclass(frozen=True)
class LabelTable:
    """An ordered set of foreground labels (background 0 implied)."""

    labels: tuple[Label, ...]
    name: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelTable:
        labels = []
        for entry in data.get("labels", []):
            color = tuple(int(c) for c in entry.get("color", (128, 128, 128)))
            labels.append(Label(int(entry["value"]), str(entry["name"]), color, dict(entry.get("terminology", {}))))
        table = cls(tuple(labels), str(data.get("name", "")))
        table.validate()
        return table

    @classmethod
    def from_names(cls, names: Iterable[str], name: str = "") -> LabelTable:
        """Build a table for values 1..N from names, taking colours/codes from the shipped tables."""
        known = {lab.name: lab for lab in load_label_table("organs").labels}
        labels = []
        for value, organ in enumerate(names, start=1):
            base = known.get(organ)
            color = base.color if base else _fallback_color(value)
            labels.append(Label(value, organ, color, dict(base.terminology) if base else {}))
        return cls(tuple(labels), name)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "labels": [lab.to_dict() for lab in self.labels]}

    def validate(self) -> None:
        values = [lab.value for lab in self.labels]
        names = [lab.name for lab in self.labels]
        if any(v <= 0 for v in values):
            raise SegDeepError(f"label table {self.name!r}: values must be >= 1 (0 is background)")
        if len(set(values)) != len(values) or len(set(names)) != len(names):
            raise SegDeepError(f"label table {self.name!r}: duplicate label values or names")

    @property
    def values(self) -> list[int]:
        return [lab.value for lab in self.labels]

    @property
    def names(self) -> list[str]:
        return [lab.name for lab in self.labels]

    def by_name(self, name: str) -> Label:
        for lab in self.labels:
            if lab.name == name:
                return lab
        raise SegDeepError(f"unknown label {name!r}; known: {', '.join(self.names)}")

    def by_value(self, value: int) -> Label:
        for lab in self.labels:
            if lab.value == value:
                return lab
        raise SegDeepError(f"unknown label value {value}; known: {self.values}")

    def subset(self, names: Iterable[str]) -> LabelTable:
        wanted = list(names)
        return LabelTable(tuple(self.by_name(n) for n in wanted), self.name)


def _fallback_color(value: int) -> tuple[int, int, int]:
    palette = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)]
    return palette[(value - 1) % len(palette)]


def load_label_table(name_or_path: str | os.PathLike) -> LabelTable:
    """Load a shipped table by name (``organs``, ``abdomen``...) or any JSON file path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = LABELS_DIR / f"{name_or_path}.json"
    if not path.exists():
        shipped = sorted(p.stem for p in LABELS_DIR.glob("*.json"))
        raise SegDeepError(f"{path}: no such label table; shipped tables: {', '.join(shipped)}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SegDeepError(f"{path}: not valid JSON ({exc})") from None
    return LabelTable.from_dict(data)


def slicer_terminology(label: Label) -> dict[str, Any]:
    """The terminology dict slicerio writes, with the Slicer context names filled in."""
    term = dict(label.terminology)
    if not term:
        return {}
    term.setdefault("contextName", SLICER_CONTEXT)
    if "anatomicRegion" in term:
        term.setdefault("anatomicContextName", ANATOMIC_CONTEXT)
    return term
