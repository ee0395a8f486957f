"""Block cache of the C++ CRF backend: same results as without it, reuse, limit and release."""

from __future__ import annotations

import pytest
import torch

from SegDeepLib.crf import (
    CRFRNN,
    available_backends,
    cache_stats,
    extension,
    memory,
    release_memory,
    set_cache_limit,
)
from SegDeepLib.errors import SegDeepError

pytestmark = pytest.mark.skipif(
    "cpp" not in available_backends(), reason="the C++ CRF extension is not available"
)
MIB = 2**20

# (labels, dtype, batch, shape): index and weight tables of 40 k+ voxels are megabytes, so every
# kind of cached block is exercised; the sequence goes big -> small -> big and changes labels.
CASES = [
    (2, torch.float32, 1, (24, 40, 48)),
    (2, torch.float32, 1, (12, 30, 36)),
    (3, torch.float64, 2, (16, 28, 40)),
    (2, torch.float32, 1, (24, 40, 48)),
    (4, torch.float32, 1, (10, 36, 44)),
]


@pytest.fixture
def ext():
    """The CPU extension with the default limit restored and nothing kept after the test."""
    module = extension.load_extension("cpu")
    yield module
    module.cache_set_debug(False)
    set_cache_limit(None)
    release_memory()


def _inputs(labels, dtype, batch, shape, seed):
    """Logits and a CT-like image: smooth structures (coarse noise upsampled) plus fine noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((batch, 1, *(max(2, n // 6) for n in shape)), generator=g, dtype=dtype)
    smooth = torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear")
    image = smooth * 400 - 100 + torch.randn((batch, 1, *shape), generator=g, dtype=dtype) * 10
    logits = torch.randn((batch, labels, *shape), generator=g, dtype=dtype) * 2
    return logits, image


def _run(case, seed, grad):
    """Refined logits, and with ``grad`` the gradients of logits, w1, w2 and compatibility."""
    labels, dtype, batch, shape = case
    logits, image = _inputs(labels, dtype, batch, shape, seed)
    crf = CRFRNN(labels, 3.0, 25.0, 1.5, 4.0, 2.0, num_iterations=3, backend="cpp")
    if not grad:
        with torch.no_grad():
            return [crf(logits, image, (1.2, 0.9, 1.0)).clone()]
    logits.requires_grad_(True)
    out = crf(logits, image, (1.2, 0.9, 1.0))
    weights = torch.linspace(-1, 1, out.numel(), dtype=dtype).view(out.shape)
    (out * weights).sum().backward()
    grads = [logits.grad, crf.w1.grad, crf.w2.grad, crf.compatibility.grad]
    return [out.detach().clone()] + [g.clone() for g in grads]


def _sequence(grad):
    return [_run(case, seed, grad) for seed, case in enumerate(CASES)]


@pytest.mark.parametrize("grad", [False, True], ids=["forward", "forward_backward"])
def test_cached_calls_match_calls_without_the_cache(ext, grad):
    set_cache_limit(0)  # every block fresh from the system (zeroed), none kept
    reference = _sequence(grad)
    assert cache_stats()["held_blocks"] == 0
    set_cache_limit(None)
    # Blocks handed out full of 0xff bytes, so that a read of unwritten memory shows; every
    # array from a page up through the cache, so that small volumes reach every call site.
    ext.cache_set_debug(True, 4096)
    before = cache_stats()["reused_blocks"]
    for _ in range(2):
        got = _sequence(grad)
        for ref_case, got_case in zip(reference, got):
            for ref, value in zip(ref_case, got_case):
                assert torch.equal(ref, value)
    assert cache_stats()["reused_blocks"] > before + 20


@pytest.mark.parametrize("grad", [False, True], ids=["forward", "forward_backward"])
def test_repeated_calls_of_the_same_size_take_no_new_block(ext, grad):
    # One thread: with several, the lattice build's chunk arrays are requested in a varying order,
    # so that best fit may once in a while hand a block to another array and need one more.
    # The first call may cut smaller blocks from its freed bigger ones (keeping its peak memory
    # down), so the second call maps those sizes again; from then on every block is reused.
    torch.set_num_threads(1)
    release_memory()
    for _ in range(2):
        _run(CASES[0], 0, grad)  # the result is dropped at once
    stats = cache_stats()
    assert stats["held_bytes"] > 2 * MIB
    for _ in range(2):
        result = _run(CASES[0], 0, grad)
        after = cache_stats()
        assert after["fresh_blocks"] == stats["fresh_blocks"]
        assert after["reused_blocks"] > stats["reused_blocks"]
        del result
        assert cache_stats()["held_bytes"] == stats["held_bytes"]
        stats = cache_stats()


def test_limit_frees_the_least_recently_freed_blocks_and_release_empties(ext):
    release_memory()
    set_cache_limit(3.5)
    a = ext.empty_cached([MIB // 4], torch.float32)  # 1 MiB
    b = ext.empty_cached([MIB // 2], torch.float32)  # 2 MiB
    c = ext.empty_cached([MIB // 4], torch.float32)
    c_ptr = c.data_ptr()
    del a, b, c  # 4 MiB freed: the first freed (a) goes
    stats = cache_stats()
    assert (stats["held_bytes"], stats["held_blocks"]) == (3 * MIB, 2)
    assert ext.empty_cached([MIB // 4], torch.float32).data_ptr() == c_ptr  # a's block went
    set_cache_limit(1)
    assert cache_stats()["held_bytes"] <= MIB
    release_memory()
    assert (cache_stats()["held_bytes"], cache_stats()["held_blocks"]) == (0, 0)


def test_best_fit_within_half_again_the_request_else_a_cut_bigger_block(ext):
    release_memory()
    set_cache_limit(64)
    blocks = [ext.empty_cached([n * MIB], torch.uint8) for n in (1, 4)]
    ptrs = [b.data_ptr() for b in blocks]
    del blocks
    fresh, split = cache_stats()["fresh_blocks"], cache_stats()["split_blocks"]
    near = ext.empty_cached([3 * MIB // 4], torch.uint8)  # within 1.5x of the 1 MiB block: reused
    assert near.data_ptr() == ptrs[0] and cache_stats()["split_blocks"] == split
    cut = ext.empty_cached([MIB], torch.uint8)  # no kept block of 1-1.5 MiB: the 4 MiB one's head
    stats = cache_stats()
    assert cut.data_ptr() == ptrs[1] and stats["split_blocks"] == split + 1
    assert stats["fresh_blocks"] == fresh and stats["held_bytes"] == 0  # the 3 MiB tail unmapped
    cut[:] = 7  # the head is usable memory
    del near, cut
    assert cache_stats()["held_bytes"] == 2 * MIB
    bigger = ext.empty_cached([2 * MIB], torch.uint8)  # nothing kept is big enough: a fresh block
    assert cache_stats()["fresh_blocks"] == fresh + 1
    del bigger


def test_a_real_call_stays_under_the_limit(ext):
    release_memory()
    set_cache_limit(2)
    _run(CASES[0], 0, grad=False)
    assert 0 < cache_stats()["held_bytes"] <= 2 * MIB
    set_cache_limit(None)
    _run(CASES[0], 0, grad=False)
    assert cache_stats()["held_bytes"] > 2 * MIB


def test_limit_from_environment(ext, monkeypatch):
    monkeypatch.setenv(memory.CACHE_ENV, "0")
    set_cache_limit(None)
    assert memory.cache_limit_mb() == 0 and cache_stats()["limit_bytes"] == 0
    monkeypatch.setenv(memory.CACHE_ENV, "12.5")
    memory.apply_cache_limit(ext)  # what loading the extension does
    assert cache_stats()["limit_bytes"] == int(12.5 * MIB)
    monkeypatch.setenv(memory.CACHE_ENV, "lots")
    with pytest.warns(RuntimeWarning, match="SEGDEEP_CRF_CACHE_MB"):
        assert memory.cache_limit_mb() == memory.default_cache_limit_mb()
    monkeypatch.delenv(memory.CACHE_ENV)
    assert 0 < memory.default_cache_limit_mb() <= memory.CACHE_MAX_MB
    with pytest.raises(SegDeepError, match="cache limit"):
        set_cache_limit(-1)


def test_memory_functions_do_not_build_the_extension(monkeypatch):
    monkeypatch.setattr(extension, "_LOADED", {})
    monkeypatch.setattr(extension, "_compile", lambda kind: pytest.fail("built the extension"))
    release_memory()
    set_cache_limit(1)
    set_cache_limit(None)
    assert cache_stats()["held_bytes"] == 0


def test_grid_search_empties_the_cache_at_the_end(ext):
    from SegDeepLib.crf import grid_search
    from SegDeepLib.crf.grid_search import ValidationCase

    logits, image = _inputs(2, torch.float32, 1, (16, 40, 48), seed=5)
    probs = torch.softmax(logits[0], 0)
    case = ValidationCase(probs, image[0], (1.0, 1.0, 1.0), (image[0, 0] > 100).long())
    reused = cache_stats()["reused_blocks"]
    grid_search([case], (2.0, 4.0), (10.0,), (1.0, 3.0), backend="cpp", num_iterations=2)
    stats = cache_stats()
    assert stats["reused_blocks"] > reused  # the runs shared their buffers
    assert stats["held_bytes"] == 0


def test_blocks_idle_for_long_go_at_the_next_miss(ext):
    release_memory()
    set_cache_limit(64)
    idle = ext.empty_cached([MIB], torch.uint8)
    del idle
    busy = ext.empty_cached([2 * MIB], torch.uint8)
    del busy
    horizon = 4 * cache_stats()["peak_in_use_blocks"] + 256  # cache events (take + give back)
    for _ in range(horizon // 2 + 2):  # a working set of one block, used over and over
        busy = ext.empty_cached([2 * MIB], torch.uint8)
        del busy
    assert cache_stats()["held_blocks"] == 2  # no miss yet: nothing is freed
    other = ext.empty_cached([8 * MIB], torch.uint8)  # a miss
    stats = cache_stats()
    assert (stats["held_blocks"], stats["held_bytes"]) == (1, 2 * MIB)  # only the idle one went
    del other
