"""Run the SegDeepLib CLI in a subprocess and turn its JSON-lines output into events.

Pure Python (no Slicer), so it is tested for real outside Slicer. The GUI calls :meth:`poll` from a
``qt.QTimer`` on the main thread; scripts call :meth:`wait`. A reader thread only moves lines into a
queue: callbacks always run on the thread that polls.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

EventCallback = Callable[[dict[str, Any]], None]
FinishedCallback = Callable[[int], None]
EXIT_CANCELLED = 130


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


def killProcessTree(process: subprocess.Popen, graceSeconds: float = 3.0) -> None:
    """Terminate ``process`` and every process it started (it must lead its own session/group)."""
    if process.poll() is not None:
        return
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    else:
        _signalGroup(process.pid, signal.SIGTERM)
        try:
            process.wait(graceSeconds)
        except subprocess.TimeoutExpired:
            pass
        _signalGroup(process.pid, signal.SIGKILL)
    process.wait()


def _signalGroup(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


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
        if self.process is not None:
            raise RuntimeError("process already started")
        extra = {"creationflags": 0x00000200} if os.name == "nt" else {"start_new_session": True}
        self.process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self.env, cwd=self.cwd, text=True, encoding="utf-8", errors="replace", bufsize=1,
            **extra)
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
        """Kill the whole process tree; :meth:`poll` then reports exit code 130."""
        if self.process is None or self.returncode is not None:
            return
        self.cancelled = True
        killProcessTree(self.process)


def pythonExecutable() -> str:
    """PythonSlicer inside Slicer (``sys.executable`` is set to it by the app), else this Python."""
    return sys.executable
