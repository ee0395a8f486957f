"""The format table (data only, no readers): which suffix holds what and whether it is written.

The table is documented with the readers and writers in :mod:`SegDeepLib.io.formats`; it lives
here, free of imports, so that :mod:`.image` and :mod:`.segmentation` can check suffixes without
importing each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from SegDeepLib.errors import SegDeepError


@dataclass(frozen=True)
class Format:
    suffix: str
    holds: str  # "image" | "segmentation" | "probabilities" | "dicom-seg"
    writable: bool


FORMATS: tuple[Format, ...] = (
    Format(".seg.nrrd", "segmentation", True),
    Format(".nii.gz", "image", True),
    Format(".nii", "image", True),
    Format(".nrrd", "image", True),
    Format(".mha", "image", True),
    Format(".nhdr", "image", False),
    Format(".mhd", "image", False),
    Format(".npy", "probabilities", True),
    Format(".dcm", "dicom-seg", True),  # written only for a DICOM series input (io.dicom_seg)
)
LABEL_MAP_SUFFIXES = tuple(
    f.suffix for f in FORMATS if f.writable and f.holds in ("segmentation", "image")
)
DICOM_SEG_SUFFIX = ".dcm"
PROBABILITY_SUFFIXES = (".npy",) + tuple(f.suffix for f in FORMATS if f.writable and f.holds == "image")


def format_of(path: str | os.PathLike) -> Format | None:
    """The table entry of ``path`` (longest matching suffix, case-insensitive), or ``None``."""
    name = Path(path).name.lower()
    for entry in sorted(FORMATS, key=lambda f: len(f.suffix), reverse=True):
        if name.endswith(entry.suffix):
            return entry
    return None


def require_suffix(path: str | os.PathLike, allowed: tuple[str, ...], what: str = "output") -> Path:
    """``path`` when it ends in one of ``allowed``, else a one-line error listing them."""
    path = Path(path)
    entry = format_of(path)
    if entry is None or entry.suffix not in allowed:
        raise SegDeepError(f"{path}: unsupported {what} format; use one of {', '.join(allowed)}")
    return path
