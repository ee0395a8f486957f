"""``segdeep info``: versions, devices and the CRF backends' state; never builds anything.

``--json`` prints one JSON object and nothing else on stdout (the Slicer module parses it): what
a library would print goes to stderr, and the warnings raised while collecting are listed under
``"warnings"``. Its shape is in docs/ARCHITECTURE.md ("segdeep info --json").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import warnings
from typing import Any

from SegDeepLib.version import __version__


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("info", help="print versions, devices and CRF backends")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def environment() -> dict[str, Any]:
    """Collect the environment description (also used by the Slicer module's diagnostics)."""
    import numpy
    import SimpleITK

    info: dict[str, Any] = {
        "segdeeplib": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "SimpleITK": SimpleITK.Version.VersionString(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda_build"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cpu_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    info["crf_backends"] = _crf_backends()
    info["crf_cache_limit_mb"] = _crf_cache_limit()
    return info


def _crf_cache_limit() -> Any:
    """The cpp backend's block-cache cap in MB (``SEGDEEP_CRF_CACHE_MB``; 0: no cache)."""
    try:
        from SegDeepLib.crf.memory import cache_limit_mb
    except ImportError:
        return None
    return round(cache_limit_mb(), 1)


def _crf_backends() -> Any:
    """``{backend: {"state", "reason"[, "build_estimate_s"]}}``, without building anything."""
    try:
        from SegDeepLib.crf import backend_report
    except ImportError:
        return "CRF module not installed"
    return backend_report()


def collect() -> dict[str, Any]:
    """:func:`environment` with stray prints sent to stderr and warnings listed in the result."""
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("always")
        info = environment()
    info["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
    return info


def _text(info: dict[str, Any]) -> str:
    lines = []
    for key, value in info.items():
        if key == "crf_backends" and isinstance(value, dict):
            for name, entry in value.items():
                reason = f" ({entry['reason']})" if entry.get("reason") else ""
                lines.append(f"{'crf ' + name:>18}: {entry['state']}{reason}")
        elif key != "warnings" or value:
            lines.append(f"{key:>18}: {value}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(_text(info))
    return 0
