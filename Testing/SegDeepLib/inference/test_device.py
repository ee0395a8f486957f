"""Device choice and the out-of-memory fallback (simulated OOM errors; no GPU needed)."""

from __future__ import annotations

import pytest
import torch

from SegDeepLib.errors import SegDeepError
from SegDeepLib.inference.device import is_oom, run_with_fallback, select_device, smaller_tile


def _oom() -> Exception:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_cpu_and_auto_report_the_choice():
    events = []
    assert select_device("cpu", events.append).type == "cpu"
    device = select_device("auto", events.append)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert device.type == expected
    assert all(e.event == "log" and e.message.startswith("device: ") for e in events)
    if not torch.cuda.is_available():
        assert "no CUDA GPU found" in events[-1].message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(SegDeepError, match="--device cpu"):
        select_device("cuda")


def test_unknown_device():
    with pytest.raises(SegDeepError, match="auto, cpu, cuda"):
        select_device("tpu")


def test_is_oom():
    assert is_oom(_oom())
    assert is_oom(RuntimeError("CUDA error: out of memory"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("out of memory"))


def test_smaller_tile_halves_down_to_the_minimum():
    assert smaller_tile((128, 128, 64)) == (64, 64, 32)
    assert smaller_tile((32, 16, 16)) == (16, 16, 16)
    assert smaller_tile((16, 16, 16)) is None


def test_retries_with_smaller_tiles_then_succeeds():
    tried, events = [], []

    def work(tile, device):
        tried.append((tile, device.type))
        if max(tile) > 32:
            raise _oom()
        return "ok"

    assert run_with_fallback(work, (128, 128, 128), torch.device("cpu"), events.append) == "ok"
    assert [t for t, _ in tried] == [(128, 128, 128), (64, 64, 64), (32, 32, 32)]
    assert sum("retrying with tiles" in e.message for e in events) == 2
    assert all(e.level == "warning" for e in events)


def test_falls_back_to_the_cpu_with_the_original_tile():
    tried, events = [], []

    def work(tile, device):
        tried.append((tile, device.type))
        if device.type == "cuda":
            raise _oom()
        return device.type

    assert (
        run_with_fallback(work, (64, 64, 64), torch.device("cuda"), events.append, max_retries=2)
        == "cpu"
    )
    assert [d for _, d in tried] == ["cuda", "cuda", "cuda", "cpu"]
    assert tried[-1][0] == (64, 64, 64)
    assert "continuing on the CPU" in events[-1].message


def test_other_errors_are_not_swallowed():
    def work(tile, device):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_with_fallback(work, (64, 64, 64), torch.device("cuda"))


def test_cpu_oom_at_the_smallest_tile_is_a_clear_error():
    def work(tile, device):
        raise _oom()

    with pytest.raises(SegDeepError, match="out of memory on the CPU"):
        run_with_fallback(work, (32, 32, 32), torch.device("cpu"))
