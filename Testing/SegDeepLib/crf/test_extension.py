"""Bundled extensions: nvcc compiles the CUDA kernels without torch; failed builds fall back."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SegDeepLib.crf import CRFRNN, available_backends, backends, extension
from SegDeepLib.crf.build_lock import FileLock
from SegDeepLib.errors import SegDeepError


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    default = Path("/usr/local/cuda/bin/nvcc")
    return str(default) if default.exists() else None


@pytest.mark.parametrize("arch", [None, "sm_90"])
def test_cuda_kernels_compile_with_nvcc_alone(tmp_path, arch):
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not installed (no CUDA toolkit on this machine)")
    src = extension.CSRC / "crf_kernels.cu"
    assert "#include <torch" not in src.read_text() and "ATen" not in src.read_text()
    obj = tmp_path / "crf_kernels.o"
    target = [f"-arch={arch}"] if arch else []  # None: nvcc's default architecture
    proc = subprocess.run(
        [nvcc, "-c", "-O2", "-std=c++17", "-Werror", "all-warnings", *target, str(src), "-o",
         str(obj)],
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
    def broken(kind, progress=None, cancel=None):
        raise RuntimeError("compiler exploded\nerror: no compiler found\nninja: build stopped")

    monkeypatch.setattr(extension, "_LOADED", {})
    monkeypatch.setattr(extension, "_ERRORS", {})
    monkeypatch.setattr(extension, "_compile", broken)
    with pytest.warns(RuntimeWarning, match="falling back") as record:
        assert extension.load_extension("cpu") is None
    assert len(record) == 1 and "\n" not in str(record[0].message)
    with pytest.warns(RuntimeWarning, match="emulated"):  # the host build of the CUDA kernels
        assert extension.load_extension("emulated") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # second call: cached, silent
        assert extension.load_extension("cpu") is None
        assert backends.resolve_backend("auto", torch.device("cpu")) == "torch"
        assert "cpp" not in available_backends()
        assert "cuda_emulated" not in available_backends()
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


# --- crf_cuda.cpp against torch's headers (issue 14, 2.2) ------------------------------------


def _cuda_include() -> Path | None:
    """The CUDA toolkit's include folder (nvcc may be a wrapper script outside the toolkit)."""
    nvcc = extension.find_nvcc()
    if nvcc is None:
        return None
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [Path(home)] if home else []
    candidates += [Path(nvcc).resolve().parent.parent, Path("/usr/local/cuda")]
    for folder in candidates:
        if (folder / "include" / "cuda_runtime_api.h").is_file():
            return folder / "include"
    return None


def _torch_cuda_flags(tmp_path: Path) -> list[str]:
    """Include flags for crf_cuda.cpp: torch's headers, CUDA's, Python's; a CPU build of torch
    lacks one generated header of c10/cuda, written here as CUDA builds of torch ship it."""
    import sysconfig

    from torch.utils.cpp_extension import include_paths

    shim = tmp_path / "shim"
    macros = shim / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    macros.parent.mkdir(parents=True)
    macros.write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    dirs = [*include_paths(), str(_cuda_include()), sysconfig.get_paths()["include"], str(shim)]
    return [f"-I{d}" for d in dirs] + ["-std=c++20", "-DTORCH_EXTENSION_NAME=check"]


@pytest.mark.slow
def test_cuda_binding_compiles_against_torch_with_a_minimal_toolkit(tmp_path):
    """g++ compiles crf_cuda.cpp with torch's and CUDA's headers, needing nothing of the toolkit
    beyond the runtime API (no cuSPARSE/cuBLAS headers, which ATen/cuda/CUDAContext.h pulls in)."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None or _cuda_include() is None:
        pytest.skip("no C++ compiler or no CUDA toolkit headers (nvcc) on this machine")
    src = extension.CSRC / "crf_cuda.cpp"
    flags = _torch_cuda_flags(tmp_path)
    deps = subprocess.run(
        [cxx, "-M", *flags, str(src)], capture_output=True, text=True, timeout=300, check=False
    )
    assert deps.returncode == 0, deps.stderr[-2000:]
    needed = [h for h in ("cusparse.h", "cublas_v2.h", "cublas_api.h") if h in deps.stdout]
    assert needed == [], f"crf_cuda.cpp needs {needed}: a minimal CUDA toolkit cannot build it"
    proc = subprocess.run(
        [cxx, "-fsyntax-only", *flags, str(src)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


# --- status without building; reasons (issues 11 2.2, 14 2.3) --------------------------------


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A process state where no extension was tried, and an empty cache."""
    monkeypatch.setattr(extension, "_LOADED", {})
    monkeypatch.setattr(extension, "_ERRORS", {})
    monkeypatch.setenv("SEGDEEP_EXT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(extension.DISABLE_ENV, raising=False)
    built = []
    monkeypatch.setattr(extension, "_build", lambda *args, **kw: built.append(args))
    return built


def test_cuda_reasons_cpu_torch_gpu_nvcc(fresh, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    assert extension.status("cuda").reason == (
        "PyTorch is a CPU-only build (torch.version.cuda is None)"
    )
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert extension.status("cuda").reason.startswith("no CUDA GPU")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(extension, "find_nvcc", lambda: "/opt/cuda/bin/nvcc")
    monkeypatch.setattr(extension, "nvcc_version", lambda nvcc: "13.0")
    if extension.toolchain_problem("cpu") is not None:
        pytest.skip(f"no C++ toolchain: {extension.toolchain_problem('cpu')}")
    st = extension.status("cuda")
    assert st.state == "unavailable"
    assert st.reason == "nvcc is CUDA 13.0 but PyTorch was built with CUDA 12.8; majors must match"
    with pytest.warns(RuntimeWarning, match="majors must match"):
        assert extension.load_extension("cuda") is None
    assert fresh == []  # refused before building
    monkeypatch.setattr(extension, "nvcc_version", lambda nvcc: "12.4")
    monkeypatch.setattr(extension, "_ERRORS", {})
    assert extension.status("cuda").state == "buildable"
    monkeypatch.setattr(extension, "find_nvcc", lambda: None)
    assert extension.status("cuda").reason.startswith("nvcc not found")


def test_nvcc_version_is_read_from_nvcc():
    nvcc = extension.find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not installed")
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    version = extension.nvcc_version(nvcc)
    assert version is not None and f"release {version}" in out


def test_cpu_reasons_no_compiler_no_ninja(fresh, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-segdeep")
    st = extension.status("cpu")
    assert (st.state, st.reason) == (
        "unavailable", "no C++ compiler (no-such-compiler-segdeep not found; install one or set CXX)"
    )
    monkeypatch.delenv("CXX")
    if extension.toolchain_problem("cpu") is not None:
        pytest.skip(f"no C++ toolchain: {extension.toolchain_problem('cpu')}")
    monkeypatch.setattr(extension, "_ninja_dir", lambda: None)
    assert extension.status("cpu").reason == "ninja not found (pip install ninja)"
    with pytest.warns(RuntimeWarning, match="ninja not found"):
        assert extension.load_extension("cpu") is None
    assert fresh == []
    monkeypatch.setenv(extension.DISABLE_ENV, "1")
    assert extension.status("cpu").reason == f"disabled by {extension.DISABLE_ENV}"


def test_ninja_package_counts_when_ninja_is_not_on_path(monkeypatch):
    ninja = pytest.importorskip("ninja")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert extension._ninja_dir() == str(Path(ninja.BIN_DIR))
    with extension._ninja_on_path():
        assert shutil.which("ninja") is not None  # torch finds it while building
    assert shutil.which("ninja") is None


def test_status_is_buildable_then_built_without_building(fresh, tmp_path):
    if extension.toolchain_problem("cpu") is not None:
        pytest.skip(f"no C++ toolchain: {extension.toolchain_problem('cpu')}")
    st = extension.status("cpu")
    assert st.state == "buildable" and st.estimate_s == extension.KINDS["cpu"].estimate_s
    name = extension.build_name("cpu")
    half = tmp_path / "cache" / name
    half.mkdir(parents=True)
    (half / f"{name}{extension.LIB_EXT}").write_bytes(b"half")  # no build.json: not finished
    assert extension.status("cpu").state == "buildable"
    (half / "build.json").write_text("{}")
    assert extension.status("cpu").to_dict() == {"state": "built", "reason": None}
    assert fresh == []


def test_cache_key_is_content_not_path(tmp_path, monkeypatch):
    copy = tmp_path / "checkout2" / "csrc"
    shutil.copytree(extension.CSRC, copy)
    name = extension.build_name("cpu")
    moved = dataclasses.replace(extension.KINDS["cpu"], source_dir=copy)
    monkeypatch.setitem(extension.KINDS, "cpu", moved)
    assert extension.build_name("cpu") == name  # a second checkout reuses the build
    (copy / "block_cache.h").write_text((copy / "block_cache.h").read_text() + "\n// edit\n")
    assert extension.build_name("cpu") != name  # a header is part of the key
    (copy / "block_cache.h").write_bytes((extension.CSRC / "block_cache.h").read_bytes())
    monkeypatch.setitem(extension.KINDS, "cpu", dataclasses.replace(moved, cflags=("-O2",)))
    assert extension.build_name("cpu") != name
    monkeypatch.setitem(extension.KINDS, "cpu", moved)
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    assert extension.build_name("cpu") != name


def test_info_json_never_builds_and_stdout_is_pure_json(fresh, monkeypatch, capsys):
    from SegDeepLib.cli.main import main

    monkeypatch.setattr(extension, "_compile", lambda *a, **k: fresh.append(a))
    monkeypatch.setenv("SEGDEEP_CRF_CACHE_MB", "lots")  # warns while collecting
    assert main(["info", "--json"]) == 0
    out = capsys.readouterr().out
    info = json.loads(out)
    assert fresh == []
    assert set(info["crf_backends"]) == {"exact", "torch", "cpp", "cuda", "cuda_emulated"}
    for entry in info["crf_backends"].values():
        assert entry["state"] in ("built", "buildable", "unavailable")
        assert (entry["reason"] is None) == (entry["state"] == "built")
    assert any("SEGDEEP_CRF_CACHE_MB" in w for w in info["warnings"])
    if not torch.cuda.is_available():
        assert info["crf_backends"]["cuda"]["state"] == "unavailable"


# --- self-check after loading (issue 14, 2.3) ------------------------------------------------


def test_self_check_accepts_the_real_module_and_rejects_a_wrong_one():
    from SegDeepLib.crf import selfcheck

    module = extension.load_extension("cpu")
    if module is None:
        pytest.skip("C++ extension unavailable here")
    selfcheck.check_lattice_module(module, torch.device("cpu"), fused=True)

    class Wrong:
        def __getattr__(self, name):
            real = getattr(module, name)
            if name != "lattice_filter":
                return real

            def shifted(*args, **kwargs):
                out = real(*args, **kwargs)
                out.view(-1)[1] += 0.5  # one wrong value
                return out

            return shifted

    with pytest.raises(selfcheck.SelfCheckError, match="lattice forward differs"):
        selfcheck.check_lattice_module(Wrong(), torch.device("cpu"), fused=True)

    class Crashing:
        def __getattr__(self, name):
            raise RuntimeError("CUDA error: no kernel image is available for execution")

    with pytest.raises(selfcheck.SelfCheckError, match="no kernel image"):
        selfcheck.check_lattice_module(Crashing(), torch.device("cpu"), fused=False)


def test_failed_self_check_falls_back_with_one_warning(monkeypatch):
    if extension.load_extension("cpu") is None:
        pytest.skip("C++ extension unavailable here")
    from SegDeepLib.crf import selfcheck

    def failing(module):
        raise selfcheck.SelfCheckError("self-check: lattice forward differs (max 0.1)")

    monkeypatch.setattr(extension, "_LOADED", {})
    monkeypatch.setattr(extension, "_ERRORS", {})
    monkeypatch.setitem(
        extension.KINDS, "cpu", dataclasses.replace(extension.KINDS["cpu"], check=failing)
    )
    with pytest.warns(RuntimeWarning, match="self-check") as record:
        assert extension.load_extension("cpu") is None
    assert len(record) == 1
    assert backends.resolve_backend("auto", torch.device("cpu")) == "torch"
    assert extension.status("cpu").state == "unavailable"


def test_memory_limit_reaches_the_module_on_load(monkeypatch):
    """The cache limit is applied by memory's on_load hook (extension no longer imports memory)."""
    module = extension.load_extension("cpu")
    if module is None:
        pytest.skip("C++ extension unavailable here")
    from SegDeepLib.crf import memory

    assert memory.apply_cache_limit in extension._ON_LOAD["cpu"]
    monkeypatch.setenv("SEGDEEP_CRF_CACHE_MB", "7")
    seen = []
    monkeypatch.setattr(extension, "_LOADED", {})
    monkeypatch.setitem(extension._ON_LOAD, "cpu", [seen.append, *extension._ON_LOAD["cpu"]])
    assert extension.load_extension("cpu") is module
    assert seen == [module] and module.cache_stats()["limit_bytes"] == 7 * 2**20
    memory.set_cache_limit(None)


# --- the lock -------------------------------------------------------------------------------


def test_lock_names_its_owner_and_dies_with_it(tmp_path):
    path = tmp_path / "x.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom SegDeepLib.crf.build_lock import FileLock\n"
         f"lock = FileLock({str(path)!r}); assert lock.try_acquire(); print('held', flush=True)\n"
         "time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = FileLock(path)
        assert not lock.try_acquire()
        assert lock.owner().startswith(f"PID {holder.pid} on ")
        seen = []
        assert not lock.acquire(lambda owner, waited: seen.append(owner), timeout_s=0.3)
        assert seen and seen[0] == lock.owner()
        holder.kill()
        holder.wait()
        start = time.monotonic()
        assert lock.acquire(timeout_s=5)  # the owner is gone: taken over at once
        assert time.monotonic() - start < 1
        assert lock.owner().startswith(f"PID {os.getpid()} on ")
        lock.release()
    finally:
        holder.kill()
        holder.wait()


def test_cancel_token_stops_a_waiter(tmp_path):
    from SegDeepLib.errors import CancelledError
    from SegDeepLib.progress import CancelToken

    path = tmp_path / "x.lock"
    with FileLock(path) as mine:
        assert mine.try_acquire()
        other = FileLock(path)  # a second open file: excluded like another process (flock)
        token = CancelToken()
        with pytest.raises(CancelledError):
            other.acquire(lambda owner, waited: token.cancel(), cancel=token, timeout_s=10)


# --- the first build is a stage of the segmentation run (issue 11, 2.2) ---------------------


def test_first_build_is_its_own_progress_stage_in_a_segmentation(tmp_path, monkeypatch):
    from SegDeepLib.inference import Predictor
    from Testing.SegDeepLib.inference.tiny_nets import make_model_folder

    module = extension.load_extension("cpu")
    if module is None:
        pytest.skip("C++ extension unavailable here")
    monkeypatch.setattr(extension, "_LOADED", {})
    monkeypatch.setattr(extension, "HEARTBEAT_S", 0.2)
    monkeypatch.setenv("SEGDEEP_EXT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(extension, "_build", lambda *a, **k: time.sleep(0.7) or module)
    folder = make_model_folder(
        tmp_path / "crf",
        {"main": {"name": "test_centres", "centres": [0.0, 100.0, 200.0], "scale": 5e-4}},
        ("liver", "spleen"),
        inference={"tile_size": [8, 8, 8], "crf": {"default": True, "params": {
            "num_iterations": 1}}},
    )
    image = sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 200, (6, 7, 8)))
    events = []
    Predictor.from_folder(folder).predict(image, device="cpu", progress=events.append)
    stages = [e.stage for e in events if e.event == "progress"]
    build = [e for e in events if e.stage == extension.BUILD_STAGE]
    assert build[0].message == "building the CRF extension (cpu), first use: ~1 min"
    assert build[0].fraction < 0.05 and build[0].eta_s > 50
    assert len(build) >= 3 and build[-1].fraction == 1.0  # heartbeats, then done
    assert stages.index(extension.BUILD_STAGE) < stages.index("crf")
    assert json.loads(build[0].to_json())["data"] == {"estimate_s": 60.0}
