"""The CRF runs on the device of the segmentation (``segdeep segment --device cuda --crf``,
``segdeep crf --device``), not on the CPU; a GPU out-of-memory error falls back to the CPU.

No GPU here: the run's device is the ``meta`` device, which stands for any non-CPU device (a
tensor moved there keeps its device, and ``crf_refine`` is replaced by a recorder).
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import SegDeepLib.crf as crf_pkg
from SegDeepLib.cli.main import main
from SegDeepLib.inference import Predictor
from SegDeepLib.inference import device as device_mod
from SegDeepLib.inference import run as run_mod
from Testing.SegDeepLib.inference.tiny_nets import make_model_folder

META = torch.device("meta")


class Recorder:
    """Stands in for crf_refine: records the devices it got; OOM on ``oom_on``."""

    def __init__(self, oom_on: str | None = None) -> None:
        self.calls: list[tuple[str, str, dict]] = []
        self.oom_on = oom_on

    def __call__(self, probs, features, spacing, **params):
        self.calls.append((probs.device.type, features.device.type, params))
        if probs.device.type == self.oom_on:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.full(probs.shape, 1.0 / probs.shape[0])


def _image(shape=(6, 7, 8)) -> sitk.Image:
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.uniform(-50, 250, size=shape).astype(np.float32))
    image.SetSpacing((1.0, 1.0, 1.0))
    return image


@pytest.fixture
def predictor(tmp_path):
    net = {"name": "test_centres", "centres": [0.0, 100.0, 200.0], "scale": 5e-4}
    params = {"theta_alpha": 3.0, "num_iterations": 1}
    folder = make_model_folder(
        tmp_path / "crf",
        {"main": net},
        ("liver", "spleen"),
        inference={"tile_size": [8, 8, 8], "crf": {"default": True, "params": params}},
    )
    return Predictor.from_folder(folder)


def _run_crf_on(monkeypatch, device: torch.device) -> None:
    """Make the prediction's device ``device`` when its CRF stage starts."""
    original = run_mod.PredictionRun.crf

    def crf(self, pre, probs, image):
        self.device = device
        return original(self, pre, probs, image)

    monkeypatch.setattr(run_mod.PredictionRun, "crf", crf)


def test_segment_runs_the_crf_on_the_run_device(predictor, monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(crf_pkg, "crf_refine", recorder)
    _run_crf_on(monkeypatch, META)
    result = predictor.predict(_image(), device="cpu", probabilities=True)
    assert [c[:2] for c in recorder.calls] == [("meta", "meta")]
    assert recorder.calls[0][2]["theta_alpha"] == 3.0
    assert result.probabilities.shape[0] == 3  # the (CPU) result came back


def test_segment_crf_out_of_memory_on_the_gpu_continues_on_the_cpu(predictor, monkeypatch):
    recorder = Recorder(oom_on="meta")
    monkeypatch.setattr(crf_pkg, "crf_refine", recorder)
    _run_crf_on(monkeypatch, META)
    events = []
    predictor.predict(_image(), device="cpu", progress=events.append)
    assert [c[0] for c in recorder.calls] == ["meta", "cpu"]
    assert any("continuing on the CPU" in (e.message or "") for e in events)


def test_run_or_cpu_reraises_other_errors_and_cpu_oom():
    def boom(device):
        raise ValueError("not memory")

    with pytest.raises(ValueError):
        device_mod.run_or_cpu(boom, META)

    def oom(device):
        raise torch.cuda.OutOfMemoryError("out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        device_mod.run_or_cpu(oom, torch.device("cpu"))


@pytest.fixture
def crf_case(tmp_path):
    image = _image()
    sitk.WriteImage(image, str(tmp_path / "ct.nii.gz"))
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, size=(6, 7, 8)).astype(np.float32)
    np.save(tmp_path / "probs.npy", np.stack([1 - p, p], 0))
    return tmp_path


def _crf_cli(tmp, *extra) -> int:
    args = ["crf", str(tmp / "probs.npy"), str(tmp / "ct.nii.gz"), "-o", str(tmp / "q.npy")]
    return main([*args, "--overwrite", *extra])


def test_crf_cli_runs_on_the_selected_device(crf_case, monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(crf_pkg, "crf_refine", recorder)
    requested = []

    def select(name, progress=None):
        requested.append(name)
        return META if name in ("auto", "cuda") else torch.device("cpu")

    monkeypatch.setattr(device_mod, "select_device", select)
    assert _crf_cli(crf_case, "--device", "cuda") == 0
    assert recorder.calls[-1][:2] == ("meta", "meta")
    assert np.load(crf_case / "q.npy").shape == (2, 6, 7, 8)
    assert _crf_cli(crf_case) == 0 and recorder.calls[-1][:2] == ("meta", "meta")  # auto: GPU
    # a backend that takes CPU tensors only makes "auto" the CPU
    assert _crf_cli(crf_case, "--backend", "cpp") == 0 and requested[-1] == "cpu"
    assert recorder.calls[-1][:2] == ("cpu", "cpu")
    assert requested == ["cuda", "auto", "cpu"]


def test_crf_cli_really_refines_on_the_cpu(crf_case):
    assert _crf_cli(crf_case, "--device", "cpu", "--backend", "torch", "--iterations", "2") == 0
    q = np.load(crf_case / "q.npy")
    assert np.allclose(q.sum(0), 1.0, atol=1e-5)
    assert np.abs(q - np.load(crf_case / "probs.npy")).max() > 1e-3
