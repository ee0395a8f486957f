"""What ``SegDeepLogic`` does: segment a volume node or train a model through the SegDeepLib CLI.

Usable without the GUI: blocking (``waitForCompletion=True``, for batch scripts) or non-blocking
with callbacks (the panel). Progress/log/finished callbacks receive plain Python values, so the
logic never touches widgets. The run is polled on the main thread with ``qt.QTimer.singleShot``.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from SegDeepHelpers import jobs, segmentation
from SegDeepHelpers.geometry import ijkToRASFromImage, sameGrid
from SegDeepHelpers.process import pythonExecutable, sweepStaleJobDirs

POLL_MS = 100


@dataclass
class RunResult:
    """Outcome of one run, handed to ``onFinished`` and returned by blocking calls."""

    state: str
    returncode: Optional[int] = None
    error: str = ""
    log: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    segmentationNode: Any = None
    segmentIds: list[str] = field(default_factory=list)
    backupNode: Any = None
    outputs: dict[str, Any] = field(default_factory=dict)


def findPythonSlicer() -> str:
    """``PythonSlicer`` next to the running Slicer, else the current interpreter."""
    return shutil.which("PythonSlicer") or pythonExecutable()


class SegDeepRunLogic:
    """Mixed into ``SegDeepLogic``. ``python`` and ``schedule`` can be swapped by tests."""

    def __init__(self, python: Optional[str] = None,
                 schedule: Optional[Callable[[int, Callable[[], None]], None]] = None) -> None:
        self.python = python or findPythonSlicer()
        self._schedule = schedule
        self.job: Optional[jobs.CliJob] = None
        sweepStaleJobDirs()  # folders of runs whose Slicer crashed

    def schedule(self, milliseconds: int, function: Callable[[], None]) -> None:
        if self._schedule is not None:
            self._schedule(milliseconds, function)
            return
        import qt

        qt.QTimer.singleShot(milliseconds, function)

    @property
    def isRunning(self) -> bool:
        return self.job is not None and self.job.state in (jobs.STARTING, jobs.RUNNING,
                                                           jobs.CANCELLING, jobs.IMPORTING)

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def segment(self, volumeNode: Any, modelId: str, segmentationNode: Any = None,
                organs: Sequence[str] = (), device: str = "auto", crf: Optional[bool] = None,
                crfParams: Optional[Mapping[str, float]] = None,
                fast: bool = False, tta: bool = False, show3D: bool = False,
                options: Any = None, waitForCompletion: bool = True, onProgress: Optional[Callable] = None,
                onLog: Optional[Callable[[str], None]] = None,
                onFinished: Optional[Callable[[RunResult], None]] = None,
                onState: Optional[Callable[[str], None]] = None) -> Any:
        """Segment ``volumeNode`` with catalogue model ``modelId``; ``crfParams`` override single
        CRF parameters of the model (``{"theta_alpha": 5.0, ...}``). ``options`` (the panel's
        ``jobs.NodeOptions`` of its parameter node, or a ``jobs.SegmentOptions``) replaces the
        keywords ``organs``, ``device``, ``crf``, ``crfParams``, ``fast`` and ``tta``.

        Blocking: returns a :class:`RunResult` (``.segmentationNode`` holds the segments; raises
        RuntimeError on failure). Non-blocking: returns at once; ``onFinished(result)`` follows.
        """
        if volumeNode is None:
            raise ValueError("select an input volume")
        if self.isRunning:
            raise RuntimeError("a SegDeep run is already in progress")
        if options is None:
            options = jobs.SegmentOptions(device=device, crf=crf, fast=fast, tta=tta,
                                          organs=tuple(organs), crfParams=dict(crfParams or {}))
        options.cliArguments()  # bad options raise here, before anything is written
        array, ijkToRAS = segmentation.volumeArrayAndMatrix(volumeNode)
        job = jobs.SegmentationJob(self.python, self._eventHandler(onProgress, onLog), onState)
        self.job = job
        holder: dict[str, RunResult] = {}

        def finished(returncode: int) -> None:
            result = self._finishSegmentation(job, returncode, volumeNode, segmentationNode,
                                              modelId, ijkToRAS, array.shape, show3D)
            holder["result"] = result
            if onFinished is not None:
                onFinished(result)

        job.start(array, ijkToRAS, modelId, options, finished)
        return self._waitOrPoll(job, waitForCompletion, holder)

    def train(self, configPath: str, overrides: Sequence[str] = (), device: str = "auto",
              waitForCompletion: bool = True, onProgress: Optional[Callable] = None,
              onLog: Optional[Callable[[str], None]] = None,
              onFinished: Optional[Callable[[RunResult], None]] = None) -> Any:
        """Train with a SegDeepLib YAML recipe (``key=value`` overrides) in a subprocess."""
        if not Path(configPath).is_file():
            raise ValueError(f"{configPath}: no such training config file")
        if self.isRunning:
            raise RuntimeError("a SegDeep run is already in progress")
        job = jobs.TrainingJob(self.python, self._eventHandler(onProgress, onLog))
        self.job = job
        holder: dict[str, RunResult] = {}

        def finished(returncode: int) -> None:
            holder["result"] = self._finishTraining(job, returncode)
            if onFinished is not None:
                onFinished(holder["result"])

        job.start(str(configPath), list(overrides), finished, device=device)
        return self._waitOrPoll(job, waitForCompletion, holder)

    def _eventHandler(self, onProgress: Optional[Callable], onLog: Optional[Callable]) -> Callable:
        def handle(event: dict[str, Any]) -> None:
            kind = event.get("event")
            if kind == "progress" and onProgress is not None:
                onProgress(event)
            elif kind in ("log", "error", "done", "metrics") and onLog is not None and event.get("message"):
                onLog(str(event["message"]))
        return handle

    def _waitOrPoll(self, job: jobs.CliJob, waitForCompletion: bool, holder: dict) -> Any:
        if not waitForCompletion:
            self.schedule(POLL_MS, lambda: self._pollJob(job))
            return job
        job.wait()
        result = holder["result"]
        if result.state == jobs.FAILED:
            raise RuntimeError(result.error)
        return result

    def _pollJob(self, job: jobs.CliJob) -> None:
        if job.poll():
            self.schedule(POLL_MS, lambda: self._pollJob(job))

    def _endState(self, job: jobs.CliJob, returncode: int) -> RunResult:
        if returncode == 0:
            outputs = job.doneEvent.get("data", {}).get("outputs") or job.doneEvent.get("outputs", {})
            return RunResult(jobs.DONE, returncode, log=job.log, outputs=outputs)
        state = jobs.CANCELLED if returncode == 130 else jobs.FAILED
        error = "Cancelled." if state == jobs.CANCELLED else job.failureText(returncode)
        return RunResult(state, returncode, error=error, log=job.log)

    def _finishSegmentation(self, job: jobs.SegmentationJob, returncode: int, volumeNode: Any,
                            segmentationNode: Any, modelId: str, ijkToRAS: Any, shape: tuple,
                            show3D: bool) -> RunResult:
        result = self._endState(job, returncode)
        try:
            if result.state == jobs.DONE:
                job._setState(jobs.IMPORTING)
                self._importResult(result, job, volumeNode, segmentationNode,
                                   modelId, ijkToRAS, shape, show3D)
        except Exception as exc:  # noqa: BLE001 - any import failure must end the job as FAILED
            result.state, result.error = jobs.FAILED, f"Could not import the result: {exc}"
        finally:
            job.cleanup()
        result.elapsed = job.elapsed
        job._setState(result.state)
        return result

    def _importResult(self, result: RunResult, job: jobs.SegmentationJob, volumeNode: Any,
                      segmentationNode: Any, modelId: str, ijkToRAS: Any, shape: tuple,
                      show3D: bool) -> None:
        """The result is on the volume's local grid: the segmentation goes under the volume's
        parent transform (if any) before the masks are written, so both are displayed alike."""
        import SimpleITK as sitk

        from SegDeepLib.io import read_segmentation

        labelmap, table = read_segmentation(job.outputPath)
        labels = sitk.GetArrayFromImage(labelmap)
        if not sameGrid(labels.shape, ijkToRASFromImage(labelmap), shape, ijkToRAS):
            raise RuntimeError("the result is not on the input volume's grid")
        if segmentationNode is None:
            segmentationNode = segmentation.newSegmentationNode(f"SegDeep {modelId}")
        else:
            result.backupNode = segmentation.backupSegments(
                segmentationNode, table, volumeNode, f"Before SegDeep {modelId}")
        transformId = segmentation.prepareSegmentation(segmentationNode, volumeNode)
        if transformId:
            name = volumeNode.GetParentTransformNode().GetName()
            job.addLog(f"input is under transform '{name}': the segmentation was placed"
                       " under the same transform")
        result.segmentIds = segmentation.importLabelArray(segmentationNode, labels, table, volumeNode)
        if show3D:
            segmentation.showIn3D(segmentationNode, True)
        result.segmentationNode = segmentationNode

    def _finishTraining(self, job: jobs.TrainingJob, returncode: int) -> RunResult:
        result = self._endState(job, returncode)
        job.cleanup()
        result.elapsed = job.elapsed
        job._setState(result.state)
        return result
