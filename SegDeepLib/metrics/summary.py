"""Aggregate per-case metric rows and write them: a per-case CSV and a summary JSON (atomic).

Non-finite values (``inf`` distances when one mask is empty, ``nan`` undefined ratios) are left
out of the statistics and counted in ``n_excluded``; they are written to the CSV as ``inf``/``nan``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from SegDeepLib.io.atomic import atomic_path

STATS = ("mean", "std", "median", "min", "max")


def describe(values: Iterable[float]) -> dict[str, Any]:
    """Mean, std (population), median, min, max of the finite values; ``n`` and ``n_excluded``."""
    values = np.asarray(list(values), dtype=np.float64)
    finite = values[np.isfinite(values)]
    out: dict[str, Any] = {"n": int(finite.size), "n_excluded": int(values.size - finite.size)}
    if finite.size:
        out.update(mean=float(finite.mean()), std=float(finite.std()), median=float(np.median(finite)),
                   min=float(finite.min()), max=float(finite.max()))
    else:
        out.update({key: None for key in STATS})
    return out


def summarize(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> dict[str, Any]:
    """Statistics per class (keyed by name) and over all (case, class) rows, for each metric."""
    per_class: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(str(row["name"]) for row in rows):
        selected = [row for row in rows if str(row["name"]) == name]
        per_class[name] = {
            "label": selected[0]["label"],
            "cases": len(selected),
            **{m: describe(row[m] for row in selected) for m in metrics},
        }
    overall = {m: describe(row[m] for row in rows) for m in metrics}
    return {"per_class": per_class, "overall": overall}


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    return value


def rows_to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """CSV text of the rows (columns in the given order); non-finite floats as ``nan``/``inf``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(c, "")) for c in columns])
    return buffer.getvalue()


def write_text(path: str | os.PathLike, text: str, overwrite: bool = False) -> Path:
    """Write a text file atomically (never a half-written file; refuses to replace unless asked)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def to_json(data: Any) -> str:
    """Strict JSON (non-finite floats become ``null``)."""
    return json.dumps(_finite(data), indent=2, allow_nan=False) + "\n"


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {str(k): _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    if isinstance(data, np.generic):
        return _finite(data.item())
    return data
