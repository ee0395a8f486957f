"""``segdeep info``: versions, devices and available CRF backends."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from typing import Any

from SegDeepLib import __version__


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
    try:
        from SegDeepLib.crf import available_backends
    except ImportError:
        return "CRF module not installed"
    return available_backends()


def run(args: argparse.Namespace) -> int:
    info = environment()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:>18}: {value}")
    return 0
