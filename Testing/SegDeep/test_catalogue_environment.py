"""Catalogue reading/formatting and the environment helpers (pure Python parts of the panel)."""

from __future__ import annotations

import json

import pytest

from Testing.SegDeep.helpers import write_catalogue


@pytest.fixture
def catalogue(helpers_path):
    from SegDeepHelpers import catalogue

    return catalogue


def test_catalogue_entries_and_details(catalogue, tmp_path):
    models = catalogue.loadCatalogue(write_catalogue(tmp_path / "c.json"), userDir=tmp_path / "none")
    assert [m.id for m in models] == ["fake-abdomen", "fake-bladder"]
    assert models[0].organs == ("liver", "spleen") and models[1].organs == ("urinary_bladder",)
    assert models[1].licence == "Apache-2.0"  # US spelling accepted
    assert models[0].timeSeconds("cpu") == 340 and models[0].timeSeconds("gpu") == 12
    assert models[1].timeSeconds("gpu") is None
    html = catalogue.detailsHtml(models[0])
    assert "<h4>Abdomen (fake)</h4>" in html and "liver: 0.91" in html and "cpu_s: 340" in html


def test_shipped_card_layout_reads_as_one_line_each(catalogue):
    accuracy = {"held_out": {"case_a": {"liver": {"dsc": 0.9}}, "case_b": {"liver": {"dsc": 0.7}}},
                "mean_dsc": {"liver": 0.8, "spleen": 0.0}, "note": "never used for training"}
    assert catalogue.accuracyText(accuracy) == (
        "mean Dice on 2 unseen case(s) (case_a, case_b): liver 0.8, spleen 0")
    timing = {"cpu_seconds": 6.4, "cpu_threads": 2, "volume": "ct: 122x101x112 voxels at 3 mm"}
    assert catalogue.timingText(timing) == "CPU 6.4 s for ct: 122x101x112 voxels at 3 mm (2 CPU threads)"
    assert catalogue.timingText({"cpu_s": 340}) == "cpu_s: 340"  # other layouts as they are


def test_catalogue_as_a_plain_list_and_missing_file(catalogue, tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps([{"id": "m1", "organs": {"labels": [{"value": 1, "name": "liver"}]}}]))
    [model] = catalogue.loadCatalogue(path, userDir=tmp_path)
    assert model.title == "m1" and model.organs == ("liver",)
    assert catalogue.loadCatalogue(tmp_path / "absent.json", userDir=tmp_path) == []
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        catalogue.loadCatalogue(tmp_path / "bad.json")
    (tmp_path / "noid.json").write_text('[{"title": "x"}]')
    with pytest.raises(ValueError, match="without an 'id'"):
        catalogue.loadCatalogue(tmp_path / "noid.json")


def test_same_models_as_segdeeplib_including_user_models(catalogue, tmp_path, monkeypatch):
    """Independent reference: SegDeepLib.inference.load_catalogue on the same files."""
    from SegDeepLib.inference.catalogue import load_catalogue
    from SegDeepLib.io.labels import LabelTable
    from SegDeepLib.io.model_folder import save_model_folder

    user = tmp_path / "user-models"
    spec = {"id": "my-liver", "title": "My liver model", "method": "3D U-Net", "modality": "CT",
            "networks": {"main": {"name": "unet3d", "width": 2, "depth": 1, "num_classes": 2}},
            "labels": LabelTable.from_names(["liver"]).to_dict(), "metrics": {"dice": {"liver": 0.8}},
            "training": {"data": "own", "cases": 3, "licence": "CC BY 4.0"}}
    save_model_folder(user / "my-liver", spec, {"main": {}})
    (user / "broken").mkdir()
    (user / "broken" / "model.json").write_text("{")
    monkeypatch.setenv("SEGDEEP_MODELS_DIR", str(user))
    shipped = write_catalogue(tmp_path / "catalogue.json")
    ours = catalogue.loadCatalogue(shipped)
    assert [m.id for m in ours] == ["fake-abdomen", "fake-bladder", "my-liver"]
    assert catalogue.userModelsDir() == user
    mine = ours[-1]
    assert mine.organs == ("liver",) and mine.licence == "CC BY 4.0" and "0.8" in catalogue.detailsHtml(mine)
    if catalogue.defaultCataloguePath().exists():
        reference = [m["id"] for m in load_catalogue()["models"]]
        assert [m.id for m in catalogue.loadCatalogue()] == reference


def test_shipped_catalogue_loads_when_present(catalogue):
    path = catalogue.defaultCataloguePath()
    assert path.exists(), f"the shipped catalogue is missing: {path}"
    models = catalogue.loadCatalogue()
    assert models and all(m.id and m.organs for m in models)


@pytest.mark.parametrize("seconds, text", [(None, ""), (12.4, "12 s"), (340, "6 min"), (7200, "2.0 h")])
def test_format_duration(catalogue, seconds, text):
    assert catalogue.formatDuration(seconds) == text


def test_cpu_warning(catalogue, tmp_path):
    slow, _ = catalogue.loadCatalogue(write_catalogue(tmp_path / "c.json"), userDir=tmp_path)
    assert "about 6 min" in catalogue.cpuWarning(slow) and "Fast" in catalogue.cpuWarning(slow)
    assert "Fast" not in catalogue.cpuWarning(slow, fast=True)
    unknown = catalogue.entryFromDict({"id": "x"})
    assert "much longer than on a GPU" in catalogue.cpuWarning(unknown)


def test_environment_helpers(helpers_path, tmp_path):
    from SegDeepHelpers import environment

    path = tmp_path / "req.txt"
    path.write_text("# c\ntorch>=2.1\nnumpy>=1.23  # owned\nslicerio[extra]>=1.1\n\nnot-installed-pkg-xyz==1\n")
    requirements = environment.readRequirements(path)
    assert requirements == ["torch>=2.1", "numpy>=1.23", "slicerio[extra]>=1.1", "not-installed-pkg-xyz==1"]
    assert [environment.requirementName(r) for r in requirements] == [
        "torch", "numpy", "slicerio", "not-installed-pkg-xyz"]
    assert environment.missingRequirements(requirements) == ["not-installed-pkg-xyz==1"]
    assert environment.installedVersion("numpy") is not None
    gpu = {"torch": "2.13.0", "cuda_available": True, "gpus": ["NVIDIA H100"], "torch_cuda_build": "12.4"}
    assert environment.gpuDescription(gpu) == "NVIDIA H100 (CUDA 12.4)"
    assert "CPU-only" in environment.gpuDescription({"torch": "2.13.0", "torch_cuda_build": None})
    assert environment.gpuDescription({"torch": None}) == "PyTorch is not installed"
    assert environment.diagnosticsText({"a": 1}, {"b": 2}) == "a: 1\nb: 2"
    installer = environment.DependencyInstaller(requirements, confirm=lambda text: True)
    assert installer.plan(hasTorch=False)[0].startswith("torch>=2.1")
    assert installer.plan(hasTorch=True) == ["not-installed-pkg-xyz==1"]


def test_info_output_json_is_found_among_other_lines(helpers_path):
    """`info --json` may share its stream with warnings (merged stderr): only the JSON is parsed."""
    from SegDeepHelpers import environment

    info = {"segdeeplib": "0.1.0", "crf_backends": {"cpp": {"state": "built"}}}
    pretty = json.dumps(info, indent=2).splitlines()
    lines = ["UserWarning: ninja not found", *pretty, "", "done"]
    assert environment.parseInfoOutput(lines) == (info, ["UserWarning: ninja not found", "done"])
    assert environment.parseInfoOutput([json.dumps(info)]) == (info, [])
    assert environment.parseInfoOutput(["{not json", "Traceback"]) == ({}, ["{not json", "Traceback"])
    assert environment.parseInfoOutput(['{"event": "log"}']) == ({}, ['{"event": "log"}'])


def test_crf_backend_states_in_every_shape(helpers_path):
    from SegDeepHelpers.environment import crfBackendsText

    assert crfBackendsText({"cpp": {"state": "buildable", "reason": "needs a compiler: found g++"},
                            "cuda": {"state": "unavailable", "reason": "no CUDA device"},
                            "torch": "built"}) == (
        "cpp: buildable (needs a compiler: found g++); cuda: unavailable (no CUDA device); torch: built")
    assert crfBackendsText([{"name": "cpp", "available": False, "reason": "no ninja"}, "torch"]) == (
        "cpp: unavailable (no ninja); torch: available")
    assert crfBackendsText(["cpp", "torch"]) == "cpp: available; torch: available"
    assert crfBackendsText(None) == "unknown" and crfBackendsText([]) == "none"


def test_overall_progress_is_monotonic_over_stages(helpers_path):
    from SegDeepHelpers.jobs import OverallProgress

    progress = OverallProgress(["preprocess", "tiles", "crf", "postprocess", "write"])
    events = [("crf-build", 0.0), ("crf-build", 1.0), ("preprocess", 0.0),
              ("preprocess", 1.0), *[("tiles", i / 4) for i in range(5)], ("crf", 0.5), ("crf", 1.0),
              ("preprocess", 0.0), ("tiles", 0.5), ("write", 1.0)]  # a cascade's 2nd pass, postprocess skipped
    values = [progress.update(stage, fraction) for stage, fraction in events]
    assert values == sorted(values) and 0 == values[0] and values[-1] < 1
    assert values[8] > values[4] + 0.3  # the tiles weigh most
    assert progress.finish() == 1.0
