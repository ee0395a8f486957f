"""Run the SegDeepLib CLI in a subprocess and turn its JSON-lines output into events.

Pure Python (no Slicer), so it is tested for real outside Slicer. The GUI calls :meth:`poll` from a
``qt.QTimer`` on the main thread; scripts call :meth:`wait`. A reader thread only moves lines into a
queue: callbacks always run on the thread that polls.

Nothing here blocks the GUI: cancelling sends SIGTERM (Windows: ``taskkill /T``) and returns; a
timer thread escalates to SIGKILL after ``KILL_GRACE_S`` if the child is still there. On Windows no
console window pops up (``CREATE_NO_WINDOW`` + a hidden ``STARTUPINFO``, as Slicer's
``launchConsoleProcess`` does). The child is started through ``childguard.py`` with a stdin pipe the
parent never writes to: when Slicer dies, the child sees end-of-file and stops itself.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

EventCallback = Callable[[dict[str, Any]], None]
FinishedCallback = Callable[[int], None]
EXIT_CANCELLED = 130
KILL_GRACE_S = 3.0
IS_WINDOWS = os.name == "nt"
CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW = 0x00000200, 0x08000000
CHILD_GUARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "childguard.py")
TEMP_PREFIX, OWNER_FILE = "SegDeep-", "owner.pid"


def parseLine(line: str) -> dict[str, Any]:
    """One output line -> event dict. Non-JSON lines (warnings, tracebacks) become log events."""
    text = line.rstrip("\r\n")
    if text.startswith("{"):
        try:
            event = json.loads(text)
        except json.JSONDecodeError:
            event = None
        if isinstance(event, dict) and isinstance(event.get("event"), str):
            return event
    return {"event": "log", "level": "info", "message": text}


def hiddenWindowOptions() -> dict[str, Any]:
    """``subprocess`` options that keep a console window from popping up on Windows ({} elsewhere)."""
    if not IS_WINDOWS:
        return {}
    startupInfo = subprocess.STARTUPINFO()
    startupInfo.dwFlags |= subprocess.STARTF_USESHOWWINDOW
    startupInfo.wShowWindow = 0  # SW_HIDE
    return {"startupinfo": startupInfo, "creationflags": CREATE_NO_WINDOW}


def childOptions() -> dict[str, Any]:
    """The child leads its own process group (so the whole tree can be stopped), without a window."""
    if not IS_WINDOWS:
        return {"start_new_session": True}
    options = hiddenWindowOptions()
    options["creationflags"] |= CREATE_NEW_PROCESS_GROUP
    return options


def terminateProcessTree(process: subprocess.Popen, graceSeconds: float = KILL_GRACE_S) -> None:
    """Ask ``process`` and everything it started to stop, without waiting; what is still alive after
    ``graceSeconds`` is killed by a timer thread (the caller keeps polling)."""
    if IS_WINDOWS:
        if process.poll() is None:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False, **hiddenWindowOptions())
        return
    _signalGroup(process.pid, signal.SIGTERM)
    timer = threading.Timer(graceSeconds, _signalGroup, (process.pid, signal.SIGKILL))
    timer.daemon = True
    timer.start()


def _signalGroup(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def pidAlive(pid: int) -> bool:
    """Whether a process with this id exists (it may belong to another user)."""
    if IS_WINDOWS:
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def makeJobDir() -> str:
    """A private temp folder for one run, tagged with this process's id (see :func:`sweepStaleJobDirs`)."""
    folder = tempfile.mkdtemp(prefix=TEMP_PREFIX)
    with open(os.path.join(folder, OWNER_FILE), "w", encoding="utf-8") as handle:
        handle.write(str(os.getpid()))
    return folder


def sweepStaleJobDirs() -> list[str]:
    """Remove the job folders left by a Slicer that died (their owner process is gone)."""
    root, removed = tempfile.gettempdir(), []
    for name in os.listdir(root):
        folder = os.path.join(root, name)
        if not name.startswith(TEMP_PREFIX) or not os.path.isdir(folder):
            continue
        try:
            with open(os.path.join(folder, OWNER_FILE), encoding="utf-8") as handle:
                owner = int(handle.read().strip())
        except (OSError, ValueError):
            continue  # not ours to judge (no owner recorded)
        if owner != os.getpid() and not pidAlive(owner):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class ProcessRunner:
    """A child process whose merged stdout/stderr lines are parsed into events.

    ``onEvent(event)`` receives every parsed line; ``onFinished(returncode)`` is called once, after
    all output was delivered (returncode 130 after :meth:`cancel`).
    """

    def __init__(self, args: Sequence[str], env: Optional[dict[str, str]] = None,
                 cwd: Optional[str] = None, onEvent: Optional[EventCallback] = None,
                 onFinished: Optional[FinishedCallback] = None) -> None:
        self.args = [str(a) for a in args]
        self.env, self.cwd = env, cwd
        self.onEvent, self.onFinished = onEvent, onFinished
        self.process: Optional[subprocess.Popen] = None
        self.returncode: Optional[int] = None
        self.cancelled = False
        self._lines: queue.Queue = queue.Queue()
        self._reader: Optional[threading.Thread] = None

    def start(self) -> None:
        """Start the child; its stdin is a pipe this process keeps open and never writes to (the
        child guard reads end-of-file from it when this process dies)."""
        if self.process is not None:
            raise RuntimeError("process already started")
        self.process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
            env=self.env, cwd=self.cwd, text=True, encoding="utf-8", errors="replace", bufsize=1,
            **childOptions())
        self._reader = threading.Thread(target=self._readLines, daemon=True)
        self._reader.start()

    def _readLines(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self.process.stdout.close()
        self._lines.put(None)

    @property
    def isRunning(self) -> bool:
        return self.process is not None and self.returncode is None

    def poll(self) -> bool:
        """Deliver pending events; returns True while the run is not finished."""
        if self.process is None or self.returncode is not None:
            return False
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return True
            if line is None:
                self._finish()
                return False
            if self.onEvent is not None:
                self.onEvent(parseLine(line))

    def _finish(self) -> None:
        assert self.process is not None
        code = self.process.wait()
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.returncode = EXIT_CANCELLED if self.cancelled else code
        if self.onFinished is not None:
            self.onFinished(self.returncode)

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05) -> int:
        """Block (polling) until the process ends; returns its exit code."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
            time.sleep(interval)
        assert self.returncode is not None
        return self.returncode

    def cancel(self) -> None:
        """Stop the whole process tree without waiting; :meth:`poll` then reports exit code 130."""
        if self.process is None or self.returncode is not None or self.cancelled:
            return
        self.cancelled = True
        terminateProcessTree(self.process)


def pythonExecutable() -> str:
    """PythonSlicer inside Slicer (``sys.executable`` is set to it by the app), else this Python."""
    return sys.executable
