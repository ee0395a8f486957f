"""User-facing errors.

A :class:`SegDeepError` is a problem with the user's input or environment (missing file, wrong
dimension, NaN voxels, unknown label...). The CLI prints its message on one line and exits with
code 2, without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SegDeepError(Exception):
    """An actionable error caused by the user's input, config or environment."""


class CancelledError(SegDeepError):
    """The user cancelled a running operation."""
