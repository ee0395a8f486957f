"""Render SegDeep.ui with the real PythonQt (offscreen) and save a PNG of the panel.

The .ui is loaded as Slicer loads it (the real QUiLoader; Slicer's own widget classes are the
stand-in's subclasses of their Qt bases). The PNG goes to pytest's tmp folder, or to
``$SEGDEEP_PANEL_PNG`` when set (how Resources/Screenshots/SegDeepPanel.png is made).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

UI = Path(__file__).resolve().parents[2] / "SegDeep" / "Resources" / "UI" / "SegDeep.ui"


def _shipped_model():
    """The shipped catalogue's abdomen entry (its real card: measured accuracy, time, licence)."""
    from SegDeepHelpers import catalogue

    models = {m.id: m for m in catalogue.loadCatalogue(userDir=Path("/nonexistent"))}
    return catalogue, models["abdomen-cascade-unet3d"]


def _fill_with_example_content(ui, qt) -> None:
    from SegDeepHelpers.crf import NO_MODEL_SETTINGS, PARAMETERS

    catalogue, model = _shipped_model()
    ui.modelSelector.addItem(model.title)
    ui.modelDetailsLabel.text = catalogue.detailsHtml(model)
    for organ in model.organs:
        ui.organsList.addItem(organ)
        item = ui.organsList.item(ui.organsList.count - 1)
        item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
        item.setCheckState(qt.Qt.Checked)
    ui.deviceInfoLabel.text = "Detected device: no GPU: CPU-only PyTorch build"
    ui.cpuWarningLabel.text = catalogue.cpuWarning(model)
    ui.applyButton.text, ui.applyButton.enabled = "Cancel", True
    ui.progressBar.value = 42
    ui.statusLabel.text = "tiles (tile 21/50) - ETA 38 s"
    ui.logTextEdit.plainText = ("device: cpu (no CUDA GPU found)\npreprocess: stage 1 at 6 mm, stage 2 at 3 mm"
                                "\ntiles: 50 tiles of 48x96x96")
    # the abdomen model has no CRF settings: CRF off, SegDeepLib's defaults shown greyed out
    ui.crfCheckBox.checked = False
    for p in PARAMETERS:
        getattr(ui, p.spinBox).enabled = False
    ui.crfResetButton.enabled = False
    ui.crfNoteLabel.text = NO_MODEL_SETTINGS
    ui.environmentLabel.text = ("SegDeepLib 0.1.0, PyTorch 2.13.0, CUDA build None\n"
                                "CRF backends: cpp: built; cuda: unavailable (no CUDA); torch: built")


def test_panel_renders_with_real_pythonqt(standin, tmp_path):
    import qt

    panel = standin.loadUI(str(UI))
    ui = standin.childWidgetVariables(panel)
    names = [w.get("name") for w in ET.parse(UI).getroot().iter("widget")]
    assert all(hasattr(ui, name) for name in names[1:]) and panel.objectName == names[0]
    sections = [getattr(ui, n).title for n in ("inputsCollapsibleButton", "outputsCollapsibleButton",
                                               "advancedCollapsibleButton", "environmentCollapsibleButton")]
    assert sections == ["Inputs", "Outputs", "Advanced", "Environment"]
    assert [ui.deviceSelector.itemText(i) for i in range(ui.deviceSelector.count)] == ["Auto", "GPU (CUDA)", "CPU"]
    _fill_with_example_content(ui, qt)
    panel.resize(440, panel.sizeHint.height())
    image = panel.grab().toImage()
    target = Path(os.environ.get("SEGDEEP_PANEL_PNG", tmp_path / "SegDeepPanel.png"))
    assert image.save(str(target), "PNG")
    assert target.stat().st_size > 10_000
    colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    assert len(colours) > 20  # not a blank image
