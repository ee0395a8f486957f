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
