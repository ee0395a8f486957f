"""The CRF-RNN forward pass with a learned (non-Potts, asymmetric) compatibility, every backend.

The CRF-RNN learns its compatibility matrix ``mu``; nothing keeps it symmetric. A transposed
``mu`` in the mean field gives the same result for Potts (the initial value) and passes gradcheck
(backward still matches forward), so it has to be caught here: the forward pass of every backend
the library reports (a new backend is picked up automatically) against a dense mean field written
in this file, with an ``mu`` whose transpose gives a clearly different answer.
"""

from __future__ import annotations

import pytest
import torch

from SegDeepLib.crf import CRFRNN, available_backends
from SegDeepLib.errors import SegDeepError

SHAPE = (5, 7, 6)
SPACING = (2.0, 1.0, 1.5)
PARAMS = {"theta_alpha": 3.0, "theta_beta": 20.0, "theta_gamma": 1.5, "w1": 2.0, "w2": 1.5}
ITERATIONS = 4
CASES = [(3, 0), (3, 3), (4, 9), (4, 11), (2, 7)]  # (labels, seed)
# Exact backends: max |Q - Q_ref|. Lattice backends approximate the Gaussians (a voxel near a
# tie of the mean field may move by ~0.1), so their MEAN |Q - Q_ref| is bounded: measured
# 0 - 0.0017 on these cases (torch, cpp), while mu^T moves the mean by 0.2 - 1.0 (more than 40x
# the bound, see test_reference_tells_mu_from_its_transpose).
EXACT_TOLERANCE = 1e-9
LATTICE_MEAN_TOLERANCE = 0.005


def _dense_kernel(features: torch.Tensor) -> torch.Tensor:
    """Row-normalised exp(-|f_i - f_j|^2 / 2), the voxel itself included (N, N)."""
    diff = features[:, None, :] - features[None, :, :]
    k = torch.exp(-0.5 * (diff * diff).sum(-1))
    return k / k.sum(1, keepdim=True)


def _features(image: torch.Tensor, theta_pos: float, theta_int: float | None) -> torch.Tensor:
    """(N, 3 [+ 1]) positions in mm / theta_pos, then intensity / theta_int (C order)."""
    axes = [torch.arange(n, dtype=torch.float64) * s / theta_pos for n, s in zip(SHAPE, SPACING)]
    grid = torch.meshgrid(*axes, indexing="ij")
    cols = [g.reshape(-1) for g in grid]
    if theta_int is not None:
        cols.append(image.reshape(-1).double() / theta_int)
    return torch.stack(cols, 1)


def reference_mean_field(
    unary: torch.Tensor, image: torch.Tensor, mu: torch.Tensor, iterations: int
) -> torch.Tensor:
    """Q (L, N) of Zheng et al.: Q <- softmax(U - mu @ (w1 Kb Q + w2 Ks Q)), float64, dense."""
    p = PARAMS
    kb = _dense_kernel(_features(image, p["theta_alpha"], p["theta_beta"]))
    ks = _dense_kernel(_features(image, p["theta_gamma"], None))
    u = unary.reshape(unary.shape[0], -1).double()
    q = torch.softmax(u, 0)
    for _ in range(iterations):
        message = p["w1"] * q @ kb.t() + p["w2"] * q @ ks.t()
        q = torch.softmax(u - mu.double() @ message, 0)
    return q


def _inputs(num_classes: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    unary = torch.randn(num_classes, *SHAPE, generator=gen, dtype=torch.float64) * 1.5
    # a smooth image with an edge, so the appearance kernel is not just the position kernel
    image = torch.randn(1, *SHAPE, generator=gen, dtype=torch.float64) * 15
    image[:, :, :, SHAPE[2] // 2 :] += 60.0
    # a learned-looking compatibility: no symmetry, non-zero diagonal, off-diagonals of both signs
    mu = 1.0 - torch.eye(num_classes, dtype=torch.float64)
    mu = mu + 1.0 * torch.randn(num_classes, num_classes, generator=gen, dtype=torch.float64)
    return unary, image, mu


def _run(backend: str, unary, image, mu, grad: bool) -> torch.Tensor:
    crf = CRFRNN(unary.shape[0], num_iterations=ITERATIONS, backend=backend, **PARAMS).double()
    with torch.no_grad():
        crf.compatibility.copy_(mu)
    try:
        out = _forward(crf, unary, image, "cpu", grad)
    except SegDeepError as exc:  # a backend that needs GPU tensors (the library says so)
        if "cuda" not in str(exc) or not torch.cuda.is_available():
            raise
        out = _forward(crf.cuda(), unary, image, "cuda", grad)
    assert crf.last_backend == backend
    return torch.softmax(out[0].detach().cpu().double(), 0).reshape(unary.shape[0], -1)


def _forward(crf, unary, image, device, grad: bool) -> torch.Tensor:
    with torch.set_grad_enabled(grad):
        return crf(unary[None].to(device), image[None].to(device), SPACING)


@pytest.mark.parametrize("num_classes,seed", CASES)
def test_reference_tells_mu_from_its_transpose(num_classes, seed):
    unary, image, mu = _inputs(num_classes, seed)
    assert (mu - mu.t()).abs().max() > 1.0
    right = reference_mean_field(unary, image, mu, ITERATIONS)
    wrong = reference_mean_field(unary, image, mu.t(), ITERATIONS)
    assert (right - wrong).abs().mean() > 40 * LATTICE_MEAN_TOLERANCE
    assert (right - torch.softmax(unary.reshape(num_classes, -1), 0)).abs().max() > 0.2


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "autograd"])
@pytest.mark.parametrize("num_classes,seed", CASES)
@pytest.mark.parametrize("backend", available_backends())
def test_forward_with_asymmetric_compatibility_matches_dense_reference(
    backend, num_classes, seed, grad
):
    unary, image, mu = _inputs(num_classes, seed)
    expected = reference_mean_field(unary, image, mu, ITERATIONS)
    got = _run(backend, unary, image, mu, grad)
    err = (got - expected).abs()
    if backend == "exact":
        assert float(err.max()) <= EXACT_TOLERANCE, float(err.max())
    else:
        assert float(err.mean()) <= LATTICE_MEAN_TOLERANCE, f"{backend}: {float(err.mean()):.3g}"
