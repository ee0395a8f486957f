"""The PythonQt lane has teeth, and the lane script fails (never skips) when the host is there.

The ``pythonqt``-marked tests and those using the ``standin`` fixture run only inside the real
PythonQt host (Testing/SegDeep/pythonqt_lane.sh, run by ``make test``); the script tests below run
in the plain-Python suite.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
LANE = HERE / "pythonqt_lane.sh"
UI = HERE.parents[1] / "SegDeep" / "Resources" / "UI" / "SegDeep.ui"


@pytest.mark.pythonqt
def test_calling_a_property_getter_as_a_method_fails_here():
    """What hid the setup() crash: PyQt5 lets ``combo.currentIndex()`` pass, PythonQt does not."""
    import qt

    combo = qt.QComboBox()
    combo.addItem("a")
    combo.addItem("b")
    combo.currentIndex = 1
    assert combo.currentIndex == 1
    with pytest.raises(TypeError, match="not callable"):
        combo.currentIndex()
    label, box = qt.QLabel("x"), qt.QDoubleSpinBox()
    with pytest.raises(TypeError, match="not callable"):
        label.text()
    with pytest.raises(TypeError, match="not callable"):
        box.value()


@pytest.mark.pythonqt
def test_the_module_ui_loads_with_every_connection_to_a_real_slot(standin, tmp_path):
    """Every <connection> of the .ui must reach a slot its receiver's class has:
    qMRMLSegmentationShow3DButton has no setMRMLScene."""
    panel = standin.loadUI(str(UI))
    ui = standin.childWidgetVariables(panel)
    panel.setMRMLScene(standin.slicer.mrmlScene)
    assert ui.inputVolumeSelector._scene is standin.slicer.mrmlScene
    with pytest.raises(TypeError, match="not callable"):
        ui.applyButton.text()  # the stand-in's widgets are real PythonQt widgets
    text = UI.read_text().replace("</connections>", """ <connection>
   <sender>SegDeep</sender>
   <signal>mrmlSceneChanged(vtkMRMLScene*)</signal>
   <receiver>show3DButton</receiver>
   <slot>setMRMLScene(vtkMRMLScene*)</slot>
  </connection>
 </connections>""")
    (tmp_path / "bad.ui").write_text(text)
    with pytest.raises(AssertionError, match="show3DButton.setMRMLScene.*has no slot"):
        standin.loadUI(str(tmp_path / "bad.ui"))


def _run_lane(host: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEGDEEP_PYTHONQT_HOST": host, "SEGDEEP_PYTHONQT_NO_APT": "1"}
    return subprocess.run(["bash", str(LANE), *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_lane_skips_with_a_clear_reason_only_without_the_host(tmp_path):
    result = _run_lane(str(tmp_path / "absent" / "pythonqt-python"))
    assert result.returncode == 0
    assert "PythonQt lane SKIPPED: no PythonQt host at" in result.stderr


def test_lane_fails_when_the_host_reports_a_failure(tmp_path):
    if not (HERE.parents[1] / ".venv" / "bin" / "python").exists():
        pytest.skip("needs the repository's .venv (make venv)")
    host = tmp_path / "pythonqt-python"
    host.write_text('#!/bin/sh\necho "1 failed" ; exit 1\n')
    host.chmod(host.stat().st_mode | stat.S_IEXEC)
    result = _run_lane(str(host))
    assert result.returncode == 1 and "1 failed" in result.stdout
