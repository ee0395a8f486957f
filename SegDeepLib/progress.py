"""Progress reporting shared by inference and training.

A *progress callback* is any callable taking a :class:`ProgressEvent`. :class:`JsonLinesReporter`
prints one JSON object per line on stdout (``--progress json``), which the Slicer module parses::

    {"event": "progress", "stage": "tiles", "fraction": 0.42, "message": "tile 21/50", "eta_s": 12.3}
    {"event": "log", "level": "info", "message": "device: cpu (no CUDA GPU found)"}
    {"event": "done", "message": "...", "outputs": {"segmentation": "/path/out.seg.nrrd"}}
    {"event": "error", "message": "input.nii.gz: a 3D volume is needed ..."}

Cancellation: a :class:`CancelToken` is checked between units of work; ``check()`` raises
:class:`SegDeepLib.errors.CancelledError`.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, TextIO

from SegDeepLib.errors import CancelledError


@dataclass
class ProgressEvent:
    event: str = "progress"  # progress | log | done | error | metrics
    stage: str = ""
    fraction: Optional[float] = None  # of the current stage, 0..1
    message: str = ""
    eta_s: Optional[float] = None
    level: str = "info"
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v not in (None, "", {})})


ProgressCallback = Callable[[ProgressEvent], None]


class CancelToken:
    """Thread-safe cancellation flag."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise CancelledError("cancelled by the user")


class StageTimer:
    """Emit progress for one stage of ``total`` steps with an ETA from the elapsed time."""

    def __init__(self, callback: Optional[ProgressCallback], stage: str, total: int,
                 cancel: Optional[CancelToken] = None) -> None:
        self.callback, self.stage, self.total, self.cancel = callback, stage, max(int(total), 1), cancel
        self.start = time.perf_counter()
        self.done = 0

    def step(self, n: int = 1, message: str = "") -> None:
        if self.cancel is not None:
            self.cancel.check()
        self.done += n
        if self.callback is None:
            return
        fraction = min(self.done / self.total, 1.0)
        elapsed = time.perf_counter() - self.start
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else None
        self.callback(ProgressEvent(stage=self.stage, fraction=fraction, message=message, eta_s=eta))


def log(callback: Optional[ProgressCallback], message: str, level: str = "info") -> None:
    if callback is not None:
        callback(ProgressEvent(event="log", message=message, level=level))


class JsonLinesReporter:
    """Progress callback writing JSON lines to a stream (stdout by default), flushed per line."""

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, event: ProgressEvent) -> None:
        self.stream.write(event.to_json() + "\n")
        self.stream.flush()


class TextReporter:
    """Human-readable progress on stderr (the default for the CLI)."""

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self.stream = stream or sys.stderr
        self._last = ""

    def __call__(self, event: ProgressEvent) -> None:
        if event.event == "progress":
            pct = f"{100 * (event.fraction or 0):5.1f}%"
            eta = f" ETA {event.eta_s:.0f}s" if event.eta_s is not None else ""
            line = f"[{event.stage}] {pct}{eta} {event.message}".rstrip()
            if line != self._last:
                self.stream.write(line + "\n")
                self._last = line
        elif event.message:
            self.stream.write(f"{event.message}\n")
        self.stream.flush()
