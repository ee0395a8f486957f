"""Render SegDeep.ui with real Qt (PyQt5, offscreen) and save a PNG of the panel.

Slicer-only widget classes are replaced by their nearest Qt base classes. The PNG goes to pytest's
tmp folder, or to ``$SEGDEEP_PANEL_PNG`` when set (how Resources/Screenshots/SegDeepPanel.png is made).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

UI = Path(__file__).resolve().parents[2] / "SegDeep" / "Resources" / "UI" / "SegDeep.ui"
NEAREST = {"ctkCollapsibleButton": "QGroupBox", "qMRMLNodeComboBox": "QComboBox",
           "ctkPathLineEdit": "QLineEdit", "qMRMLWidget": "QWidget",
           "qMRMLSegmentationShow3DButton": "QToolButton"}
KEEP = {"text", "toolTip", "enabled", "geometry", "orientation", "wordWrap", "textFormat",
        "styleSheet", "readOnly", "placeholderText", "value", "format", "maximumSize"}


def plain_qt_ui(source: Path, target: Path) -> list[str]:
    """Write a PyQt-loadable copy of the .ui; returns the names of all widgets in it."""
    tree = ET.parse(source)
    root = tree.getroot()
    names = []
    for widget in root.iter("widget"):
        names.append(widget.get("name"))
        cls = widget.get("class")
        if cls in NEAREST:
            widget.set("class", NEAREST[cls])
            for prop in list(widget.findall("property")):
                if prop.get("name") not in KEEP:
                    widget.remove(prop)
                elif prop.get("name") == "text" and NEAREST[cls] == "QGroupBox":
                    prop.set("name", "title")
        for prop in list(widget.findall("property")):
            if prop.get("stdset") == "0":  # SlicerParameterName: dynamic, harmless but not needed
                widget.remove(prop)
    for tag in ("customwidgets", "connections"):
        for element in root.findall(tag):
            root.remove(element)
    tree.write(target)
    return names


def _shipped_model():
    """The shipped catalogue's abdomen entry (its real card: measured accuracy, time, licence)."""
    from SegDeepHelpers import catalogue

    models = {m.id: m for m in catalogue.loadCatalogue(userDir=Path("/nonexistent"))}
    return catalogue, models["abdomen-cascade-unet3d"]


def _fill_with_example_content(panel) -> None:
    from PyQt5 import QtCore, QtWidgets

    catalogue, model = _shipped_model()
    find = lambda cls, name: panel.findChild(cls, name)
    find(QtWidgets.QComboBox, "inputVolumeSelector").addItem("example_ct (3 mm)")
    find(QtWidgets.QComboBox, "modelSelector").addItem(model.title)
    find(QtWidgets.QLabel, "modelDetailsLabel").setText(catalogue.detailsHtml(model))
    organs = find(QtWidgets.QListWidget, "organsList")
    for organ in model.organs:
        item = QtWidgets.QListWidgetItem(organ, organs)
        item.setFlags(item.flags() | QtCore.Qt.ItemIsUserCheckable)
        item.setCheckState(QtCore.Qt.Checked)
    find(QtWidgets.QComboBox, "outputSegmentationSelector").addItem("Create new segmentation")
    find(QtWidgets.QLabel, "deviceInfoLabel").setText("Detected device: no GPU: CPU-only PyTorch build")
    find(QtWidgets.QLabel, "cpuWarningLabel").setText(catalogue.cpuWarning(model))
    apply = find(QtWidgets.QPushButton, "applyButton")
    apply.setText("Cancel")
    apply.setEnabled(True)
    find(QtWidgets.QProgressBar, "progressBar").setValue(42)
    find(QtWidgets.QLabel, "statusLabel").setText("tiles (tile 21/50) - ETA 38 s")
    find(QtWidgets.QPlainTextEdit, "logTextEdit").setPlainText(
        "device: cpu (no CUDA GPU found)\npreprocess: stage 1 at 6 mm, stage 2 at 3 mm\ntiles: 50 tiles of 48x96x96")
    # the abdomen model has no CRF settings: CRF off, SegDeepLib's defaults shown greyed out
    find(QtWidgets.QCheckBox, "crfCheckBox").setChecked(False)
    for name in ("crfThetaAlphaSpinBox", "crfThetaBetaSpinBox", "crfThetaGammaSpinBox", "crfW1SpinBox",
                 "crfW2SpinBox", "crfIterationsSpinBox", "crfResetButton"):
        find(QtWidgets.QWidget, name).setEnabled(False)
    from SegDeepHelpers.crf import NO_MODEL_SETTINGS

    find(QtWidgets.QLabel, "crfNoteLabel").setText(NO_MODEL_SETTINGS)
    find(QtWidgets.QLabel, "environmentLabel").setText(
        "SegDeepLib 0.1.0, PyTorch 2.13.0, CUDA build None, CRF backends: cpp, torch")


def test_panel_renders_with_real_qt(tmp_path, helpers_path):
    pytest.importorskip("PyQt5")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PyQt5 import QtWidgets, uic

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["segdeep-test"])
    names = plain_qt_ui(UI, tmp_path / "plain.ui")
    panel = uic.loadUi(str(tmp_path / "plain.ui"))
    for name in names:  # every widget of the .ui exists and has its name
        assert panel.objectName() == name or panel.findChild(QtWidgets.QWidget, name) is not None, name
    sections = [panel.findChild(QtWidgets.QGroupBox, n).title() for n in (
        "inputsCollapsibleButton", "outputsCollapsibleButton", "advancedCollapsibleButton",
        "environmentCollapsibleButton")]
    assert sections == ["Inputs", "Outputs", "Advanced", "Environment"]
    device = panel.findChild(QtWidgets.QComboBox, "deviceSelector")
    assert [device.itemText(i) for i in range(device.count())] == ["Auto", "GPU (CUDA)", "CPU"]
    _fill_with_example_content(panel)
    panel.resize(440, panel.sizeHint().height())
    image = panel.grab().toImage()
    target = Path(os.environ.get("SEGDEEP_PANEL_PNG", tmp_path / "SegDeepPanel.png"))
    assert image.save(str(target), "PNG")
    assert target.stat().st_size > 10_000
    colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    assert len(colours) > 20  # not a blank image
    app.processEvents()


CRF_SPIN_BOXES = ("crfThetaAlphaSpinBox", "crfThetaBetaSpinBox", "crfThetaGammaSpinBox", "crfW1SpinBox",
                  "crfW2SpinBox", "crfIterationsSpinBox")


def test_crf_spin_boxes_behave_like_real_qt_in_the_stand_in(standin, tmp_path):
    """The same .ui in real Qt and in the stand-in: same start values, rounding and clamping."""
    pytest.importorskip("PyQt5")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PyQt5 import QtWidgets, uic

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["segdeep-test"])
    plain_qt_ui(UI, tmp_path / "plain.ui")
    real = uic.loadUi(str(tmp_path / "plain.ui"))
    fake = standin.childWidgetVariables(standin.loadUI(str(UI)))
    for name in CRF_SPIN_BOXES:
        box = real.findChild(QtWidgets.QAbstractSpinBox, name)
        assert box is not None, name
        assert getattr(fake, name).value() == box.value(), name
        integer = isinstance(box, QtWidgets.QSpinBox)
        for value in ((-3, 7, 10_000) if integer else (-3.0, 0.12345, 7.25, 1e9)):
            box.setValue(value)
            getattr(fake, name).setValue(value)
            assert getattr(fake, name).value() == box.value(), (name, value)
    app.processEvents()
