"""SegDeep: deep-learning organ segmentation for CT and MRI (3D Slicer scripted module).

The four Slicer classes only; behaviour lives in the ``SegDeepHelpers`` sub-package and the
computation in the pure-Python ``SegDeepLib`` library, run in a subprocess.
"""

import logging
import os
import pathlib
from typing import Annotated

import slicer
import vtk
from SegDeepHelpers import crf as crfTable
from SegDeepHelpers.logic import SegDeepRunLogic
from SegDeepHelpers.panel import SegDeepPanel
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


class SegDeep(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SegDeep")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["SegDeep developers"]
        self.parent.helpText = _(
            "Segment organs in CT and MRI with deep networks (V-Net, 3D U-Net cascade, PNet-MSA,"
            " FCN) and optional CRF refinement. Pick a volume and a model, click Segment; correct"
            " the result in the Segment Editor. Runs in a background process that can be cancelled.")
        self.parent.acknowledgementText = _(
            "Networks re-implemented from their papers; see the SegDeep README for references.")


def _crfRange(attribute: str) -> WithinRange:
    return WithinRange(*crfTable.nodeRange(attribute))


@parameterNodeWrapper
class SegDeepParameterNode:
    """Panel state, saved with the scene. The run options (device ... organs) are turned into the
    command line by the table Resources/SegDeepRunOptions.json (field name -> CLI flag)."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    modelId: str = ""
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    crf: bool = True
    # CRF parameters: limits and defaults from SegDeepLib's CRF parameter table (SegDeepHelpers.crf);
    # the selected model's defaults replace these. WithinRange = the .ui spin-box limits: without it
    # connectGui opens the range to +-inf.
    crfThetaAlpha: Annotated[float, _crfRange("crfThetaAlpha")] = crfTable.nodeDefault("crfThetaAlpha")
    crfThetaBeta: Annotated[float, _crfRange("crfThetaBeta")] = crfTable.nodeDefault("crfThetaBeta")
    crfThetaGamma: Annotated[float, _crfRange("crfThetaGamma")] = crfTable.nodeDefault("crfThetaGamma")
    crfW1: Annotated[float, _crfRange("crfW1")] = crfTable.nodeDefault("crfW1")
    crfW2: Annotated[float, _crfRange("crfW2")] = crfTable.nodeDefault("crfW2")
    crfIterations: Annotated[int, _crfRange("crfIterations")] = crfTable.nodeDefault("crfIterations")
    fast: bool = False
    tta: bool = False
    organs: str = ""  # ticked organs, comma-separated; "": all of the model's (no --organs)
    show3D: bool = True
    trainConfig: pathlib.Path


class SegDeepWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.panel = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SegDeep.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SegDeepLogic()
        self.panel = SegDeepPanel(self.ui, self.logic, lambda: self._parameterNode, _)
        self.panel.requirementsPath = self.resourcePath("requirements.txt")
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.panel.setup()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.panel.closed = True  # a run still ending must not touch the deleted widgets
        self.logic.cancel()  # returns at once; the child is killed in the background
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self.panel.ensureEnvironment()  # first visit: detect torch/GPU in the background

    def exit(self) -> None:
        """As Slicer's template: stop following the GUI but keep the node (a run may finish now)."""
        if self._parameterNode:
            self._disconnect()

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def _disconnect(self) -> None:
        if self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
        self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._disconnect()
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.panel.restoreFromParameterNode()
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
            self.onParameterChanged()

    def onParameterChanged(self, caller=None, event=None) -> None:
        self.panel.updateButtons()


class SegDeepLogic(ScriptedLoadableModuleLogic, SegDeepRunLogic):
    """``segment(volumeNode, modelId, ...)`` and ``train(configPath, ...)``, with or without GUI."""

    def __init__(self, python=None, schedule=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        SegDeepRunLogic.__init__(self, python, schedule)

    def getParameterNode(self):
        return SegDeepParameterNode(super().getParameterNode())


class SegDeepTest(ScriptedLoadableModuleTest):
    """Self-test in Slicer: a tiny synthetic volume segmented with the first catalogue model."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegDeepSmallVolume()

    def test_SegDeepSmallVolume(self):
        import numpy as np
        from SegDeepHelpers import environment
        from SegDeepHelpers.catalogue import loadCatalogue

        if not environment.torchPresent():
            self.delayDisplay("SegDeep self-test skipped: PyTorch is not installed (install it from "
                              "SegDeep's Environment section or the PyTorch extension)")
            return
        models = loadCatalogue()
        if not models:
            self.delayDisplay("No SegDeep model installed: nothing to test")
            return
        self.delayDisplay("Segmenting a small synthetic volume")
        ijkToRAS = np.diag([-2.0, -2.0, 3.0, 1.0])
        array = np.full((24, 48, 48), -1000, dtype=np.int16)
        array[4:20, 10:38, 10:38] = 40  # soft tissue
        array[8:16, 14:30, 12:28] = 150  # contrast-enhanced organ
        volume = slicer.util.addVolumeFromArray(array, ijkToRAS, "SegDeepTestVolume")
        result = SegDeepLogic().segment(volume, models[0].id, device="cpu", fast=True,
                                        waitForCompletion=True)
        self.assertIsNotNone(result.segmentationNode)
        logging.getLogger(__name__).info("SegDeep self-test: %d segments in %.1f s (%s)", len(result.segmentIds),
                     result.elapsed, os.path.basename(models[0].id))
        self.delayDisplay("Test passed")
