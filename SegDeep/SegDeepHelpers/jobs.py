"""One run of the SegDeepLib CLI: temporary files, command line, progress state, clean-up.

Pure Python: the caller passes the input as a KJI array + IJK-to-RAS matrix (the logic takes them
from the volume node), so the whole life cycle is tested outside Slicer with the real CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from SegDeepHelpers import crf as crfParameters
from SegDeepHelpers.geometry import writeVolumeFile
from SegDeepHelpers.process import CHILD_GUARD, ProcessRunner, makeJobDir

EventCallback = Callable[[dict[str, Any]], None]

# Explicit job states (drive one progress bar and the Segment/Cancel button).
IDLE, STARTING, RUNNING, IMPORTING, CANCELLING, DONE, FAILED, CANCELLED = (
    "idle", "starting", "running", "importing", "cancelling", "done", "failed", "cancelled")

# Relative duration of the CLI's progress stages (their own fraction restarts at 0 in each stage).
# The first run that needs the C++ CRF extension builds it as its own stage (SegDeepLib's
# docs/ARCHITECTURE.md, "The crf-build progress stage"), shown under a plain name.
BUILD_STAGE = "crf-build"
STAGE_LABELS = {BUILD_STAGE: "build CRF extension"}
STAGE_WEIGHTS = {BUILD_STAGE: 4.0, "preprocess": 1.0, "tiles": 6.0, "slices": 6.0, "crf": 2.0,
                 "postprocess": 0.5, "write": 0.5, "train": 10.0}
DEFAULT_STAGE_WEIGHT = 1.0


class OverallProgress:
    """One monotonic fraction (0..1) for a run made of stages, from the CLI's per-stage fractions.

    ``expected`` are the stages the run will go through; a stage that shows up unannounced (the CRF
    build, a cascade's second pass) adds its weight. The fraction never goes back and stays below 1
    until :meth:`finish`.
    """

    def __init__(self, expected: Sequence[str] = ()) -> None:
        self.expected = list(expected)
        self.done = 0.0  # weight of the stages already left
        self.current: Optional[str] = None
        self.fraction = 0.0

    @staticmethod
    def weight(stage: str) -> float:
        return STAGE_WEIGHTS.get(stage, DEFAULT_STAGE_WEIGHT)

    def update(self, stage: str, stageFraction: Optional[float]) -> float:
        if stage != self.current:
            if self.current is not None:
                self.done += self.weight(self.current)
                if self.current in self.expected:
                    self.expected.remove(self.current)
            self.current = stage
        remaining = sum(self.weight(s) for s in self.expected if s != stage)
        total = self.done + self.weight(stage) + remaining
        within = min(max(float(stageFraction or 0.0), 0.0), 1.0)
        value = (self.done + self.weight(stage) * within) / total
        self.fraction = max(self.fraction, min(value, 0.99))
        return self.fraction

    def finish(self) -> float:
        self.fraction = 1.0
        return self.fraction


@dataclass(frozen=True)
class CliOption:
    """How one run option (a parameter-node field of the same name) becomes CLI flags."""

    field: str  # SegDeepParameterNode / SegmentOptions attribute
    flag: str  # the SegDeepLib CLI flag
    kind: str  # value: FLAG VALUE; switch: FLAG when true; tristate: FLAG / --no-... / nothing
    # (None); list: FLAG a,b when not empty; crfParams: --crf-param NAME=VALUE per changed value


RUN_OPTIONS_FILE = Path(__file__).resolve().parent.parent / "Resources" / "SegDeepRunOptions.json"
KINDS = ("value", "switch", "tristate", "list", "crfParams")


def loadCliOptions(path: Path = RUN_OPTIONS_FILE) -> tuple[CliOption, ...]:
    """The table from parameter node to command line (Resources/SegDeepRunOptions.json), in
    command-line order. A new run option is a widget in the .ui, a field of SegDeepParameterNode and
    one row there: nothing else changes."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))["options"]
    options = tuple(CliOption(row["field"], row["flag"], row["kind"]) for row in rows)
    unknown = [option.field for option in options if option.kind not in KINDS]
    if unknown:
        raise ValueError(f"{path}: unknown kind of run option(s) {unknown}; use one of {', '.join(KINDS)}")
    return options


CLI_OPTIONS = loadCliOptions()


def _optionFlags(option: CliOption, value: Any) -> list[str]:
    if option.kind == "value":
        return [option.flag, str(value)]
    if option.kind == "switch":
        return [option.flag] if value else []
    if option.kind == "tristate":
        return [] if value is None else [option.flag if value else "--no-" + option.flag[2:]]
    if option.kind == "list":
        names = [name for name in (value.split(",") if isinstance(value, str) else value or ()) if name]
        return [option.flag, ",".join(names)] if names else []
    if option.kind == "crfParams":
        return crfParameters.cliArguments(value or {})
    raise ValueError(f"unknown kind {option.kind!r} of run option {option.field}")


def cliArguments(options: Any, table: Sequence[CliOption] = CLI_OPTIONS) -> list[str]:
    """The CLI flags of ``options``: anything with the table's fields (a :class:`SegmentOptions`,
    the parameter node); a field it lacks is left to the CLI's default."""
    device = getattr(options, "device", "auto")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if getattr(options, "crfParams", None) and getattr(options, "crf", None) is False:
        raise ValueError("CRF parameters were given but the CRF is switched off")
    args: list[str] = []
    for option in table:
        if hasattr(options, option.field):
            args += _optionFlags(option, getattr(options, option.field))
    return args


@dataclass
class SegmentOptions:
    """The run options as a plain object (for scripts: ``SegDeepLogic.segment``'s keywords); the
    same fields as the parameter node's run options, turned into CLI flags by :func:`cliArguments`."""

    device: str = "auto"  # auto | cuda | cpu
    crf: Optional[bool] = None  # None: the model's recommended setting
    fast: bool = False
    tta: bool = False
    organs: Sequence[str] = field(default_factory=tuple)
    crfParams: Mapping[str, float] = field(default_factory=dict)  # changed CRF parameters only

    def cliArguments(self) -> list[str]:
        return cliArguments(self)


class NodeOptions:
    """The run options of a parameter node, read through :data:`CLI_OPTIONS`: each field the node
    has is read from it; ``crfParams`` (not a node field) are the node's CRF values that differ from
    the model's ``crfDefaults`` (none when the CRF is off or the model has no CRF settings)."""

    def __init__(self, node: Any, crfDefaults: Optional[Mapping[str, Any]] = None,
                 table: Sequence[CliOption] = CLI_OPTIONS) -> None:
        for option in table:
            if option.kind != "crfParams" and hasattr(node, option.field):
                setattr(self, option.field, getattr(node, option.field))
        values = {p.name: getattr(node, p.attribute) for p in crfParameters.PARAMETERS}
        active = getattr(node, "crf", False) and crfDefaults is not None
        self.crfParams = crfParameters.changedValues(values, crfDefaults) if active else {}
        self.table = tuple(table)

    def cliArguments(self) -> list[str]:
        return cliArguments(self, self.table)


def libraryPath() -> str:
    """Folder that contains the SegDeepLib package (what the child needs on PYTHONPATH)."""
    import SegDeepLib

    return str(Path(SegDeepLib.__file__).resolve().parent.parent)


def childEnvironment(device: str = "auto") -> dict[str, str]:
    """Environment of the child: SegDeepLib importable, unbuffered output, CPU forced if asked."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (libraryPath(), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    return env


class CliJob:
    """A CLI run with a private temporary folder that is always removed when the run ends."""

    def __init__(self, python: str, onEvent: Optional[EventCallback] = None,
                 onState: Optional[Callable[[str], None]] = None) -> None:
        self.python = python
        self.onEvent, self.onState = onEvent, onState
        self.state = IDLE
        self.tempDir: Optional[Path] = None
        self.runner: Optional[ProcessRunner] = None
        self.log: list[str] = []
        self.errorMessage = ""
        self.doneEvent: dict[str, Any] = {}
        self.startTime = 0.0

    def _setState(self, state: str) -> None:
        self.state = state
        if self.onState is not None:
            self.onState(state)

    def makeTempDir(self) -> Path:
        self.tempDir = Path(makeJobDir())
        return self.tempDir

    def launch(self, cliArgs: Sequence[str], env: dict[str, str],
               onFinished: Callable[[int], None]) -> None:
        self._setState(STARTING)
        self.startTime = time.monotonic()
        if self.tempDir is not None:
            env = {**env, "SEGDEEP_JOB_DIR": str(self.tempDir)}  # removed by the guard if Slicer dies
        self.runner = ProcessRunner([self.python, CHILD_GUARD, "-m", "SegDeepLib", *cliArgs], env=env,
                                    onEvent=self._handleEvent, onFinished=onFinished)
        try:
            self.runner.start()
        except OSError as exc:
            self.cleanup()
            self._setState(FAILED)
            raise RuntimeError(f"could not start {self.python}: {exc}") from exc
        self._setState(RUNNING)

    def _handleEvent(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind in ("log", "error") and event.get("message"):
            self.log.append(str(event["message"]))
        if kind == "error":
            self.errorMessage = str(event.get("message", ""))
        elif kind == "done":
            self.doneEvent = event
        if self.onEvent is not None:
            self.onEvent(event)

    def addLog(self, message: str) -> None:
        """A log line from the module itself, handled like the CLI's own log lines."""
        self._handleEvent({"event": "log", "level": "info", "message": message})

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.startTime if self.startTime else 0.0

    def poll(self) -> bool:
        return self.runner.poll() if self.runner is not None else False

    def wait(self, timeout: Optional[float] = None) -> int:
        assert self.runner is not None
        return self.runner.wait(timeout)

    def cancel(self) -> None:
        if self.runner is not None and self.runner.isRunning:
            self._setState(CANCELLING)
            self.runner.cancel()

    def failureText(self, returncode: int) -> str:
        """The error to show: the CLI's own error line, else the last log lines."""
        if self.errorMessage:
            return self.errorMessage
        tail = [line for line in self.log if line.strip()][-5:]
        return f"SegDeepLib exited with code {returncode}" + (":\n" + "\n".join(tail) if tail else "")

    def cleanup(self) -> None:
        if self.tempDir is not None:
            shutil.rmtree(self.tempDir, ignore_errors=True)
            self.tempDir = None


class SegmentationJob(CliJob):
    """``segdeep segment`` on one volume. ``start`` writes the input NRRD and launches the CLI."""

    def start(self, arrayKJI: np.ndarray, ijkToRAS: np.ndarray, modelId: str,
              options: Any, onFinished: Callable[[int], None]) -> None:
        folder = self.makeTempDir()
        self.inputPath = folder / "input.nrrd"
        self.outputPath = folder / "segmentation.seg.nrrd"
        try:
            writeVolumeFile(arrayKJI, ijkToRAS, self.inputPath)
            args = ["segment", str(self.inputPath), "-o", str(self.outputPath), "--model", modelId,
                    *options.cliArguments(), "--progress", "json"]
        except Exception:
            self.cleanup()
            raise
        self.launch(args, childEnvironment(getattr(options, "device", "auto")), onFinished)


class TrainingJob(CliJob):
    """``segdeep train CONFIG.yaml`` with optional ``key=value`` overrides."""

    def start(self, configPath: str, overrides: Sequence[str],
              onFinished: Callable[[int], None], device: str = "auto") -> None:
        self.makeTempDir()
        args = ["train", str(configPath), *overrides, "--progress", "json"]
        self.launch(args, childEnvironment(device), onFinished)
