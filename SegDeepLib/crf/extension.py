"""Building, caching and loading the bundled C++ (CPU) and CUDA CRF extensions.

Each extension *kind* is one entry of :data:`KINDS` (sources, headers, flags, what it needs);
adding a kind is adding an entry. The sources live in ``SegDeepLib/crf/csrc`` and are compiled
with ``torch.utils.cpp_extension`` on first use (or ahead of time with
``segdeep crf --build-extension``):

* **Cache key**: the sources' and headers' content, the flags, the torch version, C++ ABI and
  CUDA version, the Python version and the machine; never where the sources lie, so a second
  checkout or an installed copy reuses the build. The cache is ``SEGDEEP_EXT_CACHE`` or
  ``~/.cache/segdeep/torch_ext``; a finished build is the folder ``<name>/`` holding
  ``<name>.so`` and ``build.json``.
* **Atomic**: a build runs in a private temporary folder of the cache; only a finished binary is
  copied into a staging folder that is renamed to ``<name>/`` in one step, so a build killed at
  any point (SIGINT, SIGTERM, SIGKILL, power loss) leaves no half-built ``.so`` that could be
  loaded, only temporary folders that the next build removes.
* **Lock**: one build per key at a time, under an OS file lock (:mod:`.build_lock`) that dies with
  its process: a lock left by a killed build is taken over at once. A process that finds another
  one building waits, with a progress message, and can be cancelled (SIGINT/SIGTERM, CancelToken).
* **Status without building**: :func:`status` says whether a kind is built, buildable (and why
  not: no compiler, no ninja, no nvcc, nvcc's CUDA major version other than torch's, no GPU...).
* **Self-check**: after loading, a tiny comparison with the PyTorch backend (:mod:`.selfcheck`);
  a failed build, load or check logs one warning and the caller falls back to the PyTorch
  lattice; nothing here raises for a missing toolchain.

Code that must run when a kind loads (the CPU extension's block-cache limit, set by
:mod:`SegDeepLib.crf.memory`) registers with :func:`on_load`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import torch

from SegDeepLib.crf import selfcheck
from SegDeepLib.crf.build_lock import FileLock, interruptible
from SegDeepLib.progress import CancelToken, ProgressCallback, ProgressEvent

LOG = logging.getLogger(__name__)
CSRC = Path(__file__).resolve().parent / "csrc"
LIB_EXT = ".pyd" if os.name == "nt" else ".so"
BUILD_STAGE = "crf-build"  # progress stage of a first build (see docs/ARCHITECTURE.md)
WAIT_LIMIT_S = 600.0  # a build held this long is presumed hung: build beside it (safe: atomic)
HEARTBEAT_S = 2.0
DISABLE_ENV = "SEGDEEP_CRF_NO_EXTENSIONS"


@dataclass(frozen=True)
class ExtensionKind:
    """One extension: what it is built from and what it needs to build and run."""

    sources: tuple[str, ...]
    headers: tuple[str, ...] = ()  # not compiled alone, but part of the cache key
    cflags: tuple[str, ...] = ("-O3", "-fopenmp")
    ldflags: tuple[str, ...] = ("-fopenmp",)
    cuda_cflags: tuple[str, ...] = ()
    nvcc: bool = False  # has .cu sources: needs a CUDA build of torch and an nvcc of its major
    gpu: bool = False  # runs on CUDA tensors: needs a CUDA device
    estimate_s: float = 60.0  # first build on a few cores, for the progress message
    source_dir: Path = CSRC
    # after loading: raises (e.g. selfcheck.SelfCheckError) when the binary must not be used
    check: Optional[Callable[[ModuleType], None]] = field(default=None, compare=False)


def _check_cpu(module: ModuleType) -> None:
    selfcheck.check_lattice_module(module, torch.device("cpu"), fused=True)


def _check_cuda(module: ModuleType) -> None:
    device = torch.device("cuda", torch.cuda.current_device())
    selfcheck.check_lattice_module(module, device, False, kernels=True)


def _check_emulated(module: ModuleType) -> None:
    selfcheck.check_lattice_module(module, torch.device("cpu"), False, kernels=True)


# the CUDA kernels' bodies (crf_kernel_bodies.h) and their torch binding, shared by "cuda" and by
# its host build "emulated" (the cuda_emulated backend: the GPU's code, run in CI without a GPU)
_KERNEL_HEADERS = ("crf_kernels.h", "crf_kernel_bodies.h", "crf_binding.h")


KINDS: dict[str, ExtensionKind] = {
    "cpu": ExtensionKind(("crf_cpu.cpp",), ("block_cache.h",), check=_check_cpu),
    "cuda": ExtensionKind(
        ("crf_cuda.cpp", "crf_kernels.cu"),
        _KERNEL_HEADERS,
        cuda_cflags=("-O3",),
        nvcc=True,
        gpu=True,
        estimate_s=120.0,
        check=_check_cuda,
    ),
    "emulated": ExtensionKind(
        ("crf_emulated.cpp", "crf_kernels_host.cpp"), _KERNEL_HEADERS, check=_check_emulated
    ),
}

_LOADED: dict[str, Optional[ModuleType]] = {}
_ERRORS: dict[str, str] = {}
_ON_LOAD: dict[str, list[Callable[[ModuleType], None]]] = {}
_NVCC_VERSIONS: dict[str, Optional[str]] = {}


class ExtensionUnavailable(RuntimeError):
    """A kind cannot be built or used here; the message says why, in one line."""


@dataclass
class KindStatus:
    """What :func:`status` reports: ``state`` is "built", "buildable" or "unavailable"."""

    state: str
    reason: Optional[str] = None
    estimate_s: Optional[float] = None  # of a first build, when buildable

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "reason": self.reason}
        if self.estimate_s is not None:
            out["build_estimate_s"] = self.estimate_s
        return out


# --- where builds live -----------------------------------------------------------------------


def cache_root() -> Path:
    """Folder holding compiled extensions (``SEGDEEP_EXT_CACHE`` or ~/.cache/segdeep/torch_ext)."""
    env = os.environ.get("SEGDEEP_EXT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "segdeep" / "torch_ext"


def key_inputs(kind: str) -> dict[str, Any]:
    """Everything that changes the binary of ``kind`` (hashed into its cache key)."""
    spec = KINDS[kind]
    files = {name: hashlib.sha256((spec.source_dir / name).read_bytes()).hexdigest()
             for name in spec.sources + spec.headers}
    return {
        "kind": kind,
        "files": files,
        "cflags": list(spec.cflags),
        "ldflags": list(spec.ldflags),
        "cuda_cflags": list(spec.cuda_cflags) if spec.nvcc else None,
        "torch": torch.__version__,
        "cxx11_abi": bool(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", False)),
        "torch_cuda": torch.version.cuda,
        "python": f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}",
        "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"),
        "machine": f"{sys.platform}-{platform.machine()}",
    }


def build_name(kind: str) -> str:
    """Module (and folder) name of ``kind``'s build: ``segdeep_crf_<kind>_<key hash>``."""
    digest = hashlib.sha256(json.dumps(key_inputs(kind), sort_keys=True).encode()).hexdigest()
    return f"segdeep_crf_{kind}_{digest[:16]}"


def _library(folder: Path, name: str) -> Path:
    return folder / f"{name}{LIB_EXT}"


def _is_complete(folder: Path, name: str) -> bool:
    return (folder / "build.json").is_file() and _library(folder, name).is_file()


def is_built(kind: str) -> bool:
    """A finished build of ``kind`` for this key is in the cache (never builds)."""
    name = build_name(kind)
    return _is_complete(cache_root() / name, name)


# --- what a build needs ----------------------------------------------------------------------


def _cxx() -> str:
    return os.environ.get("CXX", "cl" if os.name == "nt" else "c++")


def _ninja_dir() -> Optional[str]:
    """Folder of a ``ninja`` executable: on PATH, else the ``ninja`` Python package's."""
    found = shutil.which("ninja")
    if found:
        return str(Path(found).parent)
    if importlib.util.find_spec("ninja") is not None:
        import ninja  # the PyPI package (a declared dependency) ships the executable

        binary = Path(ninja.BIN_DIR) / ("ninja.exe" if os.name == "nt" else "ninja")
        if binary.exists():
            return str(binary.parent)
    return None


def find_nvcc() -> Optional[str]:
    """The nvcc that torch would use: CUDA_HOME/CUDA_PATH, then PATH, then /usr/local/cuda."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    exe = "nvcc.exe" if os.name == "nt" else "nvcc"
    if home:
        candidate = Path(home) / "bin" / exe
        return str(candidate) if candidate.exists() else None
    found = shutil.which("nvcc")
    if found:
        return found
    default = Path("/usr/local/cuda/bin") / exe
    return str(default) if default.exists() else None


def nvcc_version(nvcc: str) -> Optional[str]:
    """``"13.0"`` from ``nvcc --version`` (None if it cannot run); cached per path."""
    if nvcc not in _NVCC_VERSIONS:
        try:
            out = subprocess.run(
                [nvcc, "--version"], capture_output=True, text=True, timeout=30, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        match = re.search(r"release (\d+)\.(\d+)", out)
        _NVCC_VERSIONS[nvcc] = f"{match.group(1)}.{match.group(2)}" if match else None
    return _NVCC_VERSIONS[nvcc]


def _runtime_problem(kind: str) -> Optional[str]:
    """Why ``kind`` cannot be used in this process at all, built or not (None: it can)."""
    spec = KINDS[kind]
    if os.environ.get(DISABLE_ENV):
        return f"disabled by {DISABLE_ENV}"
    if spec.nvcc and torch.version.cuda is None:
        return "PyTorch is a CPU-only build (torch.version.cuda is None)"
    if spec.gpu and not torch.cuda.is_available():
        return "no CUDA GPU (torch.cuda.is_available() is False)"
    return None


def toolchain_problem(kind: str) -> Optional[str]:
    """Why ``kind`` cannot be built here (None: it can): compiler, headers, ninja, nvcc."""
    spec = KINDS[kind]
    if shutil.which(_cxx()) is None:
        return f"no C++ compiler ({_cxx()} not found; install one or set CXX)"
    include = sysconfig.get_paths().get("include") or ""
    if not Path(include, "Python.h").is_file():
        return f"no Python headers ({include}/Python.h missing; install python3-dev)"
    if _ninja_dir() is None:
        return "ninja not found (pip install ninja)"
    if spec.nvcc:
        return _nvcc_problem()
    return None


def _nvcc_problem() -> Optional[str]:
    nvcc = find_nvcc()
    if nvcc is None:
        return "nvcc not found (install the CUDA toolkit or set CUDA_HOME)"
    version = nvcc_version(nvcc)
    if version is None:
        return f"{nvcc} --version did not run"
    wanted = torch.version.cuda or ""
    if version.split(".")[0] != wanted.split(".")[0]:
        return f"nvcc is CUDA {version} but PyTorch was built with CUDA {wanted}; majors must match"
    return None


def status(kind: str) -> KindStatus:
    """Built / buildable / unavailable (with the reason) for ``kind``; never builds or loads."""
    problem = _runtime_problem(kind) or _ERRORS.get(kind)
    if problem:
        return KindStatus("unavailable", problem)
    if _LOADED.get(kind) is not None or is_built(kind):
        return KindStatus("built")
    problem = toolchain_problem(kind)
    if problem:
        return KindStatus("unavailable", problem)
    estimate = KINDS[kind].estimate_s
    return KindStatus("buildable", f"not built yet; built on first use, ~{estimate:.0f} s", estimate)


# --- loading ---------------------------------------------------------------------------------


def on_load(kind: str, hook: Callable[[ModuleType], None]) -> None:
    """Call ``hook(module)`` whenever ``kind`` loads (at once if it is already loaded)."""
    _ON_LOAD.setdefault(kind, []).append(hook)
    if _LOADED.get(kind) is not None:
        hook(_LOADED[kind])


def loaded(kind: str) -> Optional[ModuleType]:
    """The ``kind`` extension if it is loaded in this process (never builds it)."""
    return _LOADED.get(kind)


def load_extension(
    kind: str,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> Optional[ModuleType]:
    """The compiled ``kind`` extension, built on first use, or None (one warning) on failure.

    A first build (or a wait for another process's) is reported to ``progress`` as the stage
    :data:`BUILD_STAGE`. SIGINT/SIGTERM/``cancel`` during it raise (KeyboardInterrupt or
    CancelledError) and leave nothing a later run must clean up by hand.
    """
    if kind in _LOADED:
        return _LOADED[kind]
    module = None
    problem = _runtime_problem(kind)
    if problem:
        _ERRORS[kind] = problem
    else:
        try:
            module = _compile(kind, progress, cancel)
            _after_load(kind, module)
        except Exception as exc:  # noqa: BLE001 - any build/load/check failure means "fall back"
            module = None
            _ERRORS[kind] = _short_reason(exc)
            warnings.warn(
                f"SegDeep CRF: the {kind} extension is not used ({_ERRORS[kind]}); "
                "falling back to the pure-PyTorch lattice",
                RuntimeWarning,
                stacklevel=2,
            )
    _LOADED[kind] = module
    return module


def _after_load(kind: str, module: ModuleType) -> None:
    check = KINDS[kind].check
    if check is not None:
        check(module)
    for hook in _ON_LOAD.get(kind, ()):
        hook(module)


def _compile(
    kind: str, progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None
) -> ModuleType:
    """Load ``kind`` from the cache, building it first (under the lock) when it is not there."""
    name = build_name(kind)
    root = cache_root()
    final = root / name
    if _is_complete(final, name):
        with contextlib.suppress(ImportError, OSError):  # unreadable: rebuilt below
            return _import(name, final)
    problem = toolchain_problem(kind)
    if problem:
        raise ExtensionUnavailable(problem)
    estimate = KINDS[kind].estimate_s
    with interruptible(), _Heartbeat(progress, estimate) as beat:
        lock = FileLock(root / f"{name}.lock")
        locked = _acquire(lock, beat, cancel)
        try:
            if _is_complete(final, name):  # built by the process we waited for
                try:
                    return _import(name, final)
                except (ImportError, OSError) as exc:
                    LOG.warning("CRF extension: discarding an unreadable build %s (%s)", final, exc)
                    _discard(final)
            beat.building(f"building the CRF extension ({kind}), first use: {_minutes(estimate)}")
            return _build(kind, name, root, sweep=locked)
        finally:
            lock.release()


def _acquire(lock: FileLock, beat: _Heartbeat, cancel: Optional[CancelToken]) -> bool:
    """Take the build lock, waiting (with messages) while a live process builds the same key.

    False where the file system has no locks or the owner looks hung: the build then runs
    beside the other one, which is safe (private folders, atomic rename), only slower.
    """

    def waiting(owner: str, waited: float) -> None:
        beat.waiting(f"waiting for the CRF extension build of another SegDeep process ({owner})")

    try:
        if lock.acquire(waiting, cancel, timeout_s=WAIT_LIMIT_S):
            return True
        LOG.warning("CRF extension: the build lock %s is held for too long; building anyway",
                    lock.path)
    except OSError as exc:
        LOG.warning("CRF extension: no file lock on %s (%s); building without it", lock.path, exc)
    return False


def _build(kind: str, name: str, root: Path, sweep: bool) -> ModuleType:
    """Compile in a private temporary folder, then publish the binary atomically."""
    from torch.utils.cpp_extension import load

    spec = KINDS[kind]
    root.mkdir(parents=True, exist_ok=True)
    if sweep:  # under the lock: every temporary folder of this key belongs to a dead build
        _sweep(root, name)
    work = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=root))
    start = time.perf_counter()
    try:
        with _ninja_on_path():
            module = load(
                name=name,
                sources=[str(spec.source_dir / s) for s in spec.sources],
                build_directory=str(work),
                extra_cflags=list(spec.cflags),
                extra_ldflags=list(spec.ldflags),
                extra_cuda_cflags=list(spec.cuda_cflags) if spec.nvcc else None,
                verbose=False,
            )
        seconds = time.perf_counter() - start
        _publish(_library(work, name), root / name, {**key_inputs(kind), "seconds": seconds})
        LOG.info("CRF extension %s built in %.0f s", kind, seconds)
        return module
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the loaded binary stays mapped (POSIX)
        if sweep:  # again: compilers orphaned by a killed build may have written since
            _sweep(root, name)


def _publish(library: Path, final: Path, meta: dict[str, Any]) -> None:
    """``final``/ with ``library`` and build.json, appearing in one rename (never half-written)."""
    stage = Path(tempfile.mkdtemp(prefix=f".stage-{final.name}-", dir=final.parent))
    try:
        target = stage / library.name
        shutil.copyfile(library, target)
        (stage / "build.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        for path in (target, stage / "build.json"):
            with open(path, "rb+") as handle:
                os.fsync(handle.fileno())
        os.chmod(stage, 0o755)  # mkdtemp made it private; the cache is shared like any folder
        if final.exists():
            _discard(final)
        os.replace(stage, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _discard(folder: Path) -> None:
    """Move ``folder`` out of the way (one rename), then delete it."""
    trash = folder.parent / f".trash-{folder.name}-{os.getpid()}-{time.monotonic_ns()}"
    with contextlib.suppress(OSError):
        os.replace(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)


def _sweep(root: Path, name: str) -> None:
    """Remove the temporary folders that killed builds of ``name`` left behind."""
    for prefix in (".build-", ".stage-", ".trash-"):
        for path in root.glob(f"{prefix}{name}-*"):
            shutil.rmtree(path, ignore_errors=True)


def _import(name: str, folder: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, _library(folder, name))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {name} from {folder}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _ninja_on_path() -> Iterator[None]:
    """torch runs ``ninja`` from PATH: add the ninja package's folder while building."""
    folder = _ninja_dir()
    path = os.environ.get("PATH", "")
    if folder is None or folder in path.split(os.pathsep):
        yield
        return
    os.environ["PATH"] = folder + os.pathsep + path
    try:
        yield
    finally:
        os.environ["PATH"] = path


def _minutes(seconds: float) -> str:
    return "~1 min" if seconds < 90 else f"~{seconds / 60:.0f} min"


class _Heartbeat:
    """Progress of a build or a wait: a first event, then one every :data:`HEARTBEAT_S` with a
    fraction and an ETA from the estimate, and a last one at the end."""

    def __init__(self, progress: Optional[ProgressCallback], estimate_s: float) -> None:
        self.progress, self.estimate = progress, estimate_s
        self.message = ""
        self.start = time.perf_counter()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def waiting(self, message: str) -> None:
        self._announce(message)

    def building(self, message: str) -> None:
        self._announce(message)

    def _announce(self, message: str) -> None:
        if message == self.message:
            return
        self.message = message
        LOG.info("%s", message)
        self._emit()
        if self._thread is None and self.progress is not None:
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()  # a signal before the next line leaves it to stop on _stop alone
            self._thread = thread

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._emit()

    def _emit(self, done: bool = False) -> None:
        if self.progress is None:
            return
        elapsed = time.perf_counter() - self.start
        fraction = 1.0 if done else min(elapsed / self.estimate, 0.95)
        eta = None if done else max(self.estimate - elapsed, 1.0)
        message = f"CRF extension ready in {elapsed:.0f} s" if done else self.message
        with self._lock:
            self.progress(ProgressEvent(stage=BUILD_STAGE, fraction=fraction, message=message,
                                        eta_s=eta, data={"estimate_s": self.estimate}))

    def __enter__(self) -> _Heartbeat:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.message and exc_type is None:
            self._emit(done=True)


def _short_reason(exc: Exception) -> str:
    """One line saying why a build failed (the first compiler error when there is one)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line.lower() and "stopped" not in line]
    reason = errors[0] if errors else (lines[-1] if lines else type(exc).__name__)
    return reason[:200]


def extension_error(kind: str) -> Optional[str]:
    """Why the ``kind`` extension is unavailable (None if it loaded or was never tried)."""
    return _ERRORS.get(kind)
