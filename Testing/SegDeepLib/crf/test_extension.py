"""Bundled extensions: nvcc compiles the CUDA kernels without torch; failed builds fall back."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
import torch

from SegDeepLib.crf import CRFRNN, available_backends, backends, extension
from SegDeepLib.errors import SegDeepError


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    default = Path("/usr/local/cuda/bin/nvcc")
    return str(default) if default.exists() else None


def test_cuda_kernels_compile_with_nvcc_alone(tmp_path):
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not installed")
    src = extension.CSRC / "crf_kernels.cu"
    assert "#include <torch" not in src.read_text() and "ATen" not in src.read_text()
    obj = tmp_path / "crf_kernels.o"
    proc = subprocess.run(
        [nvcc, "-c", "-O2", "-std=c++17", "-Werror", "all-warnings", str(src), "-o", str(obj)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert obj.stat().st_size > 0
    symbols = subprocess.run(["nm", str(obj)], capture_output=True, text=True, check=False).stdout
    for name in (
        "segdeep_lattice_filter_f32",
        "segdeep_lattice_filter_f64",
        "segdeep_band_pass_f32",
        "segdeep_band_pass_f64",
    ):
        assert f" T {name}" in symbols, name


def test_header_is_plain_c(tmp_path):
    """The interface header compiles as C (no C++ or torch types leak into it)."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    src = tmp_path / "use.c"
    src.write_text('#include "crf_kernels.h"\nint main(void) { return 0; }\n')
    proc = subprocess.run(
        [cc, "-std=c99", "-fsyntax-only", f"-I{extension.CSRC}", str(src)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_failed_build_falls_back_with_one_warning(monkeypatch):
    def broken(kind):
        raise RuntimeError("compiler exploded\nerror: no compiler found\nninja: build stopped")

    monkeypatch.setattr(extension, "_LOADED", {})
    monkeypatch.setattr(extension, "_ERRORS", {})
    monkeypatch.setattr(extension, "_compile", broken)
    with pytest.warns(RuntimeWarning, match="falling back") as record:
        assert extension.load_extension("cpu") is None
    assert len(record) == 1 and "\n" not in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # second call: cached, silent
        assert extension.load_extension("cpu") is None
        assert backends.resolve_backend("auto", torch.device("cpu")) == "torch"
        assert "cpp" not in available_backends()
    out = CRFRNN(2, num_iterations=1)(
        torch.randn(1, 2, 2, 3, 4), torch.randn(1, 1, 2, 3, 4), (1.0, 1.0, 1.0)
    )
    assert torch.isfinite(out).all()
    assert extension.extension_error("cpu") == "error: no compiler found"


def test_auto_prefers_the_cpp_extension():
    if "cpp" not in available_backends():
        pytest.skip("C++ extension unavailable here")
    assert backends.resolve_backend("auto", torch.device("cpu")) == "cpp"
    assert extension.extension_error("cpu") is None


def test_cuda_backend_reports_unavailable_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert "cuda" not in available_backends()
    with pytest.raises(SegDeepError, match="cuda"):
        backends.resolve_backend("cuda", torch.device("cpu"))


def test_stale_build_lock_is_removed(tmp_path) -> None:
    import os
    import time

    from SegDeepLib.crf import extension

    fresh = tmp_path / "fresh"
    stale = tmp_path / "stale"
    for folder in (fresh, stale):
        folder.mkdir()
        (folder / "lock").write_text("")
    old = time.time() - extension.STALE_LOCK_S - 5
    os.utime(stale / "lock", (old, old))
    extension._remove_stale_lock(fresh)
    extension._remove_stale_lock(stale)
    assert (fresh / "lock").exists()  # a live build keeps its lock
    assert not (stale / "lock").exists()
