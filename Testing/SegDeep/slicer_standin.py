"""A strict stand-in for Slicer's Python modules (``slicer``, ``slicer.util``, ``qt``, ``ctk``, ``vtk``...).

It offers ONLY the API names listed in ../shared/docs/slicer-conventions.md (every one of them
verified against Slicer's source) and the few in ``VERIFIED_ELSEWHERE`` (each with the Slicer source
file and commit it was checked in); any other attribute of a module raises AttributeError, and the
fake objects define no catch-all ``__getattr__``, so a misspelt or invented Slicer call fails the
tests. Geometry is real numpy maths: volume nodes hold a KJI array and a 4x4 IJK-to-RAS matrix;
segments hold a binary mask on their reference volume's grid.

Qt widgets are created from the real ``.ui`` file by :func:`loadUI` (one fake per ``<widget>``,
with the properties of the file); their methods are plain Qt names (a test checks them against
PyQt5) plus PythonQt's ``connect(signal, slot)``. Test code drives widgets through the module-level
helpers (:func:`chooseNode`, :func:`click`, :func:`runEventLoop`...), never through extra methods.
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

# Names the module code may use, per stand-in module (all from slicer-conventions.md; Qt: PyQt5-checked).
ALLOWED: dict[str, set[str]] = {}
# Slicer API names NOT in slicer-conventions.md, each verified in Slicer's source: name -> where.
_TRANSFORMABLE_H = ("Libs/MRML/Core/vtkMRMLTransformableNode.h, Slicer/Slicer at commit "
                    "1a324de7ccc49ed1a81f923646d0e340592745ec (vtkMRMLTransformableNode)")
_NODE_H = ("Libs/MRML/Core/vtkMRMLNode.h, Slicer/Slicer at commit "
           "0276e1d23a5b0d8aa471ed8b0f1aa5f42072dc15 (vtkMRMLNode: vtkGetStringMacro(Name))")
VERIFIED_ELSEWHERE: dict[str, str] = {
    "GetName": _NODE_H,
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
        for event, callback in list(self._observers):
            if event == vtkCommand.ModifiedEvent:
                callback(self, vtkCommand.ModifiedEvent)


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

    SetName, SetColor, SetTag = vtkSegment.SetName, vtkSegment.SetColor, vtkSegment.SetTag
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
        return next((sid for sid, s in self._segments.items() if s._name == name), "")

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
        self._nodes.clear()
        self._sh = vtkMRMLSubjectHierarchyNode()


# ================================================================ Qt fakes ======================
class _Signals:
    def __init__(self) -> None:
        self._slots: dict[str, list[Callable]] = {}

    def connect(self, signal: str, slot: Callable) -> bool:  # PythonQt's string-signal connect
        self._slots.setdefault(signal, []).append(slot)
        return True

    def _emit(self, signal: str, *args: Any) -> None:
        for slot in list(self._slots.get(signal, [])):
            slot(*args)


class QWidget(_Signals):
    def __init__(self, name: str = "", props: Optional[dict] = None) -> None:
        super().__init__()
        self._objectName, self._props = name, dict(props or {})
        self._enabled = self._props.get("enabled", True)
        self._visible = True

    def setEnabled(self, enabled: bool) -> None:
        self._enabled = bool(enabled)

    def isEnabled(self) -> bool:
        return self._enabled

    def setVisible(self, visible: bool) -> None:
        self._visible = bool(visible)

    def isVisible(self) -> bool:
        return self._visible

    def property(self, name: str) -> Any:
        return self._props.get(name)


class QLabel(QWidget):
    def text(self) -> str:
        return str(self._props.get("text", ""))

    def setText(self, text: str) -> None:
        self._props["text"] = str(text)


class QPushButton(QLabel):
    def click(self) -> None:
        if self._enabled:
            self._emit("clicked(bool)", False)
            self._emit("clicked()")


class QCheckBox(QPushButton):
    def isChecked(self) -> bool:
        return bool(self._props.get("checked", False))

    def setChecked(self, checked: bool) -> None:
        if bool(checked) != self.isChecked():
            self._props["checked"] = bool(checked)
            self._emit("toggled(bool)", bool(checked))


class QLineEdit(QLabel):
    pass


class QComboBox(QWidget):
    def __init__(self, name: str = "", props: Optional[dict] = None) -> None:
        super().__init__(name, props)
        self._items: list[tuple[str, Any]] = [(t, None) for t in self._props.pop("_items", [])]
        self._index = 0 if self._items else -1

    def addItem(self, text: str, userData: Any = None) -> None:
        self._items.append((str(text), userData))
        if self._index < 0:
            self._index = 0
            self._emit("currentIndexChanged(int)", 0)

    def clear(self) -> None:
        self._items, self._index = [], -1

    def count(self) -> int:
        return len(self._items)

    def currentIndex(self) -> int:
        return self._index

    def setCurrentIndex(self, index: int) -> None:
        if index != self._index and -1 <= index < len(self._items):
            self._index = index
            self._emit("currentIndexChanged(int)", index)

    def currentText(self) -> str:
        return self._items[self._index][0] if self._index >= 0 else ""

    def itemText(self, index: int) -> str:
        return self._items[index][0]

    def itemData(self, index: int) -> Any:
        return self._items[index][1]


class QListWidgetItem:
    def __init__(self, text: str) -> None:
        self._text, self._flags, self._check = text, 0x20 | 0x01, 0

    def text(self) -> str:
        return self._text

    def flags(self) -> int:
        return self._flags

    def setFlags(self, flags: int) -> None:
        self._flags = int(flags)

    def checkState(self) -> int:
        return self._check

    def setCheckState(self, state: int) -> None:
        if not self._flags & 16:
            raise AssertionError("setCheckState on an item that is not user-checkable")
        self._check = int(state)


class QListWidget(QWidget):
    def __init__(self, name: str = "", props: Optional[dict] = None) -> None:
        super().__init__(name, props)
        self._rows: list[QListWidgetItem] = []

    def addItem(self, text: str) -> None:
        self._rows.append(QListWidgetItem(str(text)))

    def clear(self) -> None:
        self._rows = []

    def count(self) -> int:
        return len(self._rows)

    def item(self, row: int) -> Optional[QListWidgetItem]:
        return self._rows[row] if 0 <= row < len(self._rows) else None


class QProgressBar(QWidget):
    def value(self) -> int:
        return int(self._props.get("value", 0))

    def setValue(self, value: int) -> None:
        if not isinstance(value, int):
            raise TypeError("QProgressBar.setValue takes an int")
        self._props["value"] = value


class QSpinBox(QWidget):
    """Qt semantics: ``setValue`` clamps to [minimum, maximum] and emits ``valueChanged`` on change."""

    _signal = "valueChanged(int)"

    def _number(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("QSpinBox.setValue takes an int")
        return value

    def value(self) -> Any:
        return self._number(self._props.get("value", 0))

    def minimum(self) -> Any:
        return self._props.get("minimum", 0)

    def maximum(self) -> Any:
        return self._props.get("maximum", 99)

    def setValue(self, value: Any) -> None:
        value = min(max(self._number(value), self.minimum()), self.maximum())
        if value != self.value():
            self._props["value"] = value
            self._emit(self._signal, value)


class QDoubleSpinBox(QSpinBox):
    """Like QSpinBox, and values are rounded to ``decimals`` (Qt's default 2)."""

    _signal = "valueChanged(double)"

    def _number(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError("QDoubleSpinBox.setValue takes a float")
        return round(float(value), self.decimals())

    def decimals(self) -> int:
        return int(self._props.get("decimals", 2))

    def minimum(self) -> Any:
        return float(self._props.get("minimum", 0.0))

    def maximum(self) -> Any:
        return float(self._props.get("maximum", 99.99))


class QPlainTextEdit(QWidget):
    def appendPlainText(self, text: str) -> None:
        self._props["plainText"] = (self._props.get("plainText", "") + "\n" + str(text)).lstrip("\n")

    def toPlainText(self) -> str:
        return self._props.get("plainText", "")

    def clear(self) -> None:
        self._props["plainText"] = ""


class ctkCollapsibleButton(QPushButton):
    pass


class ctkPathLineEdit(QWidget):
    pass


class qMRMLWidget(QWidget):
    def setMRMLScene(self, scene: Any) -> None:
        self._emit("mrmlSceneChanged(vtkMRMLScene*)", scene)


class qMRMLNodeComboBox(QWidget):
    def __init__(self, name: str = "", props: Optional[dict] = None) -> None:
        super().__init__(name, props)
        self._node, self._scene = None, None

    def setMRMLScene(self, scene: Any) -> None:
        self._scene = scene


class qMRMLSegmentationShow3DButton(QPushButton):
    def __init__(self, name: str = "", props: Optional[dict] = None) -> None:
        super().__init__(name, props)
        self._segmentationNode, self._scene = None, None

    def setMRMLScene(self, scene: Any) -> None:
        self._scene = scene

    def setSegmentationNode(self, node: Any) -> None:
        _record("qMRMLSegmentationShow3DButton", "setSegmentationNode")
        self._segmentationNode = node


WIDGET_CLASSES = {cls.__name__: cls for cls in (
    QWidget, QLabel, QPushButton, QCheckBox, QLineEdit, QComboBox, QListWidget, QProgressBar,
    QSpinBox, QDoubleSpinBox, QPlainTextEdit, ctkCollapsibleButton, ctkPathLineEdit, qMRMLWidget, qMRMLNodeComboBox,
    qMRMLSegmentationShow3DButton)}
SLICER_ONLY_WIDGETS = {"ctkCollapsibleButton", "ctkPathLineEdit", "qMRMLWidget", "qMRMLNodeComboBox",
                       "qMRMLSegmentationShow3DButton"}


class _Clipboard:
    def __init__(self) -> None:
        self._text = ""

    def setText(self, text: str) -> None:
        self._text = text

    def text(self) -> str:
        return self._text


class QApplication:
    _clipboard = _Clipboard()

    @staticmethod
    def clipboard() -> _Clipboard:
        return QApplication._clipboard


class QTimer:
    _queue: list[tuple[int, Callable]] = []

    @staticmethod
    def singleShot(milliseconds: int, function: Callable) -> None:
        QTimer._queue.append((milliseconds, function))


def runEventLoop(until: Callable[[], bool], timeout: float = 60.0) -> None:
    """Run queued ``QTimer.singleShot`` callbacks (in real time) until ``until()`` is true."""
    import time

    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise TimeoutError("stand-in event loop: condition not reached")
        if not QTimer._queue:
            time.sleep(0.01)
            continue
        milliseconds, function = QTimer._queue.pop(0)
        time.sleep(milliseconds / 1000.0)
        function()


# ================================================================ .ui loading ===================
def _propertyValue(element: ET.Element) -> Any:
    child = list(element)[0]
    if child.tag == "bool":
        return child.text == "true"
    if child.tag == "number":
        return int(child.text or 0)
    if child.tag == "double":
        return float(child.text or 0)
    if child.tag == "stringlist":
        return [s.text or "" for s in child]
    return child.text or ""


class UIWidget(qMRMLWidget):
    """The top widget returned by loadUI; ``setMRMLScene`` follows the .ui's connections."""

    def __init__(self, name: str, children: dict[str, QWidget], connections: list[tuple]) -> None:
        super().__init__(name)
        self._children = children
        for sender, signal, receiver, slot in connections:
            if sender == name and slot == "setMRMLScene(vtkMRMLScene*)":
                self.connect(signal, children[receiver].setMRMLScene)


def loadUI(path: str) -> UIWidget:
    root = ET.parse(path).getroot()
    top = root.find("widget")
    children: dict[str, QWidget] = {}
    for element in top.iter("widget"):
        if element is top:
            continue
        cls = element.get("class")
        if cls not in WIDGET_CLASSES:
            raise AssertionError(f"{path}: widget class {cls} has no stand-in")
        props = {p.get("name"): _propertyValue(p) for p in element.findall("property")}
        props["_items"] = [_propertyValue(i.find("property")) for i in element.findall("item")]
        if cls != "QComboBox":
            props.pop("_items")
        children[element.get("name")] = WIDGET_CLASSES[cls](element.get("name"), props)
    connections = [tuple(c.find(t).text for t in ("sender", "signal", "receiver", "slot"))
                   for c in root.iter("connection")]
    return UIWidget(top.get("name"), children, connections)


def childWidgetVariables(widget: UIWidget) -> types.SimpleNamespace:
    return types.SimpleNamespace(**widget._children)


# ================================================================ test drivers ==================
def chooseNode(combo: qMRMLNodeComboBox, node: Any) -> None:
    """What a user does with a node selector."""
    combo._node = node
    combo._emit("currentNodeChanged(vtkMRMLNode*)", node)


def click(button: QPushButton) -> None:
    button.click()


def choosePath(pathEdit: ctkPathLineEdit, path: str) -> None:
    """What a user does with a path line edit (browse or type)."""
    pathEdit._props["currentPath"] = str(path)
    pathEdit._emit("currentPathChanged(QString)", str(path))


def addTransformNode(name: str = "Transform") -> vtkMRMLTransformNode:
    """What a user does in the Transforms module: a new transform node in the scene."""
    node = vtkMRMLTransformNode(name)
    slicer.mrmlScene._nodes.append(node)
    return node


# ================================================================ parameterNodeWrapper ==========
class Choice:
    def __init__(self, choices: list) -> None:
        self.choices = list(choices)


class WithinRange:
    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum, self.maximum = minimum, maximum


def parameterNodeWrapper(cls: type) -> type:
    """Typed parameter node: attribute storage in the scripted module node, Choice validation,
    Modified events, and GUI binding through the widgets' ``SlicerParameterName`` property."""
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
            for meta in getattr(hints[name], "__metadata__", ()):
                if isinstance(meta, Choice) and value not in meta.choices:
                    raise ValueError(f"{name}={value!r} is not one of {meta.choices}")
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
            self._guiTags[tag] = bound
            return tag

        def _bind(self, name: str, widget: QWidget) -> tuple:
            if isinstance(widget, qMRMLNodeComboBox):
                widget._node = getattr(self, name)
                signal, slot = "currentNodeChanged(vtkMRMLNode*)", lambda node: setattr(self, name, node)
            elif isinstance(widget, QCheckBox):
                widget._props["checked"] = bool(getattr(self, name))
                signal, slot = "toggled(bool)", lambda checked: setattr(self, name, bool(checked))
            elif isinstance(widget, QSpinBox):  # QDoubleSpinBox -> float, QSpinBox -> int
                kind = float if isinstance(widget, QDoubleSpinBox) else int
                if typing.get_origin(hints[name]) is not None or hints[name] is not kind:
                    raise AssertionError(f"{type(widget).__name__} needs a {kind.__name__} parameter ({name})")
                widget._props["value"] = widget._number(getattr(self, name))
                signal, slot = widget._signal, lambda value: setattr(self, name, kind(value))
            elif isinstance(widget, ctkPathLineEdit):
                signal, slot = "currentPathChanged(QString)", lambda text: setattr(self, name, Path(text))
            else:
                raise AssertionError(f"no GUI connector for {type(widget).__name__} ({name})")
            widget.connect(signal, slot)
            return widget, signal, slot

        def disconnectGui(self, tag: int) -> None:
            _record("parameterNodeWrapper", "disconnectGui")
            for widget, signal, slot in self._guiTags.pop(tag, []):
                widget._slots[signal].remove(slot)

        def AddObserver(self, event: Any, callback: Callable) -> int:
            return self._node.AddObserver(event, callback)

        def RemoveObserver(self, tag: int) -> None:
            self._node.RemoveObserver(tag)

    Wrapper.__name__ = cls.__name__
    return Wrapper


# ================================================================ ScriptedLoadableModule ========
class _Layout:
    def __init__(self) -> None:
        self._widgets: list = []

    def addWidget(self, widget: Any) -> None:
        self._widgets.append(widget)


class _ModuleParent:
    def __init__(self) -> None:
        self.title, self.categories, self.dependencies = "", [], []
        self.contributors, self.helpText, self.acknowledgementText = [], "", ""
        self.isEntered = False


class ScriptedLoadableModule:
    def __init__(self, parent: Any) -> None:
        self.parent = parent

    def resourcePath(self, filename: str) -> str:
        return str(Path(sys.modules[type(self).__module__].__file__).parent / "Resources" / filename)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent: Any = None) -> None:
        self.parent = parent if parent is not None else _ModuleParent()
        self.layout = _Layout()

    def setup(self) -> None:
        pass

    def resourcePath(self, filename: str) -> str:
        return ScriptedLoadableModule.resourcePath(self, filename)


class ScriptedLoadableModuleLogic:
    _singletons: dict[str, vtkMRMLScriptedModuleNode] = {}

    def __init__(self, parent: Any = None) -> None:
        self.moduleName = type(self).__name__.replace("Logic", "")

    def getParameterNode(self) -> vtkMRMLScriptedModuleNode:
        _record("ScriptedLoadableModuleLogic", "getParameterNode")
        node = self._singletons.get(self.moduleName)
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", self.moduleName)
            self._singletons[self.moduleName] = node
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message: str, msec: int = 1000) -> None:
        pass


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
                "slicer.ScriptedLoadableModule", "qt", "ctk", "vtk")


def build(slicerVersion: tuple = (5, 10)) -> dict[str, StrictModule]:
    """Fresh stand-in modules; ``slicerVersion < (5, 10)`` gives segments without SetTerminology."""
    global slicer
    RECORD.clear()
    Dialogs.shown, Dialogs.confirmAnswer = [], True
    ModuleState.selected, ModuleState.segmentEditor, ModuleState.pipInstalled = [], _SegmentEditorModuleWidget(), []
    QTimer._queue = []
    ScriptedLoadableModuleLogic._singletons = {}
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
    qt = _module("qt", QTimer=QTimer, QApplication=QApplication)
    ctk = _module("ctk")
    vtk = _module("vtk", vtkMatrix4x4=vtkMatrix4x4, vtkCommand=vtkCommand)
    return {"slicer": slicer, "slicer.util": util, "slicer.i18n": i18n,
            "slicer.parameterNodeWrapper": pnw, "slicer.ScriptedLoadableModule": slm,
            "qt": qt, "ctk": ctk, "vtk": vtk}
