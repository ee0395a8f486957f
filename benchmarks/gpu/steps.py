"""The steps of the one-shot GPU check (run by ``check.py``, one process per step).

    python benchmarks/gpu/steps.py STEP RESULT.json [--dry-run]

Each step writes a JSON object (its numbers; ``status`` "pass", "fail" or "skip" and a ``note``)
to RESULT.json. With ``--dry-run`` every step runs its CPU-side code on tiny sizes (no CUDA), in
an interpreter that cannot import what the GPU image lacks (``BLOCKED``), so that the script is
validated on a machine without a GPU.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# What the GPU image has: PyTorch, nvcc, ninja, numpy, scipy, pytest (and the standard library).
BLOCKED = ("SimpleITK", "slicerio", "yaml", "tqdm", "matplotlib", "PyQt5")
STUBBED = ("SimpleITK", "yaml")  # imported at the top of modules the check uses: stubs/
CRF_SHAPE = (300, 512, 512)  # ../shared/docs/crf.md section 3: 78.6 M voxels, 5 iterations
CRF_GOALS = {2: 0.25, 14: 1.0}  # seconds, inference, theta_alpha >= 2 (config A)
CONFIG_A = dict(theta_alpha=4.0, theta_beta=15.0, theta_gamma=2.0, w1=5.0, w2=3.0)


class _Refuse(importlib.abc.Loader):
    """Loader of a module the GPU image lacks: importing it fails as if it were not installed."""

    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r} (dry run: not on the GPU image)")

    def exec_module(self, module) -> None:  # never reached
        raise ModuleNotFoundError(module.__name__)


class _Blocker(importlib.abc.MetaPathFinder):
    """Meta-path hook of the dry runs: the modules the GPU image lacks cannot be imported (the
    stubs excepted, once in use)."""

    stub_dir: str | None = None

    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top not in BLOCKED:
            return None
        if top in STUBBED and self.stub_dir is not None:
            return importlib.machinery.PathFinder.find_spec(name, path or [self.stub_dir])
        return importlib.util.spec_from_loader(name, _Refuse())


def _setup(dry: bool, stubs: bool = True) -> None:
    blocker = _Blocker()
    if dry:
        sys.meta_path.insert(0, blocker)
    sys.path.insert(0, str(REPO))
    missing = []
    for name in STUBBED:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing and stubs:  # imported at the top of modules the check uses: their stubs stand in
        blocker.stub_dir = str(HERE / "stubs")
        sys.path.insert(1, blocker.stub_dir)
        for name in STUBBED:
            if name not in missing:  # a real one is installed: hide the stub by loading it
                importlib.import_module(name)


def _device(dry: bool):
    import torch

    if dry:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device visible to PyTorch")
    return torch.device("cuda")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int) -> tuple[list[float], object]:
    out = None
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times, out


def _peak_gb(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# --- steps ------------------------------------------------------------------------------------


def step_env(dry: bool) -> dict:
    import torch

    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "nvcc": _first_line(["nvcc", "--version"], last=True),
        "ninja": _first_line(["ninja", "--version"]),
        "compute_sanitizer": _sanitizer() is not None,
        "nvidia_smi": _first_line(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
        ),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_memory_gb=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            gpu_count=torch.cuda.device_count(),
        )
    for name in ("numpy", "scipy", "pytest") + BLOCKED:
        try:
            mod = __import__(name)
            stub = getattr(mod, "STUB", False)
            info[f"have_{name}"] = "no (stub)" if stub else getattr(mod, "__version__", "yes")
        except ImportError:
            info[f"have_{name}"] = None
    ok = dry or torch.cuda.is_available()
    return {"status": "pass" if ok else "fail", **info}


def _first_line(cmd: list[str], last: bool = False) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
    return (lines[-1] if last else lines[0]) if lines else None


def _sanitizer() -> str | None:
    import shutil

    found = shutil.which("compute-sanitizer")
    for path in (found, "/usr/local/cuda/bin/compute-sanitizer"):
        if path and Path(path).exists():
            return path
    return None


def step_build(dry: bool) -> dict:
    """Build the extensions (in parallel processes, timed) and compile the .cu with nvcc alone
    (default arch and sm_90)."""
    from SegDeepLib.crf import extension

    out: dict = {}
    kinds = ("cpu", "emulated") if dry else ("cpu", "emulated", "cuda")
    code = "import sys; from SegDeepLib.crf.extension import load_extension as f; f(sys.argv[1])"
    start = time.perf_counter()
    procs = {k: subprocess.Popen([sys.executable, "-c", code, k], cwd=REPO) for k in kinds}
    for kind, proc in procs.items():
        proc.wait()
        out[f"{kind}_seconds"] = round(time.perf_counter() - start, 1)
    for kind in kinds:  # from the cache now; a failed build is rebuilt here and its reason kept
        module = extension.load_extension(kind)
        out[f"{kind}_error"] = None if module is not None else extension.extension_error(kind)
    for arch in ([], ["-arch=sm_90"]):
        key = "nvcc_" + (arch[0].split("=")[1] if arch else "default")
        out[key] = _nvcc_compile(arch)
    failed = [k for k in kinds if out[f"{k}_error"]]
    failed += [k for k in ("nvcc_default", "nvcc_sm_90") if out[k] not in ("ok", "no nvcc")]
    out["status"] = "fail" if failed else "pass"
    out["note"] = f"failed: {', '.join(failed)}" if failed else "all built"
    return out


def _nvcc_compile(arch: list[str]) -> str:
    import shutil
    import tempfile

    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not Path(nvcc).exists():
        return "no nvcc"
    src = REPO / "SegDeepLib" / "crf" / "csrc" / "crf_kernels.cu"
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [nvcc, "-c", "-O3", "-std=c++17", *arch, str(src), "-o", f"{tmp}/k.o"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    return "ok" if proc.returncode == 0 else proc.stderr.strip()[-400:]


def step_tests(dry: bool) -> dict:
    """The CUDA tests (and the CRF tests that compare the backends), in this process."""
    import pytest

    files = [
        "Testing/SegDeepLib/crf/test_cuda_device.py",
        "Testing/SegDeepLib/crf/test_lattice.py",  # backend agreement, with cuda
        "Testing/SegDeepLib/crf/test_extension.py",  # nvcc alone, fallback
    ]
    if dry:
        files = files[:1] + [
            "Testing/SegDeepLib/crf/test_cuda_emulated.py::test_adjoint_identity",
            "Testing/SegDeepLib/crf/test_lattice.py::test_appearance_message_vs_exact_on_real_crop",
        ]
    os.chdir(REPO)
    report = REPO / ".gpu_check_junit.xml"
    code = pytest.main(["-q", "-p", "no:cacheprovider", "-rs", f"--junitxml={report}", *files])
    counts = _junit_counts(report)
    report.unlink(missing_ok=True)
    return {"status": "pass" if code == 0 else "fail", "exit_code": int(code), **counts}


def _junit_counts(path: Path) -> dict:
    import xml.etree.ElementTree as ET

    try:
        suite = ET.parse(path).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    except (OSError, ET.ParseError, AttributeError):
        return {}


def step_sanitizer_case(dry: bool) -> dict:
    """A small CRF forward + backward through every kernel (run under compute-sanitizer)."""
    import torch

    from SegDeepLib.crf import CRFRNN

    device = _device(dry)
    backend = "cuda_emulated" if dry else "cuda"
    gen = torch.Generator().manual_seed(0)
    shape = (6, 9, 11)
    img = (torch.randn(1, 1, *shape, generator=gen) * 30).to(device)
    results = {}
    for labels, dtype in ((2, torch.float32), (4, torch.float64)):
        crf = CRFRNN(labels, num_iterations=2, backend=backend, **CONFIG_A).to(device, dtype)
        logits = torch.randn(1, labels, *shape, generator=gen).to(device, dtype).requires_grad_()
        out = crf(logits, img.to(dtype), (1.0, 1.0, 1.0))
        out.square().sum().backward()
        with torch.no_grad():
            crf(logits, img.to(dtype), (1.0, 1.0, 1.0))
        torch.use_deterministic_algorithms(True)
        try:
            with torch.no_grad():
                crf(logits, img.to(dtype), (1.0, 1.0, 1.0))
        finally:
            torch.use_deterministic_algorithms(False)
        finite = bool(torch.isfinite(logits.grad).all()) and crf.last_backend == backend
        results[f"L{labels}_{str(dtype).split('.')[-1]}"] = finite
    _sync(device)
    ok = all(results.values())
    return {"status": "pass" if ok else "fail", **results}


def step_sanitizer(dry: bool, tool: str) -> dict:
    sanitizer = _sanitizer()
    if dry or sanitizer is None:
        inner = step_sanitizer_case(dry)  # the case itself, without the tool
        why = "dry run" if dry else "compute-sanitizer not found"
        return {**inner, "status": "skip" if not dry else inner["status"], "note": why}
    cmd = [sanitizer, "--tool", tool, "--error-exitcode", "3"]
    if tool == "memcheck":
        cmd += ["--leak-check", "no"]
    cmd += [sys.executable, str(Path(__file__)), "sanitizer_case", os.devnull]
    start = time.perf_counter()
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1")  # every allocation checked
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, env=env)
    lines = (proc.stdout + proc.stderr).splitlines()
    summary = [ln for ln in lines if "ERROR SUMMARY" in ln or "RACECHECK SUMMARY" in ln]
    return {
        "status": "pass" if proc.returncode == 0 else "fail",
        "exit_code": proc.returncode,
        "summary": summary[-1] if summary else None,
        "seconds": round(time.perf_counter() - start, 1),
        "tail": "\n".join(lines[-15:]) if proc.returncode != 0 else None,
    }


def _synthetic_ct(shape, device, seed=0):
    """A smooth 'CT' in HU-like units (soft tissue blobs, +-300) with noise, float32 (1, *shape)."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    coarse = [max(2, s // 24) for s in shape]
    low = torch.randn(1, 1, *coarse, generator=gen, device=device) * 300
    img = torch.nn.functional.interpolate(low, size=shape, mode="trilinear", align_corners=False)
    return img[0].add_(torch.randn(1, *shape, generator=gen, device=device), alpha=20.0)


def _synthetic_logits(labels, shape, device, seed=1):
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    coarse = [max(2, s // 32) for s in shape]
    low = torch.randn(1, labels, *coarse, generator=gen, device=device) * 3
    return torch.nn.functional.interpolate(low, size=shape, mode="trilinear", align_corners=False)


def step_crf(dry: bool) -> dict:
    """The CRF targets of shared/docs/crf.md section 3 (inference, config A, 5 iterations)."""

    from SegDeepLib.crf import backends

    device = _device(dry)
    shape = (12, 24, 24) if dry else CRF_SHAPE
    backend = "torch" if dry else "cuda"
    if not dry and backend not in backends.available_backends():
        backend = "torch"  # still measure the GPU, with the PyTorch lattice; reported
    out: dict = {"shape": list(shape), "backend": backend, "iterations": 5}
    img = _synthetic_ct(shape, device)
    failed = []
    for labels, goal in CRF_GOALS.items():
        numbers, finite = _crf_case(labels, img, device, backend, dry)
        _reset_peak(device)
        out.update({f"L{labels}_{k}": v for k, v in numbers.items()})
        out[f"L{labels}_goal_seconds"] = goal
        out[f"L{labels}_meets_goal"] = numbers["seconds"] <= goal
        if not finite:
            failed.append(f"L{labels} not finite")
    out.update(_crf_deterministic(img, device, backend, dry))
    out["status"] = "fail" if failed else "pass"
    out["note"] = "; ".join(failed) or "goals are recorded, not enforced (status = ran cleanly)"
    return out


def _crf_case(labels, img, device, backend, dry) -> tuple[dict, bool]:
    """Median time of CRFRNN inference (lattice build included), the build alone, peak memory."""
    import torch

    from SegDeepLib.crf import CRFRNN, backends

    logits = _synthetic_logits(labels, tuple(img.shape[1:]), device)
    crf = CRFRNN(labels, num_iterations=5, backend=backend, **CONFIG_A).to(device)
    with torch.no_grad():
        crf(logits, img[None], (1.0, 1.0, 1.0))  # warm-up (extension load, allocator)
        _reset_peak(device)
        base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        times, result = _timed(
            lambda: crf(logits, img[None], (1.0, 1.0, 1.0)), device, 1 if dry else 3
        )
        peak = _peak_gb(device)
        build, _ = _timed(
            lambda: backends.image_appearance_filter(
                backend, img, (1.0,) * 3, 4.0, [15.0], torch.float32
            ),
            device,
            1,
        )
    numbers = {
        "seconds": round(statistics.median(times), 4),
        "all_seconds": [round(t, 4) for t in times],
        "lattice_build_seconds": round(build[0], 4),
        "peak_extra_gb": None if peak is None else round(peak - base / 2**30, 2),
    }
    return numbers, bool(torch.isfinite(result).all())  # its tensors are freed on return


def _crf_deterministic(img, device, backend, dry) -> dict:
    """Two runs of the 2-label case with torch.use_deterministic_algorithms(True)."""
    import torch

    from SegDeepLib.crf import CRFRNN

    logits = _synthetic_logits(2, tuple(img.shape[1:]), device)
    crf = CRFRNN(2, num_iterations=5, backend=backend, **CONFIG_A).to(device)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with torch.no_grad():
            times, first = _timed(lambda: crf(logits, img[None], (1.0,) * 3), device, 1)
            second = crf(logits, img[None], (1.0,) * 3)
    finally:
        torch.use_deterministic_algorithms(False)
    return {
        "L2_deterministic_seconds": round(times[0], 4),
        "L2_deterministic_bit_identical": bool(torch.equal(first, second)),
    }


def _default_networks():
    from SegDeepLib.inference import Predictor

    predictor = Predictor.load(None)
    return predictor.name, predictor.spec, predictor.networks


def step_inference(dry: bool) -> dict:
    """Sliding-window inference of the default model's networks: fp32, fp16 autocast (the
    library's option) and bf16 autocast, on network grids of a 512x512x300 CT."""
    import torch

    from SegDeepLib.inference.sliding_window import TileSettings

    device = _device(dry)
    name, spec, networks = _default_networks()
    stages = spec["inference"]["cascade"]
    cases = [
        ("stage1", stages["stage1"], (1, 56, 72, 72)),  # 6 mm grid of the body
        ("stage2", stages["stage2"], (1, 100, 140, 140)),  # 3 mm grid
        ("stage2_full_512", stages["stage2"], (1, 300, 512, 512)),  # the CT's own grid
    ]
    if dry:
        cases = [(k, s, (1, 20, 24, 24)) for k, s, _ in cases[:2]]
    out: dict = {"model": name}
    for label, stage, vol_shape in cases:
        net = networks[stage["network"]].to(device).eval()
        tiles = TileSettings(tuple(stage["tile_size"]), float(stage.get("overlap", 0.25)))
        volume = torch.rand(vol_shape) if dry else torch.rand(vol_shape).mul_(2).sub_(1)
        for mode in ("fp32", "fp16", "bf16"):
            if (dry and mode != "fp32") or ("full" in label and mode == "fp16"):
                continue  # the full grid: fp32 and bf16 only (time)
            numbers = _inference_case(net, tiles, volume, device, mode, dry or "full" in label)
            out.update({f"{label}_{mode}_{k}": v for k, v in numbers.items() if k != "finite"})
            if not numbers["finite"]:
                out["status"] = "fail"
        net.cpu()
    out.setdefault("status", "pass")
    out["note"] = "volumes are random (timing only); first call includes cuDNN autotuning"
    return out


def _inference_case(net, tiles, volume, device, mode: str, once: bool) -> dict:
    import torch

    from SegDeepLib.inference.sliding_window import sliding_window

    model = _autocast(net, torch.bfloat16) if mode == "bf16" else net
    _reset_peak(device)
    times, probs = _timed(
        lambda: sliding_window(volume, model, tiles, device, autocast=mode == "fp16"),
        device,
        1 if once else 2,
    )
    peak = _peak_gb(device)
    return {
        "seconds": round(min(times), 3),
        "peak_gb": None if peak is None else round(peak, 2),
        "finite": bool(torch.isfinite(probs).all()),
    }


def _autocast(net, dtype):
    """``net`` run under ``torch.autocast(its input's device, dtype)`` (a module)."""
    import torch

    class Autocast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            with torch.autocast(x.device.type, dtype=dtype):
                return self.net(x).float()

    return Autocast()


def step_training(dry: bool) -> dict:
    """One training step (Adam, Dice + CE) of the default model's stage-2 network: fp32, bf16."""
    device = _device(dry)
    _, spec, _ = _default_networks()
    config = spec["networks"]["stage2"]
    tile = tuple(spec["inference"]["cascade"]["stage2"]["tile_size"])
    batch = (2, config["in_channels"], *((16, 16, 16) if dry else tile))
    out: dict = {"network": config["name"], "batch": list(batch)}
    for mode in ("fp32", "bf16"):
        numbers = _train_case(config, batch, mode, device, dry)
        out.update({f"{mode}_{k}": v for k, v in numbers.items()})
        if not math.isfinite(numbers["loss"]):
            out["status"] = "fail"
    out.setdefault("status", "pass")
    return out


def _train_case(config, batch, mode: str, device, dry: bool) -> dict:
    import torch

    from SegDeepLib.losses import build_loss
    from SegDeepLib.models import build_model

    torch.manual_seed(0)
    net = build_model(config).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = build_loss("dice_ce")
    x = torch.randn(batch, device=device)
    y = torch.randint(0, config["num_classes"], (batch[0], *batch[2:]), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode == "bf16"):
            loss = loss_fn(net(x).float(), y)
        loss.backward()
        opt.step()
        return loss.detach()

    step()  # warm-up
    _reset_peak(device)
    times, loss = _timed(step, device, 1 if dry else 3)
    peak = _peak_gb(device)
    return {
        "step_seconds": round(statistics.median(times), 4),
        "loss": round(float(loss), 4),
        "peak_gb": None if peak is None else round(peak, 2),
    }


STEPS = {
    "env": step_env,
    "build": step_build,
    "tests": step_tests,
    "sanitizer_case": step_sanitizer_case,
    "memcheck": lambda dry: step_sanitizer(dry, "memcheck"),
    "racecheck": lambda dry: step_sanitizer(dry, "racecheck"),
    "crf": step_crf,
    "inference": step_inference,
    "training": step_training,
}


def main(argv: list[str]) -> int:
    name, result_path = argv[0], argv[1]
    dry = "--dry-run" in argv
    _setup(dry, stubs=name != "tests")  # the tests skip what needs SimpleITK
    try:
        result = STEPS[name](dry)
    except Exception as exc:  # noqa: BLE001 - a step's failure is a result, not a crash
        import traceback

        result = {"status": "fail", "error": f"{type(exc).__name__}: {exc}"[:600]}
        traceback.print_exc()
    if result_path != os.devnull:
        Path(result_path).write_text(json.dumps(result, default=str))
    print(json.dumps(result, default=str))
    return 0 if result.get("status") != "fail" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
