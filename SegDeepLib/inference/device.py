"""Device choice and the CUDA out-of-memory fallback (smaller tiles, then the CPU)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from SegDeepLib.errors import SegDeepError
from SegDeepLib.progress import ProgressCallback, log

DEVICES = ("auto", "cpu", "cuda")
T = TypeVar("T")


def describe_cuda() -> str:
    """``"cuda (NAME, N GiB)"`` for the current CUDA device."""
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return f"cuda:{index} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"


def _cuda_usable() -> tuple[bool, str]:
    if not torch.cuda.is_available():
        return False, "no CUDA GPU found"
    try:
        torch.zeros(1, device="cuda")
    except Exception as exc:  # noqa: BLE001 (a driver/runtime problem: say it, use the CPU)
        return False, f"CUDA GPU present but not usable ({str(exc).splitlines()[0]})"
    return True, ""


def select_device(
    requested: str = "auto", progress: ProgressCallback | None = None
) -> torch.device:
    """``auto`` -> the GPU when one is usable, else the CPU; ``cuda`` fails clearly without one.

    The choice and the reason are reported through ``progress`` as a log event.
    """
    requested = (requested or "auto").lower()
    if requested.startswith("cuda:"):
        requested, index = "cuda", requested.split(":", 1)[1]
    else:
        index = None
    if requested not in DEVICES:
        raise SegDeepError(f"device {requested!r}: use one of {', '.join(DEVICES)}")
    if requested == "cpu":
        log(progress, "device: cpu (requested)")
        return torch.device("cpu")
    usable, why = _cuda_usable()
    if not usable:
        if requested == "cuda":
            raise SegDeepError(f"device cuda: {why}; use --device cpu or auto")
        log(progress, f"device: cpu ({why})")
        return torch.device("cpu")
    device = torch.device("cuda" if index is None else f"cuda:{index}")
    log(progress, f"device: {describe_cuda()}")
    return device


def is_oom(exc: BaseException) -> bool:
    """True for a CUDA (or other accelerator) out-of-memory error."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def smaller_tile(tile: Sequence[int], minimum: int = 16) -> tuple[int, ...] | None:
    """Halve the largest axes of a tile (never below ``minimum``); None when it cannot shrink."""
    tile = tuple(int(t) for t in tile)
    largest = max(tile)
    if largest <= minimum:
        return None
    return tuple(max(minimum, t // 2) if t == largest or t > minimum * 2 else t for t in tile)


def run_with_fallback(
    work: Callable[[tuple[int, ...], torch.device], T],
    tile: Sequence[int],
    device: torch.device,
    progress: ProgressCallback | None = None,
    min_tile: int = 16,
    max_retries: int = 3,
) -> T:
    """Run ``work(tile, device)``; on out-of-memory retry with smaller tiles, then on the CPU.

    Every retry is reported through ``progress`` (level ``warning``).
    """
    tile = original = tuple(int(t) for t in tile)
    for _ in range(max_retries + 1):
        try:
            return work(tile, device)
        except Exception as exc:
            if not is_oom(exc):
                raise
            _free(device)
            smaller = smaller_tile(tile, min_tile)
            if smaller is None:
                break
            log(
                progress,
                f"out of memory on {device} with tiles {tile}; retrying with tiles {smaller}",
                "warning",
            )
            tile = smaller
    if device.type == "cpu":
        raise SegDeepError(
            "out of memory on the CPU even with the smallest tiles; free memory or use --fast"
        )
    log(
        progress,
        f"out of memory on {device} even with tiles {tile}; continuing on the CPU",
        "warning",
    )
    return work(original, torch.device("cpu"))


def run_or_cpu(
    work: Callable[[torch.device], T],
    device: torch.device,
    progress: ProgressCallback | None = None,
    what: str = "work",
) -> T:
    """``work(device)``; on an out-of-memory error on a GPU, once more on the CPU (reported)."""
    try:
        return work(device)
    except Exception as exc:
        if device.type == "cpu" or not is_oom(exc):
            raise
    _free(device)  # outside the handler: the traceback no longer holds the GPU tensors
    log(progress, f"out of memory on {device} in the {what}; continuing on the CPU", "warning")
    return work(torch.device("cpu"))


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
