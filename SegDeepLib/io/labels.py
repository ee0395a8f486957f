"""Label tables, as :mod:`SegDeepLib.io` has always offered them.

They live in the torch-free core (:mod:`SegDeepLib.core.labels`), which the Slicer module reads too;
this module re-exports its names so existing imports keep working.
"""

from SegDeepLib.core.labels import (
    ANATOMIC_CONTEXT,
    LABELS_DIR,
    SLICER_CONTEXT,
    Label,
    LabelTable,
    load_label_table,
    slicer_terminology,
)

__all__ = [
    "ANATOMIC_CONTEXT",
    "LABELS_DIR",
    "SLICER_CONTEXT",
    "Label",
    "LabelTable",
    "load_label_table",
    "slicer_terminology",
]
