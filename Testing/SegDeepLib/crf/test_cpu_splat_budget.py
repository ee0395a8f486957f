"""The C++ splat's per-thread private copies of the vertex buffer are capped by a memory budget
(``SEGDEEP_CRF_SPLAT_MB``, default 1 GiB): fewer copies (point slabs), same results."""

from __future__ import annotations

import pytest
import torch

from SegDeepLib.crf import available_backends, backends, lattice
from SegDeepLib.crf.backends import features

pytestmark = pytest.mark.skipif("cpp" not in available_backends(), reason="no C++ extension")


@pytest.fixture
def ext():
    from SegDeepLib.crf.extension import load_extension

    module = load_extension("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(4)  # 3 private copies when the budget allows
    yield module
    torch.set_num_threads(threads)
    module.set_splat_budget(-1)


@pytest.fixture(scope="module")
def case():
    gen = torch.Generator().manual_seed(0)
    img = torch.randn(1, 12, 30, 30, generator=gen, dtype=torch.float64) * 40
    feats = features.bilateral_features(img, (1.0, 1.0, 1.0), 2.0, [15.0])
    lat = backends.build_lattice_for("cpp", feats, torch.float64)
    values = torch.rand(13, feats.shape[0], generator=gen, dtype=torch.float64)  # 14 labels
    return lat, values


def _filter(ext, lat, values):
    return ext.lattice_filter(lat.index, lat.weight, lat.neighbors, values, False)


def _copy_bytes(lat, values) -> int:
    return (lat.num_vertices + 1) * values.shape[0] * values.element_size()


def _held_after_call(ext, lat, values) -> int:
    """Bytes of the large blocks one filter call took (all given back to an emptied cache)."""
    ext.cache_release()
    _filter(ext, lat, values)
    return ext.cache_stats()["held_bytes"]


def test_budget_caps_the_copies_and_results_are_unchanged(ext, case):
    lat, values = case
    copy = _copy_bytes(lat, values)
    ext.set_splat_budget(10 * copy)
    full = _filter(ext, lat, values)
    assert ext.splat_info()["last_copies"] == 3
    ref = lattice.lattice_filter(lat, values)  # the PyTorch lattice, independent of the C++ one
    assert torch.allclose(full, ref, rtol=1e-12, atol=1e-13)
    for budget, copies in ((copy + copy // 2, 1), (copy - 1, 0), (0, 0)):
        ext.set_splat_budget(budget)
        out = _filter(ext, lat, values)
        info = ext.splat_info()
        assert info["last_copies"] == copies and info["budget_bytes"] == budget
        assert copies * copy <= budget
        assert torch.allclose(out, full, rtol=1e-12, atol=1e-13)
        assert torch.allclose(
            ext.lattice_filter(lat.index, lat.weight, lat.neighbors, values, True),
            lattice.lattice_filter(lat, values, True),
            rtol=1e-12,
            atol=1e-13,
        )


def test_memory_of_a_call_is_bounded_by_the_budget(ext, case):
    """Measured through the block cache: the copies are the only difference between calls."""
    lat, values = case
    copy = _copy_bytes(lat, values)
    limit = ext.cache_stats()["limit_bytes"]
    ext.cache_set_limit(1 << 40)
    try:
        ext.set_splat_budget(10 * copy)
        unlimited = _held_after_call(ext, lat, values)
        ext.set_splat_budget(0)
        capped = _held_after_call(ext, lat, values)
    finally:
        ext.cache_release()
        ext.cache_set_limit(limit)
    assert unlimited - capped >= 3 * copy  # three private copies gone
    assert capped <= 2.2 * copy  # the vertex buffer and its blur scratch only


def test_budget_from_the_environment(ext, case, monkeypatch):
    lat, values = case
    ext.set_splat_budget(-1)
    assert ext.splat_info()["budget_bytes"] == 1 << 30  # the default
    monkeypatch.setenv("SEGDEEP_CRF_SPLAT_MB", "0")
    _filter(ext, lat, values)
    assert ext.splat_info() == {"budget_bytes": 0, "last_copies": 0}
    monkeypatch.setenv("SEGDEEP_CRF_SPLAT_MB", "not a number")
    assert ext.splat_info()["budget_bytes"] == 1 << 30
