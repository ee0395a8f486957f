"""Versions, devices and dependency installation for the Environment section.

The panel queries the environment by running ``python -m SegDeepLib info --json`` in a subprocess,
so torch is never imported into Slicer's process (importing it would block a clean upgrade).
Installing is done only on the user's request, on the main thread, after one confirmation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional

# Packages Slicer provides itself: never reinstalled by us (a different major breaks Slicer).
SLICER_OWNED = ("numpy", "SimpleITK", "requests")
TORCH_REQUIREMENT = "torch>=2.1"


def readRequirements(path: Path) -> list[str]:
    """Requirement lines of a requirements.txt (comments and blanks dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def requirementName(requirement: str) -> str:
    for sep in "<>=!~[; ":
        requirement = requirement.split(sep, 1)[0]
    return requirement.strip()


def installedVersion(name: str) -> Optional[str]:
    """Installed version from package metadata (does not import the package)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def missingRequirements(requirements: Sequence[str]) -> list[str]:
    """Requirements not installed at all, excluding torch and the Slicer-owned packages."""
    skip = {n.lower() for n in SLICER_OWNED} | {"torch"}
    return [r for r in requirements
            if requirementName(r).lower() not in skip and installedVersion(requirementName(r)) is None]


def torchPresent() -> bool:
    """Whether PyTorch is installed, from its package metadata: torch is never imported into
    Slicer's process (``PyTorchUtilsLogic.torchInstalled()`` imports it)."""
    return installedVersion("torch") is not None


def parseInfoOutput(lines: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """The JSON object printed by ``SegDeepLib info --json`` among the child's output lines, and the
    other lines (warnings on stderr, notices) apart; only the JSON is parsed. ({}, lines) if none."""
    decoder = json.JSONDecoder()
    for start, line in enumerate(lines):
        if not line.lstrip().startswith("{"):
            continue
        text = "\n".join(lines[start:]).lstrip()
        try:
            info, end = decoder.raw_decode(text)
        except ValueError:
            continue
        if isinstance(info, dict) and "segdeeplib" in info:
            used = text[:end].count("\n") + 1
            others = [*lines[:start], *lines[start + used:]]
            return info, [other for other in others if other.strip()]
    return {}, [line for line in lines if line.strip()]


def _backendState(state: Any) -> str:
    if isinstance(state, dict):
        name = state.get("state") or state.get("status")
        if name is None and "available" in state:
            name = "available" if state["available"] else "unavailable"
        reason = state.get("reason") or state.get("detail") or ""
        return f"{name or 'unknown'}" + (f" ({reason})" if reason else "")
    return "available" if state is True else "unavailable" if state is False else str(state)


def crfBackendsText(backends: Any) -> str:
    """'cpp: built; cuda: unavailable (no CUDA toolkit); torch: built' from ``info``'s
    ``crf_backends``: a {name: state} mapping (state a word or {"state", "reason"}), a list of
    {"name", "state", "reason"}, or a plain list of usable names."""
    if isinstance(backends, dict):
        return "; ".join(f"{name}: {_backendState(state)}" for name, state in backends.items())
    if isinstance(backends, (list, tuple)):
        parts = [f"{b.get('name', '?')}: {_backendState(b)}" if isinstance(b, dict) else f"{b}: available"
                 for b in backends]
        return "; ".join(parts) if parts else "none"
    return "unknown" if backends is None else str(backends)


def gpuDescription(info: dict[str, Any]) -> str:
    """'NVIDIA H100 (CUDA 12.4)' or a plain statement that no GPU is usable."""
    if info.get("torch") is None:
        return "PyTorch is not installed"
    gpus = info.get("gpus") or []
    if info.get("cuda_available") and gpus:
        return f"{gpus[0]} (CUDA {info.get('torch_cuda_build')})"
    if not info.get("torch_cuda_build"):
        return "no GPU: CPU-only PyTorch build"
    return "no usable GPU found (CUDA build present)"


def diagnosticsText(info: dict[str, Any], extra: Optional[dict[str, Any]] = None) -> str:
    """Plain text for 'Copy diagnostics' (users paste it into bug reports)."""
    items = dict(info)
    items.update(extra or {})
    return "\n".join(f"{key}: {value}" for key, value in items.items())


class DependencyInstaller:
    """Installs PyTorch (through the PyTorch extension's ``PyTorchUtils``) and pip requirements.

    ``confirm(text) -> bool`` is asked once with the full list; nothing happens at import time and
    this must be called from the main thread (Slicer shows pip dialogs there).
    """

    def __init__(self, requirements: Sequence[str], confirm: Callable[[str], bool],
                 log: Callable[[str], None] = print) -> None:
        self.requirements = list(requirements)
        self.confirm, self.log = confirm, log

    def plan(self, hasTorch: bool) -> list[str]:
        todo = [] if hasTorch else [TORCH_REQUIREMENT + " (through the PyTorch extension)"]
        return todo + missingRequirements(self.requirements)

    def install(self) -> bool:
        """Returns True when something was installed, False when nothing was needed or refused."""
        import slicer  # Slicer glue: only imported when the user asked to install

        torchUtils = _pyTorchUtilsLogic(slicer)
        hasTorch = torchPresent()  # never torchUtils.torchInstalled(): it imports torch
        todo = self.plan(hasTorch)
        if not todo:
            self.log("All dependencies are installed.")
            return False
        if not self.confirm("SegDeep will install:\n  " + "\n  ".join(todo)):
            return False
        if not hasTorch:
            if torchUtils is None:
                raise RuntimeError("PyTorch is missing: install the 'PyTorch' extension "
                                   "from the Extensions Manager, restart Slicer and try again.")
            torchUtils.installTorch(askConfirmation=False, torchVersionRequirement=">=2.1")
        others = missingRequirements(self.requirements)
        if others:
            slicer.util.pip_install(others)
        self.log("Installed: " + ", ".join(todo))
        return True


def _pyTorchUtilsLogic(slicer: Any) -> Any:
    try:
        import PyTorchUtils
    except ImportError:
        return None
    return PyTorchUtils.PyTorchUtilsLogic()
