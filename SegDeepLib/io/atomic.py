"""Atomic file writes: write to a temporary file in the target folder, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

from SegDeepLib.errors import SegDeepError


def umask() -> int:
    """The process umask (read without changing it for longer than one call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike, folder: bool = False) -> None:
    """Give a ``mkstemp``/``mkdtemp`` result (0600/0700) the mode a plain ``open``/``mkdir`` would."""
    os.chmod(path, (0o777 if folder else 0o666) & ~umask())


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_output_path(
    path: str | os.PathLike,
    overwrite: bool,
    inputs: tuple[str | os.PathLike, ...] = (),
    folder: bool = False,
) -> Path:
    """Check an output location before any work starts (each problem one error naming the path).

    Refuses: an output that is one of ``inputs`` (even with ``overwrite``), an existing file
    without ``overwrite``, a folder where a file is wanted (or a file where a ``folder`` is), a
    missing or non-folder parent, and a parent the process cannot create files in.
    """
    path = Path(path)
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise SegDeepError(f"{path}: is also an input; refusing to write onto an input (choose another output)")
    if path.is_dir() and not folder:
        raise SegDeepError(f"{path}: is a folder; give a file name for the output")
    if path.exists() and folder and not path.is_dir():
        raise SegDeepError(f"{path}: is a file; give a folder name for the output")
    if path.exists() and not overwrite:
        raise SegDeepError(f"{path}: already exists; choose another name or pass --overwrite")
    parent = path.parent
    if not parent.exists():
        raise SegDeepError(f"{parent}: output folder does not exist; create it first")
    if not parent.is_dir():
        raise SegDeepError(f"{parent}: is not a folder, so {path.name} cannot be written in it")
    try:
        fd, probe = tempfile.mkstemp(prefix=".segdeep-write-test.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SegDeepError(f"{parent}: cannot write in this folder ({exc.strerror or exc})") from None
    return path


def check_writable(path: Path, overwrite: bool) -> None:
    """Refuse to replace an existing file unless ``overwrite`` is set (and never a folder)."""
    if path.is_dir():
        raise SegDeepError(f"{path}: is a folder; give a file name for the output")
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
    follow_umask(tmp_path)
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
