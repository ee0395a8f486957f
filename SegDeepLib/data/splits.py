"""Persisted, editable k-fold splits (nnU-Net's ``splits_final.json`` shape).

The file is a JSON list with one ``{"train": [...], "val": [...]}`` per fold. It is written once
(seeded shuffle, folds as even as possible) and then read back as is, so users may edit it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from SegDeepLib.errors import SegDeepError


def make_splits(case_ids: list[str], folds: int = 5, seed: int = 0) -> list[dict[str, list[str]]]:
    """Seeded k-fold split: every case is in exactly one validation fold."""
    ids = sorted(case_ids)
    if folds < 2:
        raise SegDeepError(f"splits: need at least 2 folds, got {folds}")
    if len(ids) < 2:
        return [{"train": list(ids), "val": list(ids)} for _ in range(folds)]
    random.Random(seed).shuffle(ids)
    parts = [ids[i::folds] for i in range(folds)]
    splits = []
    for k in range(folds):
        val = sorted(parts[k]) or sorted(parts[k % len(ids)])
        train = sorted(c for c in ids if c not in val)
        splits.append({"train": train, "val": val})
    return splits


def load_or_create_splits(path: str | Path, case_ids: list[str], folds: int = 5, seed: int = 0
                          ) -> list[dict[str, list[str]]]:
    """Read the split file, or write a new one; check that it names only known cases."""
    path = Path(path)
    if path.exists():
        splits = _read(path)
    else:
        splits = make_splits(case_ids, folds, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        from SegDeepLib.io.atomic import atomic_write

        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(splits, indent=2)))
    known = set(case_ids)
    for k, fold in enumerate(splits):
        unknown = sorted((set(fold["train"]) | set(fold["val"])) - known)
        if unknown:
            raise SegDeepError(f"{path}: fold {k} names unknown cases {unknown[:5]}; edit or delete the file")
    return splits


def _read(path: Path) -> list[dict[str, list[str]]]:
    try:
        splits = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SegDeepError(f"{path}: not valid JSON ({exc})") from None
    ok = isinstance(splits, list) and all(
        isinstance(f, dict) and isinstance(f.get("train"), list) and isinstance(f.get("val"), list) for f in splits
    )
    if not ok or not splits:
        raise SegDeepError(f"{path}: expected a list of {{'train': [...], 'val': [...]}} folds")
    return splits


def fold_cases(splits: list[dict[str, list[str]]], fold: int, case_ids: list[str]) -> tuple[list[str], list[str]]:
    """(train, val) case ids for ``fold``; fold -1 trains on everything with no validation."""
    if fold == -1:
        return sorted(case_ids), []
    if not 0 <= fold < len(splits):
        raise SegDeepError(f"data.fold {fold}: the split file has {len(splits)} folds")
    return list(splits[fold]["train"]), list(splits[fold]["val"])
