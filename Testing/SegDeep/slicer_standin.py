"""A strict stand-in for Slicer's Python modules (``slicer``, ``slicer.util``, ``qt``, ``ctk``, ``vtk``...).

It offers ONLY the API names listed in ../shared/docs/slicer-conventions.md (every one of them
verified against Slicer's source) and the few in ``VERIFIED_ELSEWHERE`` (each with the Slicer source
file and commit it was checked in); any other attribute of a module raises AttributeError, and the
fake objects define no catch-all ``__getattr__``, so a misspelt or invented Slicer call fails the
tests. Geometry is real numpy maths: volume nodes hold a KJI array and a 4x4 IJK-to-RAS matrix;
segments hold a binary mask on their reference volume's grid.

Qt is the real one: the stand-in runs inside the PythonQt host of ../shared/tools/pythonqt (the
binding Slicer embeds), :func:`loadUI` uses the real ``QUiLoader`` and only Slicer's own widget
classes (qMRML*, ctk*) are stand-ins, subclasses of their real Qt bases that follow PythonQt's rules
(properties are attributes). Test code drives widgets like a user (:func:`chooseNode`,
:func:`click`, :func:`closeScene`, :func:`runEventLoop`...).
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import types
import typing
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

# Names the module code may use, per stand-in module (all from slicer-conventions.md; Qt is the real one).
ALLOWED: dict[str, set[str]] = {}
# Slicer API names NOT in slicer-conventions.md, each verified in Slicer's source: name -> where.
_TRANSFORMABLE_H = ("Libs/MRML/Core/vtkMRMLTransformableNode.h, Slicer/Slicer at commit "
                    "1a324de7ccc49ed1a81f923646d0e340592745ec (vtkMRMLTransformableNode)")
_NODE_H = ("Libs/MRML/Core/vtkMRMLNode.h, Slicer/Slicer at commit "
           "0276e1d23a5b0d8aa471ed8b0f1aa5f42072dc15 (vtkMRMLNode: vtkGetStringMacro(Name))")
_COMBO_H = ("Libs/MRML/Widgets/qMRMLNodeComboBox.h, Slicer/Slicer at commit "
            "06536db4cbc56614bb74ea6938044ca66dc603e4 (Q_INVOKABLE currentNode; slot setCurrentNode)")
_SHOW3D_H = ("Modules/Loadable/Segmentations/Widgets/qMRMLSegmentationShow3DButton.h, Slicer/Slicer at "
             "commit 25ff1d74b85e5044a31e341374286e4156065a71 (Q_INVOKABLE segmentationNode; no setMRMLScene)")
VERIFIED_ELSEWHERE: dict[str, str] = {
    "GetName": _NODE_H,
    "currentNode": _COMBO_H,
    "setCurrentNode": _COMBO_H,
    "segmentationNode": _SHOW3D_H,
    "GetTransformNodeID": _TRANSFORMABLE_H,
    "SetAndObserveTransformNodeID": _TRANSFORMABLE_H,
    "GetParentTransformNode": _TRANSFORMABLE_H,
}
RECORD: list[tuple[str, str]] = []  # (owner, name) of every stand-in API call, for the report


class StrictModule(types.ModuleType):
    """A module object that refuses every name it was not explicitly given."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"{self.__name__}.{name} is not in slicer-conventions.md (stand-in refuses it)")


def _module(name: str, **members: Any) -> StrictModule:
    module = StrictModule(name)
    for key, value in members.items():
        setattr(module, key, _recorded(name, key, value) if callable(value) and not isinstance(value, type) else value)
    ALLOWED[name] = set(members)
    return module


def _recorded(owner: str, name: str, function: Callable) -> Callable:
    def wrapper(*args, **kwargs):
        RECORD.append((owner, name))
        return function(*args, **kwargs)
    wrapper.__name__ = name
    return wrapper


def _record(owner: str, name: str) -> None:
    RECORD.append((owner, name))


# ================================================================ vtk ===========================
class vtkMatrix4x4:
    """Holds its 4x4 values in numpy; read through slicer.util.arrayFromVTKMatrix."""

    def __init__(self) -> None:
        self._m = np.eye(4)


class vtkCommand:
    ModifiedEvent = 33


class _Observable:
    """AddObserver/Modified support shared by fake MRML objects (VTK semantics)."""

    def __init__(self) -> None:
        self._observers: list[tuple[int, Callable]] = []

    def AddObserver(self, event: Any, callback: Callable) -> int:
        self._observers.append((event, callback))
        return len(self._observers)

    def RemoveObserver(self, tag: int) -> None:
        self._observers[tag - 1] = (None, lambda *a: None)

    def Modified(self) -> None:
        self._invoke(vtkCommand.ModifiedEvent)

    def _invoke(self, event: Any) -> None:
        for observed, callback in list(self._observers):
            if observed == event:
                callback(self, event)


# ================================================================ MRML ==========================
_ids = itertools.count(1)


class _Node(_Observable):
    className = "vtkMRMLNode"

    def __init__(self, name: str = "") -> None:
        super().__init__()
        self._id = f"{self.className}{next(_ids)}"
        self._name = name
        self._references: dict[str, str] = {}

    def GetID(self) -> str:
        _record(self.className, "GetID")
        return self._id

    def SetName(self, name: str) -> None:
        self._name = name

    def GetName(self) -> str:
        _record(self.className, "GetName")
        return self._name

    def SetNodeReferenceID(self, role: str, nodeId: str) -> None:
        _record(self.className, "SetNodeReferenceID")
        self._references[role] = nodeId


class _TransformableNode(_Node):
    """vtkMRMLTransformableNode: the parent-transform reference of volumes, segmentations and
    transforms (names in ``VERIFIED_ELSEWHERE``). Transforms carry no geometry here: nodes under
    the same transform share a frame, which is all the module relies on."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._transformNodeId: Optional[str] = None

    def GetTransformNodeID(self) -> Optional[str]:
        _record(self.className, "GetTransformNodeID")
        return self._transformNodeId

    def SetAndObserveTransformNodeID(self, transformNodeID: Optional[str]) -> bool:
        _record(self.className, "SetAndObserveTransformNodeID")
        if transformNodeID is not None and not isinstance(transformNodeID, str):
            raise TypeError("SetAndObserveTransformNodeID takes a node ID (str) or None")
        if transformNodeID is not None and not isinstance(_nodeById(transformNodeID), vtkMRMLTransformNode):
            raise AssertionError(f"stand-in: no transform node {transformNodeID} in the scene")
        self._transformNodeId = transformNodeID
        return True

    def GetParentTransformNode(self) -> Optional[Any]:
        _record(self.className, "GetParentTransformNode")
        return _nodeById(self._transformNodeId) if self._transformNodeId else None


def _nodeById(nodeId: str) -> Optional[_Node]:
    return next((n for n in slicer.mrmlScene._nodes if n._id == nodeId), None)


class vtkMRMLTransformNode(_TransformableNode):
    """A transform (linear or not); tests add one with :func:`addTransformNode`."""

    className = "vtkMRMLTransformNode"


class vtkMRMLScalarVolumeNode(_TransformableNode):
    className = "vtkMRMLScalarVolumeNode"

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._array = np.zeros((1, 1, 1), dtype=np.int16)
        self._ijkToRAS = np.eye(4)

    def GetIJKToRASMatrix(self, matrix: vtkMatrix4x4) -> None:
        _record(self.className, "GetIJKToRASMatrix")
        matrix._m = self._ijkToRAS.copy()


class vtkSegment:
    """Slicer >= 5.10 segment (has SetTerminology)."""

    def __init__(self, name: str, color: tuple) -> None:
        self._name, self._color = name, tuple(color)
        self._tags: dict[str, str] = {}
        self._mask: Optional[np.ndarray] = None

    def SetName(self, name: str) -> None:
        _record("vtkSegment", "SetName")
        self._name = name

    def GetName(self) -> str:
        _record("vtkSegment", "GetName")
        return self._name

    def SetColor(self, r: float, g: float, b: float) -> None:
        _record("vtkSegment", "SetColor")
        self._color = (r, g, b)

    def SetTag(self, key: str, value: str) -> None:
        _record("vtkSegment", "SetTag")
        self._tags[key] = value

    def GetTerminologyEntryTagName(self) -> str:
        _record("vtkSegment", "GetTerminologyEntryTagName")
        return "TerminologyEntry"

    def SetTerminology(self, entry: str) -> None:
        _record("vtkSegment", "SetTerminology")
        self._tags["TerminologyEntry"] = entry


class vtkSegment58:
    """Slicer 5.8 segment: no SetTerminology (only the tag API)."""

    SetName, GetName, SetColor, SetTag = vtkSegment.SetName, vtkSegment.GetName, vtkSegment.SetColor, vtkSegment.SetTag
    GetTerminologyEntryTagName = vtkSegment.GetTerminologyEntryTagName
    __init__ = vtkSegment.__init__


SEGMENT_CLASS: list[type] = [vtkSegment]


class vtkSegmentation:
    def __init__(self) -> None:
        self._segments: dict[str, Any] = {}

    def AddEmptySegment(self, segmentId: str = "", segmentName: str = "", color: Any = None) -> str:
        _record("vtkSegmentation", "AddEmptySegment")
        segmentId = segmentId or f"Segment_{len(self._segments) + 1}"
        while segmentId in self._segments:
            segmentId += "_"
        self._segments[segmentId] = SEGMENT_CLASS[0](segmentName or segmentId, color or (0.5, 0.5, 0.5))
        return segmentId

    def GetSegment(self, segmentId: str) -> Any:
        _record("vtkSegmentation", "GetSegment")
        return self._segments.get(segmentId)

    def GetSegmentIdBySegmentName(self, name: str) -> str:
        _record("vtkSegmentation", "GetSegmentIdBySegmentName")
        # vtkSegmentation.cxx: the comparison is case-insensitive ("Liver" is found by "liver")
        return next((sid for sid, s in self._segments.items() if s._name.lower() == name.lower()), "")

    def GetSegmentIDs(self) -> list[str]:
        _record("vtkSegmentation", "GetSegmentIDs")
        return list(self._segments)

    def GetNumberOfSegments(self) -> int:
        return len(self._segments)

    def RemoveSegment(self, segmentId: str) -> None:
        del self._segments[segmentId]


class vtkMRMLSegmentationNode(_TransformableNode):
    className = "vtkMRMLSegmentationNode"

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._segmentation = vtkSegmentation()
        self._referenceVolume: Optional[vtkMRMLScalarVolumeNode] = None
        self._displayNodes = False
        self._closedSurface = False

    def CreateDefaultDisplayNodes(self) -> None:
        _record(self.className, "CreateDefaultDisplayNodes")
        self._displayNodes = True

    def GetSegmentation(self) -> vtkSegmentation:
        _record(self.className, "GetSegmentation")
        return self._segmentation

    def SetReferenceImageGeometryParameterFromVolumeNode(self, volume: vtkMRMLScalarVolumeNode) -> None:
        _record(self.className, "SetReferenceImageGeometryParameterFromVolumeNode")
        self._referenceVolume = volume

    def GetReferenceImageGeometryReferenceRole(self) -> str:
        _record(self.className, "GetReferenceImageGeometryReferenceRole")
        return "referenceImageGeometryRef"

    def CreateClosedSurfaceRepresentation(self) -> bool:
        _record(self.className, "CreateClosedSurfaceRepresentation")
        self._closedSurface = True
        return True

    def RemoveClosedSurfaceRepresentation(self) -> None:
        _record(self.className, "RemoveClosedSurfaceRepresentation")
        self._closedSurface = False


class vtkMRMLScriptedModuleNode(_Node):
    className = "vtkMRMLScriptedModuleNode"

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._parameters: dict[str, Any] = {}
        self._singletonTag: Optional[str] = None


class vtkMRMLSubjectHierarchyNode(_Node):
    className = "vtkMRMLSubjectHierarchyNode"

    def __init__(self) -> None:
        super().__init__("SubjectHierarchy")
        self._items: dict[int, Any] = {}  # item -> data node
        self._parents: dict[int, int] = {}

    def _itemFor(self, node: Any) -> int:
        for item, data in self._items.items():
            if data is node:
                return item
        item = 100 + len(self._items)
        self._items[item] = node
        self._parents[item] = 1  # scene item
        return item

    def GetItemByDataNode(self, node: Any) -> int:
        _record(self.className, "GetItemByDataNode")
        return self._itemFor(node)

    def GetItemParent(self, item: int) -> int:
        _record(self.className, "GetItemParent")
        return self._parents.get(item, 0)

    def SetItemParent(self, item: int, parent: int) -> None:
        _record(self.className, "SetItemParent")
        self._parents[item] = parent


class vtkMRMLScene(_Observable):
    StartCloseEvent = 66000
    EndCloseEvent = 66001
    _classes = {"vtkMRMLSegmentationNode": vtkMRMLSegmentationNode,
                "vtkMRMLScalarVolumeNode": vtkMRMLScalarVolumeNode,
                "vtkMRMLScriptedModuleNode": vtkMRMLScriptedModuleNode}

    def __init__(self) -> None:
        super().__init__()
        self._nodes: list[_Node] = []
        self._sh = vtkMRMLSubjectHierarchyNode()

    def AddNewNodeByClass(self, className: str, name: str = "") -> _Node:
        _record("vtkMRMLScene", "AddNewNodeByClass")
        node = self._classes[className](name)
        self._nodes.append(node)
        return node

    def GetSubjectHierarchyNode(self) -> vtkMRMLSubjectHierarchyNode:
        _record("vtkMRMLScene", "GetSubjectHierarchyNode")
        return self._sh

    def Clear(self, removeSingletons: bool = False) -> None:
        """Scene close removes every node; the module's singleton parameter node goes with it."""
        self._nodes.clear()
        self._sh = vtkMRMLSubjectHierarchyNode()


# ================================================================ Qt: the real PythonQt =========
# Qt itself is never faked: the stand-in runs under ../shared/tools/pythonqt/pythonqt-python (the
# PythonQt that Slicer embeds), so ``qt`` is Slicer's ``qt`` module with PythonQt's semantics
# (Q_PROPERTYs are attributes: ``combo.currentIndex`` is an int). Only Slicer's own C++ widgets
# (CTK, qMRML) are stood in for, as Python subclasses of their real Qt base classes that follow the
# same rules: their Q_PROPERTYs are attributes, their slots methods, their signals strings.
try:
    import PythonQt  # noqa: F401 - present only inside a PythonQt host
    import qt
except ImportError:
    qt = None

PYTHONQT = qt is not None
NOT_PYTHONQT = ("the Slicer stand-in needs the real PythonQt: run these tests under "
                "../shared/tools/pythonqt/pythonqt-python (scripts/pythonqt_lane.sh; `make test` does)")


class _SlicerSignals:
    """PythonQt's ``connect``/``disconnect`` for the signals that only Slicer's C++ classes declare;
    every other signal goes to the real QObject (which refuses unknown ones)."""

    SIGNALS: tuple = ()

    def connect(self, signal: str, slot: Callable) -> bool:
        if signal in self.SIGNALS:
            self._slotsOf(signal).append(slot)
            return True
        return qt.QObject.connect(self, signal, slot)

    def disconnect(self, signal: str, slot: Callable) -> bool:
        if signal in self.SIGNALS:
            slots = self._slotsOf(signal)
            if slot in slots:
                slots.remove(slot)
                return True
            return False
        return qt.QObject.disconnect(self, signal, slot)

    def _slotsOf(self, signal: str) -> list:
        table = getattr(self, "_customSlots", None)
        if table is None:
            table = {}
            self._customSlots = table
        return table.setdefault(signal, [])

    def _emitSignal(self, signal: str, *args: Any) -> None:
        for slot in list(self._slotsOf(signal)):
            slot(*args)


if PYTHONQT:
    class qMRMLWidget(_SlicerSignals, qt.QWidget):
        """Top widget of a module .ui: ``setMRMLScene`` emits ``mrmlSceneChanged(vtkMRMLScene*)``."""

        SIGNALS = ("mrmlSceneChanged(vtkMRMLScene*)",)

        def setMRMLScene(self, scene: Any) -> None:
            _record("qMRMLWidget", "setMRMLScene")
            self._emitSignal("mrmlSceneChanged(vtkMRMLScene*)", scene)

    class qMRMLNodeComboBox(_SlicerSignals, qt.QWidget):
        """Node selector (qMRMLNodeComboBox.h, names in ``VERIFIED_ELSEWHERE``); its Q_PROPERTYs
        (nodeTypes, addEnabled...) come from the .ui as attributes."""

        SIGNALS = ("currentNodeChanged(vtkMRMLNode*)",)

        def __init__(self, parent: Any = None) -> None:
            qt.QWidget.__init__(self, parent)
            self._node, self._scene = None, None

        def setMRMLScene(self, scene: Any) -> None:
            _record("qMRMLNodeComboBox", "setMRMLScene")
            self._scene = scene

        def currentNode(self) -> Any:
            _record("qMRMLNodeComboBox", "currentNode")
            return self._node

        def setCurrentNode(self, node: Any) -> None:
            _record("qMRMLNodeComboBox", "setCurrentNode")
            if node is not self._node:
                self._node = node
                self._emitSignal("currentNodeChanged(vtkMRMLNode*)", node)

    class qMRMLSegmentationShow3DButton(qt.QPushButton):
        """A ctkMenuButton (a QPushButton) with ``setSegmentationNode``; it has NO setMRMLScene slot
        (qMRMLSegmentationShow3DButton.h)."""

        def __init__(self, parent: Any = None) -> None:
            qt.QPushButton.__init__(self, parent)
            self._segmentationNode = None

        def setSegmentationNode(self, node: Any) -> None:
            _record("qMRMLSegmentationShow3DButton", "setSegmentationNode")
            self._segmentationNode = node

        def segmentationNode(self) -> Any:
            _record("qMRMLSegmentationShow3DButton", "segmentationNode")
            return self._segmentationNode

    class ctkCollapsibleButton(qt.QGroupBox):
        """Drawn as a group box titled with its ``text``; ``collapsed`` is a property (attribute)."""

    class ctkPathLineEdit(_SlicerSignals, qt.QWidget):
        """``currentPath`` is a Q_PROPERTY (an attribute); ``currentPathChanged(QString)`` a signal."""

        SIGNALS = ("currentPathChanged(QString)",)

        def __init__(self, parent: Any = None) -> None:
            qt.QWidget.__init__(self, parent)
            layout = qt.QHBoxLayout(self)
            layout.setContentsMargins(0, 0, 0, 0)
            self._edit = qt.QLineEdit(self)
            layout.addWidget(self._edit)

        @property
        def currentPath(self) -> str:
            return self._edit.text

        @currentPath.setter
        def currentPath(self, path: str) -> None:
            if str(path) != self._edit.text:
                self._edit.text = str(path)
                self._emitSignal("currentPathChanged(QString)", str(path))

    class _ModulePanel(qt.QWidget):
        """qSlicerScriptedLoadableModuleWidget: ``isEntered`` is a property (an attribute)."""

        def __init__(self, parent: Any = None) -> None:
            qt.QWidget.__init__(self, parent)
            self.isEntered = False

    SLICER_WIDGETS = {cls.__name__: cls for cls in (
        qMRMLWidget, qMRMLNodeComboBox, qMRMLSegmentationShow3DButton, ctkCollapsibleButton,
        ctkPathLineEdit)}

    class _SlicerUiLoader(qt.QUiLoader):
        """The real QUiLoader; Slicer's own widget classes are created from the stand-ins above."""

        def createWidget(self, className: str, parent: Any = None, name: str = "") -> Any:
            if className in SLICER_WIDGETS:
                widget = SLICER_WIDGETS[className](parent)
                widget.objectName = name
                LIVE_WIDGETS.append(widget)  # a Python-made widget must outlive this call (and keep
                return widget                # its Python attributes): PythonQt owns it otherwise
            return qt.QUiLoader.createWidget(self, className, parent, name)
else:
    SLICER_WIDGETS = {}
LIVE_WIDGETS: list = []  # the stand-in widgets of the current test (cleared by build())


def runEventLoop(until: Callable[[], bool], timeout: float = 60.0) -> None:
    """Process Qt events (timers included) until ``until()`` is true, as Slicer's event loop would."""
    import time

    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise TimeoutError("event loop: condition not reached")
        qt.QApplication.processEvents()
        time.sleep(0.005)


# ================================================================ .ui loading ===================
def _connections(root: ET.Element) -> list[tuple[str, ...]]:
    return [tuple(c.findtext(t) for t in ("sender", "signal", "receiver", "slot"))
            for c in root.iter("connection")]


def loadUI(path: str) -> Any:
    """``slicer.util.loadUI``: the real QUiLoader, then the .ui's ``<connections>`` made through
    PythonQt (a slot the receiver's class does not have is an error, as in Slicer's log)."""
    if not PYTHONQT:
        raise RuntimeError(NOT_PYTHONQT)
    root = ET.parse(path).getroot()
    custom = {c.findtext("class") for c in root.iter("customwidget")}
    if custom - set(SLICER_WIDGETS):
        raise AssertionError(f"{path}: widget classes {sorted(custom - set(SLICER_WIDGETS))} have no stand-in")
    connections = _connections(root)
    for element in root.findall("connections"):
        root.remove(element)
    buffer = qt.QBuffer()
    buffer.setData(qt.QByteArray(ET.tostring(root)))
    buffer.open(qt.QIODevice.ReadOnly)
    widget = _SlicerUiLoader().load(buffer)
    if widget is None:
        raise AssertionError(f"{path}: QUiLoader could not load it")
    named = {child.objectName: child for child in widget.findChildren(qt.QWidget) if child.objectName}
    named[widget.objectName] = widget
    for child in named.values():
        if isinstance(child, ctkCollapsibleButton):
            child.title = child.property("text") or ""
    for sender, signal, receiver, slot in connections:
        method = getattr(named[receiver], slot.split("(")[0], None)
        if not callable(method):
            raise AssertionError(f"{path}: <connection> {sender}.{signal} -> {receiver}.{slot}: "
                                 f"{type(named[receiver]).__name__} has no slot {slot}")
        if not named[sender].connect(signal, method):
            raise AssertionError(f"{path}: <connection>: {sender} has no signal {signal}")
    return widget


def childWidgetVariables(widget: Any) -> types.SimpleNamespace:
    """Every named child widget as an attribute (Slicer's ``childWidgetVariables``)."""
    children = [child for child in widget.findChildren(qt.QWidget) if child.objectName]
    return types.SimpleNamespace(**{child.objectName: child for child in children})


# ================================================================ test drivers ==================
def chooseNode(combo: Any, node: Any) -> None:
    """What a user does with a node selector."""
    combo.setCurrentNode(node)


def click(button: Any) -> None:
    button.click()


def choosePath(pathEdit: Any, path: str) -> None:
    """What a user does with a path line edit (browse or type)."""
    pathEdit.currentPath = str(path)


def addTransformNode(name: str = "Transform") -> vtkMRMLTransformNode:
    """What a user does in the Transforms module: a new transform node in the scene."""
    node = vtkMRMLTransformNode(name)
    slicer.mrmlScene._nodes.append(node)
    return node


def closeScene() -> None:
    """File > Close scene: StartCloseEvent, every node (singletons too) removed, EndCloseEvent."""
    scene = slicer.mrmlScene
    scene._invoke(scene.StartCloseEvent)
    scene.Clear(True)
    scene._invoke(scene.EndCloseEvent)


def enterModule(widget: Any) -> None:
    """The user opens the module (Slicer sets ``isEntered``, then calls ``enter``)."""
    widget.parent.isEntered = True
    widget.enter()


def leaveModule(widget: Any) -> None:
    """The user switches to another module."""
    widget.exit()
    widget.parent.isEntered = False


# ================================================================ parameterNodeWrapper ==========
class Choice:
    def __init__(self, choices: list) -> None:
        self.choices = list(choices)


class WithinRange:
    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum, self.maximum = minimum, maximum


def _unannotated(hint: Any) -> Any:
    return typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint


def _annotation(hint: Any, kind: type) -> Any:
    return next((m for m in getattr(hint, "__metadata__", ()) if isinstance(m, kind)), None)


def _spinBoxRange(widget: Any, hint: Any, integer: bool) -> None:
    """What Slicer's spin-box GUI connectors do: the range comes from ``WithinRange``, else it is
    opened to (-2^31, 2^31-1) for QSpinBox and (-inf, inf) for QDoubleSpinBox (guiConnectors.py)."""
    within = _annotation(hint, WithinRange)
    if within is not None:
        widget.minimum, widget.maximum = within.minimum, within.maximum
    elif integer:
        widget.minimum, widget.maximum = -2**31, 2**31 - 1
    else:
        widget.minimum, widget.maximum = float("-inf"), float("inf")


def _connector(widget: Any, hint: Any) -> tuple[str, Callable, Callable]:
    """(signal, read, write) for one widget, as Slicer's guiConnectors.py pairs widgets and types."""
    kind = _unannotated(hint)
    if isinstance(widget, qMRMLNodeComboBox):
        return "currentNodeChanged(vtkMRMLNode*)", widget.currentNode, widget.setCurrentNode
    if type(widget) is qt.QCheckBox and kind is bool:
        return "toggled(bool)", lambda: widget.checked, lambda v: setattr(widget, "checked", bool(v))
    if type(widget) is qt.QSpinBox and kind is int:
        _spinBoxRange(widget, hint, integer=True)
        return "valueChanged(int)", lambda: widget.value, lambda v: setattr(widget, "value", v)
    if type(widget) is qt.QDoubleSpinBox and kind is float:
        _spinBoxRange(widget, hint, integer=False)
        return "valueChanged(double)", lambda: widget.value, lambda v: setattr(widget, "value", v)
    if isinstance(widget, ctkPathLineEdit) and kind is Path:
        return ("currentPathChanged(QString)", lambda: Path(widget.currentPath),
                lambda v: setattr(widget, "currentPath", str(v)))
    raise RuntimeError(f"Unable to create GUI connector from datatype '{hint}' to widget type "
                       f"'{type(widget)}'")


def parameterNodeWrapper(cls: type) -> type:
    """Typed parameter node: attribute storage in the scripted module node, Choice and WithinRange
    validation, Modified events, and GUI binding through the widgets' ``SlicerParameterName``
    property (widget <- node on connect and on every change; node <- widget on its signal)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    defaults = {name: getattr(cls, name, Path() if hints[name] is Path else None) for name in hints}

    class Wrapper:
        def __init__(self, node: vtkMRMLScriptedModuleNode) -> None:
            object.__setattr__(self, "_node", node)
            object.__setattr__(self, "_guiTags", {})
            for name, value in defaults.items():
                node._parameters.setdefault(name, value)

        def __getattr__(self, name: str) -> Any:
            if name in hints:
                return self._node._parameters[name]
            raise AttributeError(f"parameter node has no parameter {name!r}")

        def __setattr__(self, name: str, value: Any) -> None:
            if name not in hints:
                raise AttributeError(f"parameter node has no parameter {name!r}")
            choice, within = _annotation(hints[name], Choice), _annotation(hints[name], WithinRange)
            if choice is not None and value not in choice.choices:
                raise ValueError(f"{name}={value!r} is not one of {choice.choices}")
            if within is not None and not within.minimum <= value <= within.maximum:
                raise ValueError(f"{name}={value!r} is not within [{within.minimum}, {within.maximum}]")
            if self._node._parameters.get(name) is not value:
                self._node._parameters[name] = value
                self._node.Modified()

        def __bool__(self) -> bool:
            return True

        def connectGui(self, ui: Any) -> int:
            _record("parameterNodeWrapper", "connectGui")
            tag = len(self._guiTags) + 1
            bound = []
            for widget in vars(ui).values():
                name = widget.property("SlicerParameterName")
                if name:
                    bound.append(self._bind(name, widget))

            def updateGui(caller: Any = None, event: Any = None) -> None:
                for name, _widget, _signal, _slot, read, write in bound:
                    if read() != getattr(self, name):
                        write(getattr(self, name))

            observer = self._node.AddObserver(vtkCommand.ModifiedEvent, updateGui)
            self._guiTags[tag] = (bound, observer)
            return tag

        def _bind(self, name: str, widget: Any) -> tuple:
            signal, read, write = _connector(widget, hints[name])
            write(getattr(self, name))
            slot = lambda *args: setattr(self, name, read())  # noqa: E731
            if not widget.connect(signal, slot):
                raise AssertionError(f"{type(widget).__name__} has no signal {signal}")
            return name, widget, signal, slot, read, write

        def disconnectGui(self, tag: int) -> None:
            _record("parameterNodeWrapper", "disconnectGui")
            bound, observer = self._guiTags.pop(tag, ([], None))
            for _name, widget, signal, slot, _read, _write in bound:
                widget.disconnect(signal, slot)
            if observer is not None:
                self._node.RemoveObserver(observer)

        def AddObserver(self, event: Any, callback: Callable) -> int:
            return self._node.AddObserver(event, callback)

        def RemoveObserver(self, tag: int) -> None:
            self._node.RemoveObserver(tag)

    Wrapper.__name__ = cls.__name__
    return Wrapper


# ================================================================ ScriptedLoadableModule ========
class _ModuleParent:
    def __init__(self) -> None:
        self.title, self.categories, self.dependencies = "", [], []
        self.contributors, self.helpText, self.acknowledgementText = [], "", ""


def _moduleWidgetParent() -> Any:
    """The real QWidget Slicer gives a module panel (a QVBoxLayout; ``isEntered`` as a property)."""
    parent = _ModulePanel()
    qt.QVBoxLayout(parent)
    LIVE_WIDGETS.append(parent)
    return parent


class ScriptedLoadableModule:
    def __init__(self, parent: Any) -> None:
        self.parent = parent

    def resourcePath(self, filename: str) -> str:
        return str(Path(sys.modules[type(self).__module__].__file__).parent / "Resources" / filename)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent: Any = None) -> None:
        if not PYTHONQT:
            raise RuntimeError(NOT_PYTHONQT)
        self.parent = parent if parent is not None else _moduleWidgetParent()
        self.layout = self.parent.layout()

    def setup(self) -> None:
        pass

    def resourcePath(self, filename: str) -> str:
        return ScriptedLoadableModule.resourcePath(self, filename)


class ScriptedLoadableModuleLogic:
    def __init__(self, parent: Any = None) -> None:
        self.moduleName = type(self).__name__.replace("Logic", "")

    def getParameterNode(self) -> vtkMRMLScriptedModuleNode:
        """The scene's singleton node of this module (a closed scene has none: a new one is made)."""
        _record("ScriptedLoadableModuleLogic", "getParameterNode")
        scene = slicer.mrmlScene
        node = next((n for n in scene._nodes if isinstance(n, vtkMRMLScriptedModuleNode)
                     and n._singletonTag == self.moduleName), None)
        if node is None:
            node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", self.moduleName)
            node._singletonTag = self.moduleName
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message: str, msec: int = 1000) -> None:
        ModuleState.displayed.append(message)


class VTKObservationMixin:
    def __init__(self) -> None:
        self._vtkObservers: list[tuple] = []

    def addObserver(self, obj: Any, event: Any, method: Callable, group: str = "none",
                    priority: float = 0.0) -> None:
        _record("VTKObservationMixin", "addObserver")
        self._vtkObservers.append((obj, event, method, obj.AddObserver(event, method)))

    def removeObserver(self, obj: Any, event: Any, method: Callable) -> None:
        _record("VTKObservationMixin", "removeObserver")
        for entry in list(self._vtkObservers):
            if entry[0] is obj and entry[1] == event and entry[2] == method:
                obj.RemoveObserver(entry[3])
                self._vtkObservers.remove(entry)

    def removeObservers(self, method: Optional[Callable] = None) -> None:
        _record("VTKObservationMixin", "removeObservers")
        for entry in list(self._vtkObservers):
            entry[0].RemoveObserver(entry[3])
        self._vtkObservers.clear()


# ================================================================ slicer.util ===================
class Dialogs:
    """What the fake message boxes answer and show (test-controlled)."""

    confirmAnswer = True
    shown: list[tuple[str, str, dict]] = []


def _arrayFromVolume(volumeNode: vtkMRMLScalarVolumeNode) -> np.ndarray:
    return volumeNode._array  # a view, like Slicer's


def _arrayFromVTKMatrix(matrix: vtkMatrix4x4) -> np.ndarray:
    return matrix._m.copy()


def _addVolumeFromArray(narray: np.ndarray, ijkToRAS: Any = None, name: Optional[str] = None,
                        nodeClassName: Optional[str] = None) -> vtkMRMLScalarVolumeNode:
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name or "Volume")
    node._array = np.array(narray, copy=True)
    if ijkToRAS is not None:
        node._ijkToRAS = ijkToRAS._m.copy() if isinstance(ijkToRAS, vtkMatrix4x4) else np.array(ijkToRAS, float)
    return node


def _updateSegmentBinaryLabelmapFromArray(narray: np.ndarray, segmentationNode: Any, segmentId: str,
                                          referenceVolumeNode: Any = None) -> None:
    reference = referenceVolumeNode or segmentationNode._referenceVolume
    if reference is None:
        raise ValueError("updateSegmentBinaryLabelmapFromArray: no reference geometry")
    if tuple(narray.shape) != tuple(reference._array.shape):
        raise ValueError(f"array shape {narray.shape} != reference volume {reference._array.shape}")
    if reference._transformNodeId != segmentationNode._transformNodeId:
        # Slicer would resample the mask through both parent transforms; the stand-in does not
        raise AssertionError("stand-in only imports masks into a segmentation under the reference "
                             "volume's parent transform")
    segment = segmentationNode._segmentation._segments[segmentId]
    segment._mask = (np.asarray(narray) > 0).astype(np.uint8)
    segment._ijkToRAS = reference._ijkToRAS.copy()


def _arrayFromSegmentBinaryLabelmap(segmentationNode: Any, segmentId: str,
                                    referenceVolumeNode: Any = None) -> np.ndarray:
    """Slicer maps the segment through both parent transforms; stand-in transforms carry no
    geometry, so the mask comes back as stored (on the grid it was made on)."""
    segment = segmentationNode._segmentation._segments[segmentId]
    reference = referenceVolumeNode or segmentationNode._referenceVolume
    if segment._mask is None:
        return np.zeros(reference._array.shape, np.uint8)
    if not np.allclose(segment._ijkToRAS, reference._ijkToRAS):
        raise AssertionError("stand-in only maps segments onto the grid they were made on")
    return segment._mask.copy()


def _confirmOkCancelDisplay(text: str, windowTitle: Optional[str] = None, parent: Any = None,
                            **kwargs: Any) -> bool:
    Dialogs.shown.append(("confirm", text, kwargs))
    return Dialogs.confirmAnswer


def _display(kind: str) -> Callable:
    def show(text: str, windowTitle: Optional[str] = None, parent: Any = None,
             standardButtons: Any = None, **kwargs: Any) -> None:
        Dialogs.shown.append((kind, text, kwargs))
    return show


@contextlib.contextmanager
def _tryWithErrorDisplay(message: Optional[str] = None, show: bool = True, waitCursor: bool = False):
    try:
        yield
    except Exception as exc:
        if show:
            Dialogs.shown.append(("error", f"{message} {exc}", {}))
        raise  # Slicer's tryWithErrorDisplay shows the error, then re-raises


class SegmentEditorWidget:
    """What ``getModuleWidget("SegmentEditor").editor`` offers (conventions section 7)."""

    def __init__(self) -> None:
        self._segmentationNode = self._sourceVolumeNode = None

    def setSegmentationNode(self, node: Any) -> None:
        _record("qMRMLSegmentEditorWidget", "setSegmentationNode")
        self._segmentationNode = node

    def setSourceVolumeNode(self, node: Any) -> None:
        _record("qMRMLSegmentEditorWidget", "setSourceVolumeNode")
        self._sourceVolumeNode = node


class _SegmentEditorModuleWidget:
    def __init__(self) -> None:
        self.editor = SegmentEditorWidget()


class ModuleState:
    selected: list[str] = []
    segmentEditor = _SegmentEditorModuleWidget()
    pipInstalled: list[Any] = []
    displayed: list[str] = []  # ScriptedLoadableModuleTest.delayDisplay messages


def _selectModule(name: str) -> None:
    ModuleState.selected.append(name)


def _getModuleWidget(name: str) -> Any:
    if name != "SegmentEditor":
        raise AssertionError(f"stand-in has no module widget {name}")
    return ModuleState.segmentEditor


def _pip_install(requirements: Any) -> None:
    ModuleState.pipInstalled.append(requirements)


def _loadVolume(filename: str, properties: Optional[dict] = None) -> vtkMRMLScalarVolumeNode:
    """Reads with SimpleITK; LPS -> RAS done here independently of the module's own code."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(filename))
    ijkToLPS = np.eye(4)
    ijkToLPS[:3, :3] = np.reshape(image.GetDirection(), (3, 3)) * np.array(image.GetSpacing())
    ijkToLPS[:3, 3] = image.GetOrigin()
    return _addVolumeFromArray(sitk.GetArrayFromImage(image), np.diag([-1, -1, 1, 1]) @ ijkToLPS,
                               Path(filename).name)


def _saveNode(node: Any, filename: str, properties: Optional[dict] = None) -> bool:
    """Segmentation nodes are written as .seg.nrrd (segment i -> label i+1) on their reference grid."""
    import SimpleITK as sitk

    from SegDeepLib.io import write_segmentation
    from SegDeepLib.io.labels import LabelTable

    reference = node._referenceVolume
    segments = list(node._segmentation._segments.values())
    labels = np.zeros(reference._array.shape, np.uint8)
    for value, segment in enumerate(segments, start=1):
        labels[segment._mask > 0] = value
    image = sitk.GetImageFromArray(labels)
    ijkToLPS = np.diag([-1, -1, 1, 1]) @ reference._ijkToRAS
    spacing = np.linalg.norm(ijkToLPS[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((ijkToLPS[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(ijkToLPS[:3, 3].tolist())
    write_segmentation(image, filename, LabelTable.from_names([s._name for s in segments]), overwrite=True)
    return True


def _exit(status: int = 0) -> None:
    raise SystemExit(status)


# ================================================================ install / remove ==============
slicer: Any = None
MODULE_NAMES = ("slicer", "slicer.util", "slicer.i18n", "slicer.parameterNodeWrapper",
                "slicer.ScriptedLoadableModule", "ctk", "vtk")  # qt: the real PythonQt module


def build(slicerVersion: tuple = (5, 10)) -> dict[str, StrictModule]:
    """Fresh stand-in modules; ``slicerVersion < (5, 10)`` gives segments without SetTerminology."""
    global slicer
    RECORD.clear()
    Dialogs.shown, Dialogs.confirmAnswer = [], True
    ModuleState.selected, ModuleState.segmentEditor, ModuleState.pipInstalled = [], _SegmentEditorModuleWidget(), []
    ModuleState.displayed = []
    LIVE_WIDGETS.clear()
    SEGMENT_CLASS[0] = vtkSegment if slicerVersion >= (5, 10) else vtkSegment58
    util = _module(
        "slicer.util", arrayFromVolume=_arrayFromVolume, arrayFromVTKMatrix=_arrayFromVTKMatrix,
        addVolumeFromArray=_addVolumeFromArray,
        updateSegmentBinaryLabelmapFromArray=_updateSegmentBinaryLabelmapFromArray,
        arrayFromSegmentBinaryLabelmap=_arrayFromSegmentBinaryLabelmap, loadUI=loadUI,
        childWidgetVariables=childWidgetVariables, confirmOkCancelDisplay=_confirmOkCancelDisplay,
        errorDisplay=_display("error"), warningDisplay=_display("warning"),
        infoDisplay=_display("info"), tryWithErrorDisplay=_tryWithErrorDisplay,
        selectModule=_selectModule, getModuleWidget=_getModuleWidget, pip_install=_pip_install,
        loadVolume=_loadVolume, saveNode=_saveNode, exit=_exit,
        VTKObservationMixin=VTKObservationMixin)
    i18n = _module("slicer.i18n", tr=lambda text: text, translate=lambda context, text: text)
    pnw = _module("slicer.parameterNodeWrapper", parameterNodeWrapper=parameterNodeWrapper,
                  Choice=Choice, WithinRange=WithinRange)
    slm = _module("slicer.ScriptedLoadableModule", ScriptedLoadableModule=ScriptedLoadableModule,
                  ScriptedLoadableModuleWidget=ScriptedLoadableModuleWidget,
                  ScriptedLoadableModuleLogic=ScriptedLoadableModuleLogic,
                  ScriptedLoadableModuleTest=ScriptedLoadableModuleTest)
    slicer = _module("slicer", util=util, i18n=i18n, parameterNodeWrapper=pnw,
                     ScriptedLoadableModule=slm, mrmlScene=vtkMRMLScene(),
                     vtkMRMLScalarVolumeNode=vtkMRMLScalarVolumeNode,
                     vtkMRMLSegmentationNode=vtkMRMLSegmentationNode)
    slicer.__path__ = []  # a package, so ``from slicer.util import ...`` works
    if not PYTHONQT:
        raise RuntimeError(NOT_PYTHONQT)
    ctk = _module("ctk")
    vtk = _module("vtk", vtkMatrix4x4=vtkMatrix4x4, vtkCommand=vtkCommand)
    return {"slicer": slicer, "slicer.util": util, "slicer.i18n": i18n,
            "slicer.parameterNodeWrapper": pnw, "slicer.ScriptedLoadableModule": slm,
            "ctk": ctk, "vtk": vtk}
