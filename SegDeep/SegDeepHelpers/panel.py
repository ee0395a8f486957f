"""Behaviour of the SegDeep panel (``SegDeepWidget`` delegates here to keep SegDeep.py short).

The panel only talks to the logic through callbacks; the logic never touches widgets. Every Slicer
call is listed in docs/slicer-conventions.md. Qt is used as PythonQt exposes it inside Slicer: a
Q_PROPERTY is an attribute (``combo.currentIndex``, ``label.text``, ``spinBox.value``,
``checkBox.checked``, ``listWidget.count``), never called; the tests run this file under the real
PythonQt (Testing/SegDeep/pythonqt_lane.sh).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from SegDeepHelpers import catalogue, environment, jobs, segmentation
from SegDeepHelpers.crf import CrfControls, crfDefault
from SegDeepHelpers.process import ProcessRunner

DEVICES = ("auto", "cuda", "cpu")  # order of the items of deviceSelector in the .ui
SEGMENT_TEXT, CANCEL_TEXT, TRAIN_TEXT = "Segment", "Cancel", "Train"
CHECKED, USER_CHECKABLE = 2, 16  # Qt.Checked, Qt.ItemIsUserCheckable
LOG = logging.getLogger(__name__)


class SegDeepPanel:
    """Wires ``ui`` (from ``childWidgetVariables``) to ``logic``; ``tr`` translates strings."""

    def __init__(self, ui: Any, logic: Any, parameterNode: Callable[[], Any],
                 tr: Callable[[str], str] = str, cataloguePath: Optional[str] = None) -> None:
        self.ui, self.logic, self.parameterNode, self.tr = ui, logic, parameterNode, tr
        self.models = catalogue.loadCatalogue(cataloguePath)
        self.crf = CrfControls(ui, tr)
        self.environmentInfo: dict[str, Any] = {}
        self.lastResult: Any = None
        self.progress = jobs.OverallProgress()
        self._running = ""  # "", "segment" or "train"
        self.closed = False  # set by the widget's cleanup(): callbacks of a late child are dropped
        self._environmentQueried = False

    # ---- set-up ---------------------------------------------------------------------------
    def setup(self) -> None:
        ui = self.ui
        for model in self.models:
            ui.modelSelector.addItem(model.title, model.id)
        ui.modelSelector.connect("currentIndexChanged(int)", self.onModelChanged)
        ui.deviceSelector.connect("currentIndexChanged(int)", self.onDeviceChanged)
        ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        ui.editInSegmentEditorButton.connect("clicked(bool)", self.onEditInSegmentEditor)
        ui.refreshEnvironmentButton.connect("clicked(bool)", self.refreshEnvironment)
        ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        ui.copyDiagnosticsButton.connect("clicked(bool)", self.onCopyDiagnostics)
        self.crf.setup()
        if not self.models:
            ui.modelDetailsLabel.text = (catalogue.CORE_MISSING
                                         or self.tr("No models found: SegDeepLib's catalogue is empty."))
        self.onModelChanged(ui.modelSelector.currentIndex)

    def _live(self, callback: Callable[..., None]) -> Callable[..., None]:
        """``callback`` unless the panel was closed (its widgets are gone) by then."""
        return lambda *args: None if self.closed else callback(*args)

    def selectedModel(self) -> Optional[catalogue.ModelEntry]:
        index = self.ui.modelSelector.currentIndex
        return self.models[index] if 0 <= index < len(self.models) else None

    def selectedDevice(self) -> str:
        index = self.ui.deviceSelector.currentIndex
        return DEVICES[index] if 0 <= index < len(DEVICES) else "auto"

    def selectedOrgans(self) -> list[str]:
        """Ticked organs; [] when all are ticked (= the whole model, no --organs flag)."""
        items = [self.ui.organsList.item(i) for i in range(self.ui.organsList.count)]
        ticked = [item.text() for item in items if item.checkState() == CHECKED]
        return [] if len(ticked) == len(items) else ticked

    def restoreFromParameterNode(self) -> None:
        """After ``connectGui``: show the node's model (keeping its CRF values) or, for a new node,
        record the selected model and its CRF defaults."""
        node, ids = self.parameterNode(), [m.id for m in self.models]
        if node.modelId in ids and ids.index(node.modelId) != self.ui.modelSelector.currentIndex:
            self.ui.modelSelector.currentIndex = ids.index(node.modelId)
        elif node.modelId not in ids:
            self.onModelChanged(self.ui.modelSelector.currentIndex)

    # ---- reactions --------------------------------------------------------------------------
    def onModelChanged(self, index: int) -> None:
        model = self.selectedModel()
        self.ui.organsList.clear()
        node = self.parameterNode()
        # a model the parameter node already holds (restored scene) keeps the node's CRF values
        fill = node is None or model is None or node.modelId != model.id
        self.crf.setModel(model, fill=fill)
        if fill and model is not None:  # a newly chosen model: CRF on/off as the model recommends
            self.ui.crfCheckBox.checked = crfDefault(model)
            self.crf.updateEnabled()
        if model is None:
            self.updateButtons()
            return
        self.ui.modelDetailsLabel.text = catalogue.detailsHtml(model)
        for organ in model.organs:
            self.ui.organsList.addItem(organ)
            item = self.ui.organsList.item(self.ui.organsList.count - 1)
            item.setFlags(item.flags() | USER_CHECKABLE)
            item.setCheckState(CHECKED)
        if node is not None:
            node.modelId = model.id
        self.updateDeviceWarning()
        self.updateButtons()

    def onDeviceChanged(self, index: int) -> None:
        node = self.parameterNode()
        if node is not None:
            node.device = self.selectedDevice()
        self.updateDeviceWarning()

    def willRunOnCpu(self) -> bool:
        device = self.selectedDevice()
        if device == "cpu":
            return True
        return bool(self.environmentInfo) and not self.environmentInfo.get("cuda_available")

    def updateDeviceWarning(self) -> None:
        model = self.selectedModel()
        text = ""
        if model is not None and self.willRunOnCpu():
            text = self.tr(catalogue.cpuWarning(model, fast=self.ui.fastCheckBox.checked))
        self.ui.cpuWarningLabel.text = text

    def updateButtons(self) -> None:
        node = self.parameterNode()
        ready = node is not None and node.inputVolume is not None and self.selectedModel() is not None
        self.ui.applyButton.text = self.tr(CANCEL_TEXT if self._running == "segment" else SEGMENT_TEXT)
        self.ui.applyButton.enabled = self._running == "segment" or (ready and not self._running)
        self.ui.trainButton.text = self.tr(CANCEL_TEXT if self._running == "train" else TRAIN_TEXT)
        self.ui.trainButton.enabled = self._running != "segment"
        hasResult = self.lastResult is not None and self.lastResult.segmentationNode is not None
        self.ui.editInSegmentEditorButton.enabled = hasResult and not self._running
        self.crf.updateEnabled()  # CRF on/off (crfCheckBox is bound to the parameter node)

    # ---- segmentation -----------------------------------------------------------------------
    def onApplyButton(self, checked: bool = False) -> None:
        import slicer

        if self._running == "segment":
            self.logic.cancel()
            self.setStatus(self.tr("Cancelling..."))
            return
        node = self.parameterNode()
        if node.outputSegmentation is not None and not slicer.util.confirmOkCancelDisplay(
                self.tr("Update the selected segmentation? Segments with the same names are "
                        "replaced; a copy of them is kept as 'Before SegDeep ...'.")):
            return
        self.ui.logTextEdit.clear()
        options = self.runOptions()
        crf = bool(node.crf)
        self.startProgress(["preprocess", "tiles", *(["crf"] if crf else []), "postprocess", "write"])
        with slicer.util.tryWithErrorDisplay(self.tr("Failed to start the segmentation."), waitCursor=True):
            self._running = "segment"
            try:
                self.logic.segment(
                    node.inputVolume, node.modelId, node.outputSegmentation, options=options,
                    show3D=node.show3D, waitForCompletion=False,
                    onProgress=self._live(self.onProgress), onLog=self._live(self.appendLog),
                    onFinished=self._live(self.onSegmentationFinished), onState=self._live(self.onState))
            except Exception:
                self._running = ""
                raise
            finally:
                self.updateButtons()

    def runOptions(self) -> jobs.NodeOptions:
        """The run's options, all from the parameter node (``jobs.CLI_OPTIONS`` turns them into the
        command line). The organ ticks are written to the node first: a QListWidget's check boxes
        have no ``connectGui`` binding."""
        node = self.parameterNode()
        node.organs = ",".join(self.selectedOrgans())
        return jobs.NodeOptions(node, self.crf.defaults)

    def startProgress(self, expectedStages: list[str]) -> None:
        self.progress = jobs.OverallProgress(expectedStages)
        self.ui.progressBar.value = 0

    def onProgress(self, event: dict) -> None:
        """One overall bar (stage weights, never going back) and the stage's name and ETA beside it;
        the C++ CRF build of a first run is a stage like the others ("crf-build", shown as "build
        CRF extension")."""
        stage = str(event.get("stage", ""))
        self.ui.progressBar.value = round(100 * self.progress.update(stage, event.get("fraction")))
        eta = event.get("eta_s")
        etaText = f" - {self.tr('ETA')} {catalogue.formatDuration(eta)}" if eta is not None else ""
        message = f" ({event['message']})" if event.get("message") else ""
        self.setStatus(f"{self.tr(jobs.STAGE_LABELS.get(stage, stage))}{message}{etaText}")

    def onState(self, state: str) -> None:
        self.setStatus({jobs.STARTING: self.tr("Starting..."), jobs.IMPORTING: self.tr("Importing..."),
                        jobs.CANCELLING: self.tr("Cancelling...")}.get(state, self.ui.statusLabel.text))

    def setStatus(self, text: str) -> None:
        self.ui.statusLabel.text = text

    def appendLog(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)

    def onSegmentationFinished(self, result: Any) -> None:
        """Works whatever module is shown (the parameter node is kept on exit) and after a scene
        close (no node then: the result is only shown)."""
        import slicer

        self._running = ""
        if result.state == jobs.DONE:
            self.lastResult = result
            node = self.parameterNode()
            if node is not None:
                node.outputSegmentation = result.segmentationNode
            self.ui.show3DButton.setSegmentationNode(result.segmentationNode)
            self.ui.progressBar.value = round(100 * self.progress.finish())
            self.setStatus(self.tr("Done: {n} segments in {t}").format(
                n=len(result.segmentIds), t=catalogue.formatDuration(result.elapsed)))
        elif result.state == jobs.CANCELLED:
            self.setStatus(self.tr("Cancelled"))
        else:
            self.setStatus(self.tr("Failed"))
            slicer.util.errorDisplay(self.tr("Segmentation failed: ") + result.error,
                                     detailedText="\n".join(result.log))
        self.updateButtons()

    def onEditInSegmentEditor(self, checked: bool = False) -> None:
        import slicer

        node = self.parameterNode()
        with slicer.util.tryWithErrorDisplay(self.tr("Could not open the Segment Editor.")):
            segmentation.openInSegmentEditor(self.lastResult.segmentationNode,
                                             node.inputVolume if node is not None else None)

    # ---- training ---------------------------------------------------------------------------
    def onTrainButton(self, checked: bool = False) -> None:
        import slicer

        if self._running == "train":
            self.logic.cancel()
            return
        overrides = self.ui.trainOverridesLineEdit.text.split()
        with slicer.util.tryWithErrorDisplay(self.tr("Failed to start the training."), waitCursor=True):
            self._running = "train"
            try:
                self.ui.logTextEdit.clear()
                self.startProgress(["train"])
                self.logic.train(str(self.parameterNode().trainConfig), overrides,
                                 device=self.selectedDevice(), waitForCompletion=False,
                                 onProgress=self._live(self.onProgress), onLog=self._live(self.appendLog),
                                 onFinished=self._live(self.onTrainingFinished))
            except Exception:
                self._running = ""
                raise
            finally:
                self.updateButtons()

    def onTrainingFinished(self, result: Any) -> None:
        import slicer

        self._running = ""
        if result.state == jobs.DONE:
            self.ui.progressBar.value = round(100 * self.progress.finish())
        if result.state == jobs.FAILED:
            slicer.util.errorDisplay(self.tr("Training failed: ") + result.error,
                                     detailedText="\n".join(result.log))
        self.setStatus(self.tr("Training: ") + result.state)
        self.updateButtons()

    # ---- environment ------------------------------------------------------------------------
    def ensureEnvironment(self) -> None:
        """Query the environment once (on the first visit of the module), never twice at a time."""
        if not self._environmentQueried:
            self._environmentQueried = True
            self.refreshEnvironment()

    def refreshEnvironment(self, checked: bool = False) -> None:
        """Ask ``python -m SegDeepLib info --json`` in the background (torch stays out of Slicer)."""
        lines: list[str] = []
        runner = ProcessRunner([self.logic.python, "-m", "SegDeepLib", "info", "--json"],
                               env=jobs.childEnvironment(),
                               onEvent=lambda e: lines.append(str(e.get("message", ""))),
                               onFinished=self._live(lambda code: self._environmentReady(code, lines)))
        self.ui.environmentLabel.text = self.tr("Checking...")
        runner.start()
        self._pollEnvironment(runner)

    def _pollEnvironment(self, runner: ProcessRunner) -> None:
        if runner.poll():
            self.logic.schedule(100, lambda: self._pollEnvironment(runner))

    def _environmentReady(self, returncode: int, lines: list[str]) -> None:
        """Only the JSON object is parsed; other lines (a warning on stderr, a notice) are logged."""
        info, others = environment.parseInfoOutput(lines) if returncode == 0 else ({}, lines)
        for line in others:
            LOG.info("SegDeepLib info: %s", line)
        self.environmentInfo = info
        if not info:
            tail = [line for line in lines if line.strip()][-3:]
            self.ui.environmentLabel.text = self.tr("SegDeepLib could not start: ") + " ".join(tail)
            return
        self.ui.environmentLabel.text = (
            f"SegDeepLib {info.get('segdeeplib')}, PyTorch {info.get('torch')}, "
            f"CUDA build {info.get('torch_cuda_build')}\n{self.tr('CRF backends')}: "
            f"{environment.crfBackendsText(info.get('crf_backends'))}"
            + (f"\n{self.tr('Warnings')}: " + "; ".join(map(str, info["warnings"])) if info.get("warnings") else ""))
        self.ui.deviceInfoLabel.text = self.tr("Detected device: ") + environment.gpuDescription(info)
        self.updateDeviceWarning()

    def onInstallDependencies(self, checked: bool = False) -> None:
        import slicer

        requirements = environment.readRequirements(self.requirementsPath)
        installer = environment.DependencyInstaller(
            requirements, confirm=slicer.util.confirmOkCancelDisplay, log=self.appendLog)
        with slicer.util.tryWithErrorDisplay(self.tr("Installing dependencies failed."), waitCursor=True):
            installer.install()
            self.refreshEnvironment()

    requirementsPath: Any = None  # set by the widget: Resources/requirements.txt

    def diagnostics(self) -> str:
        model = self.selectedModel()
        extra = {"model": model.id if model else None, "device choice": self.selectedDevice()}
        return environment.diagnosticsText(self.environmentInfo, extra)

    def onCopyDiagnostics(self, checked: bool = False) -> None:
        import qt

        qt.QApplication.clipboard().setText(self.diagnostics())
        self.appendLog(self.diagnostics())
