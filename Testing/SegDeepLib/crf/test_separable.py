"""Separable smoothness kernel: exactness against the brute-force Gaussian, transposes."""

from __future__ import annotations

import pytest
import torch

from SegDeepLib.crf import available_backends, backends, separable
from SegDeepLib.crf.exact import exact_filter
from Testing.SegDeepLib.crf import helpers


@pytest.mark.parametrize(
    "shape,spacing,theta",
    [
        ((12, 24, 24), (3.0, 3.0, 3.0), 6.0),
        ((7, 20, 9), (2.5, 0.8, 1.3), 2.0),
        ((1, 30, 17), (1.0, 1.0, 1.0), 1.5),
        ((25, 31), (0.7, 1.1), 3.0),
    ],
)
def test_smoothness_message_matches_exact(shape, spacing, theta):
    gen = torch.Generator().manual_seed(0)
    q = torch.rand(2, int(torch.tensor(shape).prod()), generator=gen, dtype=torch.float64)
    ref = exact_filter(helpers.positions(shape, spacing) / theta, q)
    ref = ref / exact_filter(helpers.positions(shape, spacing) / theta, torch.ones_like(q[:1]))
    for name in [b for b in available_backends() if b in ("torch", "cpp")]:
        filt = backends.smoothness_filter(name, shape, spacing, theta, "cpu", torch.float64)
        msg = filt.forward(q)
        assert (msg - ref).norm() / ref.norm() <= 1e-4, name
        assert (msg - ref).abs().max() <= 1e-4, name


def test_transpose_band_is_matrix_transpose():
    band = separable.gaussian_band(11, 2.3)
    dense = separable.band_matrix(band)
    assert torch.allclose(separable.band_matrix(separable.transpose_band(band)), dense.t())
    assert torch.allclose(dense.sum(1), torch.ones(11, dtype=torch.float64))


def test_adjoint_of_smoothness_filter():
    shape, spacing = (9, 14, 11), (2.0, 0.9, 1.1)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 9 * 14 * 11, generator=gen, dtype=torch.float64)
    y = torch.randn(2, 9 * 14 * 11, generator=gen, dtype=torch.float64)
    for name in [b for b in available_backends() if b in ("torch", "cpp")]:
        filt = backends.smoothness_filter(name, shape, spacing, 2.5, "cpu", torch.float64)
        lhs, rhs = (filt.forward(x) * y).sum(), (x * filt.adjoint(y)).sum()
        assert abs(lhs - rhs) <= 1e-10 * abs(lhs), name


@pytest.mark.parametrize("shape", [(9, 14, 11), (300, 7), (5, 3, 1100)])
def test_cpp_separable_buffers_and_blocking(shape):
    """Scratch/output buffers and the cache-blocked passes give the dense-matrix result."""
    if "cpp" not in available_backends():
        pytest.skip("C++ extension unavailable")
    from SegDeepLib.crf.extension import load_extension

    ext = load_extension("cpu")
    bands = separable.smoothness_bands(shape, 2.0, [1.0] * len(shape), torch.float64)
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, *shape, generator=gen, dtype=torch.float64)
    ref = separable.separable_filter_torch(x, [separable.band_matrix(b) for b in bands])
    plain = ext.separable_filter(x, bands)
    assert torch.allclose(plain, ref, rtol=1e-12, atol=1e-14)
    scratch, out = torch.empty_like(x), torch.empty_like(x)
    got = ext.separable_filter(x, bands, scratch, out)
    assert got.data_ptr() == out.data_ptr() and torch.equal(got, plain)
    x_before = x.clone()
    aliased = ext.separable_filter(x, bands, x, x)  # aliasing buffers are ignored, not used
    assert torch.equal(aliased, plain) and torch.equal(x, x_before)
