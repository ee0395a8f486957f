"""An inter-process build lock that dies with its owner, and SIGTERM as a cancel while building.

The lock is an OS lock on a small file (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows):
the operating system drops it when the owning process ends, however it ends (exit, SIGINT,
SIGTERM, SIGKILL, a crash), so a lock whose owner is gone is taken over at once. The owner writes
its PID and host into the file, for the waiting message of the others. The file itself stays (it
is tiny); deleting a lock file that another process may be opening would break the exclusion.

A waiter polls, reports how long it has waited, honours a :class:`~SegDeepLib.progress.CancelToken`
and stops on SIGINT/SIGTERM like any other work (see :func:`interruptible`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional

from SegDeepLib.progress import CancelToken

if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import errno
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


OWNER_OFFSET = 64  # owner text after the locked byte (Windows locks are mandatory: byte 0 unreadable)
POLL_S = 0.2
WaitCallback = Callable[[str, float], None]


class BuildInterrupted(KeyboardInterrupt):
    """A build or a wait stopped by SIGTERM (SIGINT gives Python's own KeyboardInterrupt)."""


class FileLock:
    """Exclusive lock on ``path`` held by this process; see the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; raises OSError where the file system has no locks."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_lock(fd):
                os.close(fd)
                return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._write_owner()
        return True

    def acquire(
        self,
        on_wait: Optional[WaitCallback] = None,
        cancel: Optional[CancelToken] = None,
        timeout_s: Optional[float] = None,
    ) -> bool:
        """Wait for the lock; ``on_wait(owner, waited_s)`` is called while waiting (every poll).

        Returns False after ``timeout_s`` without the lock; raises CancelledError when ``cancel``
        is set, KeyboardInterrupt on SIGINT (and SIGTERM under :func:`interruptible`).
        """
        start = time.monotonic()
        while not self.try_acquire():
            waited = time.monotonic() - start
            if on_wait is not None:
                on_wait(self.owner(), waited)
            if cancel is not None:
                cancel.check()
            if timeout_s is not None and waited >= timeout_s:
                return False
            time.sleep(POLL_S)
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            _unlock(fd)
        finally:
            os.close(fd)

    def owner(self) -> str:
        """``"PID 123 on host"`` of the last owner, or ``"unknown owner"``."""
        try:
            with open(self.path, "rb") as handle:  # past the locked byte (unreadable on Windows)
                handle.seek(OWNER_OFFSET)
                text = handle.read(256).decode("utf-8", "replace").strip("\0 \n")
        except OSError:
            text = ""
        return text or "unknown owner"

    def _write_owner(self) -> None:
        text = f"PID {os.getpid()} on {socket.gethostname()}\n".encode()
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.write(self._fd, b"\0" * OWNER_OFFSET + text)
        os.ftruncate(self._fd, OWNER_OFFSET + len(text))

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM raises :class:`BuildInterrupted` (a KeyboardInterrupt) inside the block, so a
    cancelled build cleans up its temporary folder and releases its lock like on SIGINT.

    Only in the main thread, and only where SIGTERM still has its default action (a program with
    its own handler keeps it).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise BuildInterrupted(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
