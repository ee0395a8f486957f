"""The panel driven like a user would, inside the real PythonQt: the real .ui through the real
QUiLoader, real Qt widgets with PythonQt's semantics (properties are attributes), Slicer/MRML classes
from the stand-in. Runs in the PythonQt lane (Testing/SegDeep/pythonqt_lane.sh)."""

from __future__ import annotations

import json
import sys

import pytest

from Testing.SegDeep.helpers import (
    FAKE_BLADDER_CRF,
    fake_python,
    oblique_ijk_to_ras,
    phantom_array,
    segdeep_temp_dirs,
    write_catalogue,
)


@pytest.fixture
def widget(standin, tmp_path, monkeypatch):
    from SegDeepHelpers import catalogue

    import SegDeep

    monkeypatch.setenv("SEGDEEP_MODELS_DIR", str(tmp_path / "no-user-models"))
    path = write_catalogue(tmp_path / "catalogue.json")
    real = catalogue.loadCatalogue
    monkeypatch.setattr(catalogue, "loadCatalogue", lambda p=None: real(path))
    widget = SegDeep.SegDeepWidget()
    widget.setup()
    widget.logic.python = fake_python(tmp_path)
    widget.volume = standin.slicer.util.addVolumeFromArray(phantom_array(), oblique_ijk_to_ras(), "CT")
    return widget


def _organs(ui):
    return [ui.organsList.item(i) for i in range(ui.organsList.count)]


def test_setup_fills_models_details_and_organs(widget):
    ui = widget.ui
    assert [ui.modelSelector.itemText(i) for i in range(ui.modelSelector.count)] == [
        "Abdomen (fake)", "Bladder (fake)"]
    assert [item.text() for item in _organs(ui)] == ["liver", "spleen"]
    assert all(item.checkState() == 2 for item in _organs(ui))
    details = ui.modelDetailsLabel.text
    for text in ("3D U-Net cascade", "liver, spleen", "CT", "0.91", "340", "CC BY 4.0"):
        assert text in details
    ui.modelSelector.setCurrentIndex(1)
    assert [item.text() for item in _organs(ui)] == ["urinary_bladder"]
    assert "Apache-2.0" in ui.modelDetailsLabel.text
    assert widget._parameterNode.modelId == "fake-bladder"


def test_segment_button_needs_an_input_volume(widget, standin):
    ui = widget.ui
    assert not ui.applyButton.enabled
    standin.chooseNode(ui.inputVolumeSelector, widget.volume)
    assert widget._parameterNode.inputVolume is widget.volume
    assert ui.applyButton.enabled and ui.applyButton.text == "Segment"


def test_cpu_choice_shows_warning_with_measured_time(widget):
    ui = widget.ui
    assert ui.cpuWarningLabel.text == ""
    ui.deviceSelector.setCurrentIndex(2)  # CPU
    assert widget._parameterNode.device == "cpu"
    assert "CPU" in ui.cpuWarningLabel.text and "6 min" in ui.cpuWarningLabel.text
    ui.deviceSelector.setCurrentIndex(0)  # Auto, environment unknown yet: no claim
    assert ui.cpuWarningLabel.text == ""
    widget.panel.environmentInfo = {"torch": "2.13.0", "cuda_available": False, "torch_cuda_build": None}
    widget.panel.updateDeviceWarning()
    assert "6 min" in ui.cpuWarningLabel.text


def test_click_segment_progress_result_and_segment_editor(widget, standin):
    ui = widget.ui
    standin.chooseNode(ui.inputVolumeSelector, widget.volume)
    _organs(ui)[0].setCheckState(0)  # untick liver
    ui.applyButton.click()
    assert ui.applyButton.text == "Cancel" and ui.applyButton.enabled
    assert not ui.editInSegmentEditorButton.enabled
    values, stages = [], []
    original = widget.panel.onProgress
    widget.panel.onProgress = lambda e: (original(e), values.append(ui.progressBar.value),
                                         stages.append(ui.statusLabel.text))
    widget.logic.job.onEvent = widget.logic._eventHandler(widget.panel.onProgress, widget.panel.appendLog)
    standin.runEventLoop(lambda: not widget.panel._running)
    # one overall bar: it never goes back when a stage starts, and the stage's name is beside it
    assert values == sorted(values) and 0 <= values[0] < 20 and values[-1] < 100
    assert [t.split(" ")[0] for t in stages] == ["preprocess"] * 2 + ["tiles"] * 5 + ["write"] * 2
    assert ui.progressBar.value == 100
    assert ui.statusLabel.text.startswith("Done: 1 segments")
    assert "device: cpu (fake)" in ui.logTextEdit.plainText
    node = widget._parameterNode.outputSegmentation
    assert node is widget.panel.lastResult.segmentationNode
    assert node.GetSegmentation().GetSegmentIdBySegmentName("spleen")
    assert not node.GetSegmentation().GetSegmentIdBySegmentName("liver")
    assert ui.show3DButton.segmentationNode() is node
    assert ui.applyButton.text == "Segment" and ui.editInSegmentEditorButton.enabled
    ui.editInSegmentEditorButton.click()
    editor = standin.ModuleState.segmentEditor.editor
    assert standin.ModuleState.selected == ["SegmentEditor"]
    assert editor._segmentationNode is node and editor._sourceVolumeNode is widget.volume


def test_cancel_button_stops_the_run(widget, standin, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "0.5")
    ui = widget.ui
    before = segdeep_temp_dirs()
    standin.chooseNode(ui.inputVolumeSelector, widget.volume)
    ui.applyButton.click()
    standin.runEventLoop(lambda: ui.progressBar.value > 0)
    ui.applyButton.click()  # "Cancel"
    standin.runEventLoop(lambda: not widget.panel._running)
    assert ui.statusLabel.text == "Cancelled" and ui.applyButton.text == "Segment"
    assert widget._parameterNode.outputSegmentation is None
    assert segdeep_temp_dirs() == before


def test_error_is_shown_with_the_log(widget, standin, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "model fake-abdomen: weights missing; reinstall SegDeep")
    standin.chooseNode(widget.ui.inputVolumeSelector, widget.volume)
    widget.ui.applyButton.click()
    standin.runEventLoop(lambda: not widget.panel._running)
    kind, text, extra = standin.Dialogs.shown[-1]
    assert kind == "error" and "weights missing" in text
    assert "device: cpu (fake)" in extra["detailedText"]
    assert widget.ui.statusLabel.text == "Failed"


def test_updating_an_existing_segmentation_asks_first(widget, standin):
    ui = widget.ui
    existing = standin.slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "mine")
    standin.chooseNode(ui.inputVolumeSelector, widget.volume)
    standin.chooseNode(ui.outputSegmentationSelector, existing)
    standin.Dialogs.confirmAnswer = False
    ui.applyButton.click()
    assert standin.Dialogs.shown[-1][0] == "confirm" and not widget.panel._running
    standin.Dialogs.confirmAnswer = True
    ui.applyButton.click()
    standin.runEventLoop(lambda: not widget.panel._running)
    assert widget.panel.lastResult.segmentationNode is existing
    assert existing.GetSegmentation().GetNumberOfSegments() == 2


def test_volume_under_a_transform_logs_one_line_and_the_result_follows_it(widget, standin):
    ui = widget.ui
    transform = standin.addTransformNode("Registration")
    widget.volume.SetAndObserveTransformNodeID(transform.GetID())
    standin.chooseNode(ui.inputVolumeSelector, widget.volume)
    ui.applyButton.click()
    standin.runEventLoop(lambda: not widget.panel._running)
    assert ui.statusLabel.text.startswith("Done")
    node = widget._parameterNode.outputSegmentation
    assert node.GetTransformNodeID() == transform.GetID()
    expected = (f"input is under transform '{transform.GetName()}': the segmentation was placed under"
                " the same transform")
    lines = ui.logTextEdit.plainText.splitlines()
    assert lines.count(expected) == 1 and sum("transform" in line for line in lines) == 1


def test_volume_without_transform_logs_no_transform_line(widget, standin):
    ui = widget.ui
    standin.chooseNode(ui.inputVolumeSelector, widget.volume)
    ui.applyButton.click()
    standin.runEventLoop(lambda: not widget.panel._running)
    assert ui.statusLabel.text.startswith("Done")
    assert "transform" not in ui.logTextEdit.plainText
    assert widget._parameterNode.outputSegmentation.GetTransformNodeID() is None


def test_train_button_runs_and_reports(widget, standin, tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("model: {name: unet3d}\n")
    standin.choosePath(widget.ui.trainConfigPathLineEdit, config)
    assert widget._parameterNode.trainConfig == config
    widget.ui.trainButton.click()
    assert widget.ui.trainButton.text == "Cancel" and not widget.ui.applyButton.enabled
    standin.runEventLoop(lambda: not widget.panel._running)
    assert widget.ui.statusLabel.text == "Training: done"
    assert widget.ui.trainButton.text == "Train"


def test_environment_refresh_uses_the_real_cli_and_diagnostics_copy(widget, standin):
    import qt

    from Testing.SegDeep.helpers import plain_python

    widget.logic.python = plain_python()
    widget.ui.refreshEnvironmentButton.click()
    standin.runEventLoop(lambda: widget.panel.environmentInfo != {}, timeout=120)
    info = widget.panel.environmentInfo
    assert info["python"] and "segdeeplib" in info
    assert f"PyTorch {info['torch']}" in widget.ui.environmentLabel.text
    assert widget.ui.deviceInfoLabel.text.startswith("Detected device: ")
    widget.ui.copyDiagnosticsButton.click()
    copied = qt.QApplication.clipboard().text()
    assert f"torch: {info['torch']}" in copied and "model: fake-abdomen" in copied


def test_environment_refresh_reports_a_broken_python(widget, standin, tmp_path):
    import stat

    broken = tmp_path / "brokenpython"
    broken.write_text('#!/bin/sh\necho "No module named SegDeepLib" >&2\nexit 1\n')
    broken.chmod(broken.stat().st_mode | stat.S_IEXEC)
    widget.logic.python = str(broken)
    widget.ui.refreshEnvironmentButton.click()
    standin.runEventLoop(lambda: widget.ui.environmentLabel.text != "Checking...")
    assert widget.ui.environmentLabel.text == "SegDeepLib could not start: No module named SegDeepLib"
    assert widget.panel.environmentInfo == {}


def test_install_dependencies_asks_once_and_skips_slicer_packages(widget, standin, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\nnumpy>=1.23\nSimpleITK>=2.2\nPyYAML>=6\n"
                            "segdeep-surely-missing-package>=1.0\n")
    widget.panel.requirementsPath = requirements
    widget.ui.installDependenciesButton.click()
    confirms = [s for s in standin.Dialogs.shown if s[0] == "confirm"]
    assert len(confirms) == 1 and "segdeep-surely-missing-package>=1.0" in confirms[0][1]
    assert "numpy" not in confirms[0][1] and "PyYAML" not in confirms[0][1]  # Slicer-owned / present
    assert standin.ModuleState.pipInstalled == [["segdeep-surely-missing-package>=1.0"]]


def test_install_uses_pytorchutils_when_torch_is_missing(widget, standin, tmp_path, monkeypatch):
    """The PyTorch extension's logic installs torch after our single confirmation; whether torch is
    there is read from package metadata, never with ``torchInstalled()`` (it imports torch)."""
    import types

    from SegDeepHelpers import environment

    calls = []
    real = environment.installedVersion
    monkeypatch.setattr(environment, "installedVersion", lambda name: None if name == "torch" else real(name))

    class PyTorchUtilsLogic:
        @staticmethod
        def torchInstalled():
            raise AssertionError("torchInstalled() imports torch into Slicer's process")

        def installTorch(self, askConfirmation=False, forceComputationBackend=None,
                         torchVersionRequirement=None, torchvisionVersionRequirement=None):
            calls.append((askConfirmation, torchVersionRequirement))

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("torch>=2.1\nnumpy>=1.23\n")
    widget.panel.requirementsPath = requirements
    widget.ui.installDependenciesButton.click()
    confirms = [s for s in standin.Dialogs.shown if s[0] == "confirm"]
    assert len(confirms) == 1 and "torch>=2.1 (through the PyTorch extension)" in confirms[0][1]
    assert calls == [(False, ">=2.1")] and standin.ModuleState.pipInstalled == []
    standin.Dialogs.confirmAnswer = False  # refused: nothing installed
    widget.ui.installDependenciesButton.click()
    assert calls == [(False, ">=2.1")]


def test_first_enter_queries_the_environment_once(widget, standin):
    queried = []
    widget.panel.refreshEnvironment = lambda checked=False: queried.append(1)
    standin.enterModule(widget)
    standin.enterModule(widget)
    assert queried == [1]


def test_scene_close_and_cleanup(widget, standin):
    scene = standin.slicer.mrmlScene
    standin.enterModule(widget)
    standin.chooseNode(widget.ui.inputVolumeSelector, widget.volume)
    old = widget._parameterNode
    standin.closeScene()  # the singleton parameter node goes with the scene: a new one is made
    assert widget._parameterNode is not None and widget._parameterNode._node is not old._node
    assert widget._parameterNode.inputVolume is None and widget.ui.inputVolumeSelector.currentNode() is None
    widget.cleanup()
    assert scene._observers == [] or all(e is None for e, _ in scene._observers)


def test_cleanup_during_a_run_returns_at_once_and_leaves_the_widgets_alone(widget, standin, monkeypatch):
    import time

    monkeypatch.setenv("FAKE_SLEEP", "0.5")
    ui = widget.ui
    standin.chooseNode(ui.inputVolumeSelector, widget.volume)
    ui.applyButton.click()
    standin.runEventLoop(lambda: "tiles" in ui.statusLabel.text)
    shown = ui.statusLabel.text
    started = time.monotonic()
    widget.cleanup()  # Slicer closes: it must not wait for the child
    assert time.monotonic() - started < 0.5
    standin.runEventLoop(lambda: not widget.logic.isRunning)
    assert ui.statusLabel.text == shown and widget.logic.job.state == "cancelled"


CRF_ATTRIBUTES = {"theta_alpha": "crfThetaAlpha", "theta_beta": "crfThetaBeta",
                  "theta_gamma": "crfThetaGamma", "w1": "crfW1", "w2": "crfW2",
                  "num_iterations": "crfIterations"}
LIBRARY_CRF = {"theta_alpha": 4.0, "theta_beta": 15.0, "theta_gamma": 2.0, "w1": 5.0, "w2": 3.0,
               "num_iterations": 5}  # CRFRNN's defaults (test_crf.py checks them against SegDeepLib)


def _crfWidgets(ui, suffix="SpinBox"):
    return {name: getattr(ui, attribute + suffix) for name, attribute in CRF_ATTRIBUTES.items()}


def _crfShown(ui):
    return {name: box.value for name, box in _crfWidgets(ui).items()}


def _crfEnabled(ui):
    widgets = [*_crfWidgets(ui).values(), *_crfWidgets(ui, "Label").values(), ui.crfResetButton]
    states = {w.enabled for w in widgets}
    assert len(states) == 1, "CRF widgets disagree on their enabled state"
    return states.pop()


def _runArgv(widget, standin, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ARGS_FILE", str(tmp_path / "args.json"))
    standin.chooseNode(widget.ui.inputVolumeSelector, widget.volume)
    widget.ui.applyButton.click()
    standin.runEventLoop(lambda: not widget.panel._running)
    assert widget.ui.statusLabel.text.startswith("Done")
    return json.loads((tmp_path / "args.json").read_text())


def _crfFlags(argv):
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "--crf-param"]


def test_choosing_a_model_fills_the_crf_parameters_from_its_model_json(widget):
    ui, node = widget.ui, widget._parameterNode
    # fake-abdomen has no inference.crf: SegDeepLib's defaults shown, nothing to edit, a note says so
    assert _crfShown(ui) == LIBRARY_CRF and not _crfEnabled(ui)
    assert "no tuned CRF parameters" in ui.crfNoteLabel.text
    ui.modelSelector.setCurrentIndex(1)  # fake-bladder: its model.json (num_iterations not set)
    expected = {**FAKE_BLADDER_CRF, "num_iterations": 5}
    assert _crfShown(ui) == expected and _crfEnabled(ui) and ui.crfNoteLabel.text == ""
    assert {name: getattr(node, attribute) for name, attribute in CRF_ATTRIBUTES.items()} == expected
    ui.crfThetaAlphaSpinBox.setValue(7.25)
    assert node.crfThetaAlpha == 7.25  # stored in the parameter node
    ui.modelSelector.setCurrentIndex(0)
    ui.modelSelector.setCurrentIndex(1)  # choosing the model again: its defaults again
    assert _crfShown(ui) == expected


def test_crf_checkbox_follows_the_chosen_models_recommendation(widget):
    ui = widget.ui
    assert not ui.crfCheckBox.checked  # fake-abdomen: no CRF settings -> off
    ui.modelSelector.setCurrentIndex(1)  # fake-bladder: inference.crf.default is true
    assert ui.crfCheckBox.checked and widget._parameterNode.crf is True
    ui.modelSelector.setCurrentIndex(0)
    assert not ui.crfCheckBox.checked and widget._parameterNode.crf is False


def test_crf_off_disables_the_parameters(widget):
    ui = widget.ui
    ui.modelSelector.setCurrentIndex(1)
    assert ui.crfCheckBox.checked and _crfEnabled(ui)
    ui.crfCheckBox.setChecked(False)
    assert not _crfEnabled(ui) and widget._parameterNode.crf is False
    ui.crfCheckBox.setChecked(True)
    assert _crfEnabled(ui)


def test_changed_crf_values_reach_the_command_line_exactly(widget, standin, tmp_path, monkeypatch):
    ui = widget.ui
    ui.modelSelector.setCurrentIndex(1)
    ui.crfThetaAlphaSpinBox.setValue(7.25)
    ui.crfThetaBetaSpinBox.setValue(0.1234)  # 3 decimals, as Qt keeps it
    ui.crfIterationsSpinBox.setValue(8)
    argv = _runArgv(widget, standin, tmp_path, monkeypatch)
    assert "--crf" in argv
    assert _crfFlags(argv) == ["theta_alpha=7.25", "theta_beta=0.123", "num_iterations=8"]
    ui.crfResetButton.click()  # back to the model's values: nothing to override
    assert _crfShown(ui) == {**FAKE_BLADDER_CRF, "num_iterations": 5}
    assert widget._parameterNode.crfThetaAlpha == FAKE_BLADDER_CRF["theta_alpha"]
    argv = _runArgv(widget, standin, tmp_path, monkeypatch)
    assert "--crf" in argv and _crfFlags(argv) == []


def test_crf_parameters_are_not_sent_when_crf_is_off_or_the_model_has_none(widget, standin, tmp_path,
                                                                            monkeypatch):
    ui = widget.ui
    ui.modelSelector.setCurrentIndex(1)
    ui.crfW1SpinBox.setValue(2.5)
    ui.crfCheckBox.setChecked(False)
    argv = _runArgv(widget, standin, tmp_path, monkeypatch)
    assert "--no-crf" in argv and _crfFlags(argv) == []
    ui.modelSelector.setCurrentIndex(0)  # no CRF settings: the panel does not invent any
    ui.crfCheckBox.setChecked(True)
    argv = _runArgv(widget, standin, tmp_path, monkeypatch)
    assert "--crf" in argv and _crfFlags(argv) == []


def test_parameter_node_keeps_its_crf_values_when_the_module_is_entered_again(widget, standin):
    ui = widget.ui
    ui.modelSelector.setCurrentIndex(1)
    ui.crfThetaGammaSpinBox.setValue(4.5)
    standin.leaveModule(widget)
    ui.crfThetaGammaSpinBox.setValue(9.0)  # not connected: the node keeps 4.5
    standin.enterModule(widget)
    assert widget._parameterNode.crfThetaGamma == 4.5 and ui.crfThetaGammaSpinBox.value == 4.5
    assert ui.modelSelector.currentIndex == 1 and _crfEnabled(ui)


def test_a_saved_node_selects_its_model_and_keeps_its_crf_values(widget):
    ui, node = widget.ui, widget._parameterNode
    widget.setParameterNode(None)
    saved = {**FAKE_BLADDER_CRF, "w2": 0.75, "num_iterations": 2}  # e.g. read back from a scene
    node.modelId = "fake-bladder"
    node.crf = True
    for name, attribute in CRF_ATTRIBUTES.items():
        setattr(node, attribute, saved[name])
    widget.setParameterNode(node)
    assert ui.modelSelector.currentIndex == 1 and _crfEnabled(ui)
    assert _crfShown(ui) == saved  # not replaced by the model's defaults
    assert widget.panel.crf.overrides() == {"w2": 0.75, "num_iterations": 2}


# ---- defects of issue 11, each driven through the real PythonQt ------------------------------------
def test_a_run_that_ends_while_another_module_is_shown_still_reports(widget, standin):
    """exit() keeps the parameter node (Slicer's template): the finish handler has it."""
    ui = widget.ui
    standin.enterModule(widget)
    standin.chooseNode(ui.inputVolumeSelector, widget.volume)
    ui.applyButton.click()
    standin.leaveModule(widget)  # the user goes to another module while it runs
    standin.runEventLoop(lambda: not widget.panel._running)
    node = widget.panel.lastResult.segmentationNode
    assert ui.statusLabel.text.startswith("Done: 2 segments") and ui.progressBar.value == 100
    assert ui.show3DButton.segmentationNode() is node and ui.editInSegmentEditorButton.enabled
    assert widget._parameterNode.outputSegmentation is node
    standin.enterModule(widget)
    assert ui.applyButton.text == "Segment" and ui.applyButton.enabled


def test_scene_close_during_a_run_cancels_it_cleanly(widget, standin, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "0.5")
    ui = widget.ui
    standin.enterModule(widget)
    standin.chooseNode(ui.inputVolumeSelector, widget.volume)
    ui.applyButton.click()
    standin.runEventLoop(lambda: "tiles" in ui.statusLabel.text)
    standin.closeScene()
    standin.runEventLoop(lambda: not widget.panel._running)
    assert ui.statusLabel.text == "Cancelled" and ui.applyButton.text == "Segment"
    assert not ui.applyButton.enabled  # the new scene has no input volume chosen


def test_crf_spin_boxes_keep_the_ui_limits_after_connect_gui(widget, standin):
    """connectGui opens a spin box's range unless the parameter has WithinRange: the .ui limits
    must survive, so zero or negative CRF widths never reach the CLI."""
    import xml.etree.ElementTree as ET

    from SegDeepHelpers.crf import PARAMETERS

    root = ET.parse(widget.resourcePath("UI/SegDeep.ui")).getroot()
    ui, node = widget.ui, widget._parameterNode
    ui.modelSelector.setCurrentIndex(1)
    for p in PARAMETERS:
        element = root.find(f".//widget[@name='{p.spinBox}']")
        limits = [float(element.find(f"property[@name='{n}']/*").text) for n in ("minimum", "maximum")]
        box = getattr(ui, p.spinBox)
        assert [box.minimum, box.maximum] == limits, p.name
        box.setValue(-5)
        assert box.value == limits[0] and getattr(node, p.attribute) == limits[0], p.name
    with pytest.raises(ValueError, match="within"):
        node.crfThetaAlpha = -1.0


def test_clearing_the_model_list_emits_minus_one_and_the_panel_copes(widget):
    ui = widget.ui
    ui.modelSelector.clear()  # real Qt emits currentIndexChanged(-1)
    assert ui.organsList.count == 0 and not ui.applyButton.enabled


def _writeScript(path, text):
    import stat

    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


INFO = {"segdeeplib": "0.1.0", "python": "3.12.1", "torch": "2.13.0", "torch_cuda_build": None,
        "cuda_available": False, "gpus": [],
        "crf_backends": {"cpp": {"state": "buildable", "reason": "built on first use (about 1 min)"},
                         "cuda": {"state": "unavailable", "reason": "no CUDA device"},
                         "torch": {"state": "built"}},
        "warnings": ["UserWarning: CUDA initialization: no driver"]}


def test_environment_parses_only_the_json_and_shows_the_backends_states(widget, standin, tmp_path):
    """A warning on stderr (e.g. no ninja in Slicer's Python) must not hide the environment."""
    script = _writeScript(tmp_path / "infopython", "#!/bin/sh\n"
                          "echo 'UserWarning: ninja not found; the C++ CRF backend cannot be built' >&2\n"
                          f"cat <<'JSON'\n{json.dumps(INFO, indent=2)}\nJSON\n"
                          "echo 'a trailing notice'\n")
    widget.logic.python = script
    widget.ui.refreshEnvironmentButton.click()
    standin.runEventLoop(lambda: widget.ui.environmentLabel.text != "Checking...")
    text = widget.ui.environmentLabel.text
    assert text.startswith("SegDeepLib 0.1.0, PyTorch 2.13.0"), text
    assert "cpp: buildable (built on first use (about 1 min))" in text
    assert "cuda: unavailable (no CUDA device)" in text and "torch: built" in text
    assert text.endswith("Warnings: UserWarning: CUDA initialization: no driver")
    assert widget.panel.environmentInfo == INFO
    assert "CPU-only" in widget.ui.deviceInfoLabel.text


def test_first_run_shows_the_crf_build_as_a_stage_with_its_estimate(widget, standin, monkeypatch):
    monkeypatch.setenv("FAKE_BUILD", "1")
    ui = widget.ui
    standin.chooseNode(ui.inputVolumeSelector, widget.volume)
    shown, values = [], []
    original = widget.panel.onProgress
    widget.panel.onProgress = lambda e: (original(e), shown.append(ui.statusLabel.text),
                                         values.append(ui.progressBar.value))
    ui.applyButton.click()
    widget.logic.job.onEvent = widget.logic._eventHandler(widget.panel.onProgress, widget.panel.appendLog)
    standin.runEventLoop(lambda: not widget.panel._running)
    assert shown[0] == "build CRF extension (building the CRF extension (cpu), first use: ~1 min) - ETA 60 s"
    assert values == sorted(values) and ui.statusLabel.text.startswith("Done")


def test_segment_names_match_exactly_so_a_users_liver_is_kept(widget, standin):
    """Slicer finds segments by name ignoring case: the label "liver" must not overwrite "Liver"."""
    import numpy as np

    ui = widget.ui
    existing = standin.slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "mine")
    existing.SetReferenceImageGeometryParameterFromVolumeNode(widget.volume)
    mine = existing.GetSegmentation().AddEmptySegment("", "Liver", [1, 0, 0])
    mask = np.zeros(widget.volume._array.shape, np.uint8)
    mask[0, 0, 1] = 1
    standin.slicer.util.updateSegmentBinaryLabelmapFromArray(mask, existing, mine, widget.volume)
    assert existing.GetSegmentation().GetSegmentIdBySegmentName("liver") == mine  # as Slicer does
    standin.chooseNode(ui.inputVolumeSelector, widget.volume)
    standin.chooseNode(ui.outputSegmentationSelector, existing)
    ui.applyButton.click()
    standin.runEventLoop(lambda: not widget.panel._running)
    segments = existing.GetSegmentation()
    names = [segments.GetSegment(i).GetName() for i in segments.GetSegmentIDs()]
    assert names == ["Liver", "liver", "spleen"]
    assert segments.GetSegment(mine)._mask.sum() == 1  # the user's segment is untouched
    assert widget.panel.lastResult.backupNode is None  # nothing of the user's was replaced


def test_run_arguments_are_what_the_parameter_node_says(widget, standin, tmp_path, monkeypatch):
    """Issue 13: Segment reads the run options from the parameter node (not from the widgets) and
    turns them into the command line through jobs.CLI_OPTIONS."""
    from SegDeepHelpers import jobs

    ui, node = widget.ui, widget._parameterNode
    ui.modelSelector.setCurrentIndex(1)  # fake-bladder: CRF settings, CRF on
    node.device, node.fast, node.tta, node.crfW1 = "cpu", True, True, 9.5  # the node, not the widgets
    argv = _runArgv(widget, standin, tmp_path, monkeypatch)
    flags = argv[argv.index("--device"):argv.index("--progress")]
    assert flags == ["--device", "cpu", "--crf", "--crf-param", "w1=9.5", "--fast", "--tta"]
    assert flags == jobs.NodeOptions(node, widget.panel.crf.defaults).cliArguments()
    assert argv[argv.index("--model") + 1] == node.modelId == "fake-bladder"
    # every row of the table but the derived crfParams is a parameter-node field
    assert all(hasattr(node, o.field) for o in jobs.CLI_OPTIONS if o.kind != "crfParams")
