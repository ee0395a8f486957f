"""Atomic file writes: write to a temporary file in the target folder, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

from SegDeepLib.errors import SegDeepError


def check_writable(path: Path, overwrite: bool) -> None:
    """Refuse to replace an existing file unless ``overwrite`` is set."""
    if path.exists() and not overwrite:
        raise SegDeepError(f"{path}: already exists; choose another name or pass overwrite/--overwrite")
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffixes); rename it onto ``path`` on success.

    The temporary file is removed if the body raises, so a crash never leaves a half-written
    output and never destroys the previous file.
    """
    target = Path(path)
    check_writable(target, overwrite)
    suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name.split('.')[0]}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], None], overwrite: bool = True) -> Path:
    """Call ``writer(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        writer(tmp)
    return Path(path)
