"""Pair prediction and reference files by case name (file name without its image suffix)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from SegDeepLib.errors import SegDeepError

LABEL_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def case_name(path: str | os.PathLike) -> str | None:
    """``liver_003.nii.gz`` -> ``liver_003``; ``None`` when the file is not a label-map format."""
    name = Path(path).name
    for suffix in LABEL_SUFFIXES:  # longest compound suffixes first
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def list_cases(folder: Path) -> dict[str, Path]:
    """Case name -> file for the label-map files directly in ``folder`` (hidden files skipped)."""
    cases: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        name = case_name(path)
        if name is None or path.name.startswith(".") or not path.is_file():
            continue
        if name in cases:
            raise SegDeepError(f"{folder}: two files for case {name!r} ({cases[name].name}, {path.name}); "
                               "keep one")
        cases[name] = path
    return cases


@dataclass
class CasePairs:
    """Matched (case, prediction, reference) triples and the files left without a partner."""

    pairs: list[tuple[str, Path, Path]]
    unmatched_predictions: list[str] = field(default_factory=list)
    unmatched_references: list[str] = field(default_factory=list)


def match_cases(pred: str | os.PathLike, ref: str | os.PathLike) -> CasePairs:
    """Pair two files, or two folders by case name. Raises when nothing pairs up."""
    pred, ref = Path(pred), Path(ref)
    for path, what in ((pred, "prediction"), (ref, "reference")):
        if not path.exists():
            raise SegDeepError(f"{path}: no such file or folder ({what})")
    if pred.is_dir() != ref.is_dir():
        raise SegDeepError(f"{pred} and {ref}: give two files or two folders, not one of each")
    if not pred.is_dir():
        return CasePairs([(case_name(ref) or ref.name, pred, ref)])
    preds, refs = list_cases(pred), list_cases(ref)
    common = sorted(set(preds) & set(refs))
    if not common:
        raise SegDeepError(f"{pred} and {ref}: no case names in common (predictions: "
                           f"{_preview(preds)}; references: {_preview(refs)}); cases are matched by "
                           "file name without the image suffix")
    return CasePairs(
        [(name, preds[name], refs[name]) for name in common],
        sorted(set(preds) - set(refs)),
        sorted(set(refs) - set(preds)),
    )


def _preview(cases: dict[str, Path], limit: int = 5) -> str:
    if not cases:
        return "none"
    names = sorted(cases)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
