"""The ``cuda`` backend on CUDA tensors (skipped cleanly without a GPU or its extension).

The same checks as for the host build of its kernels (test_cuda_emulated.py), on the device:
messages against the PyTorch backend, the adjoint identity, CRFRNN gradients, the deterministic
splat, and tensors on a second GPU (the kernels must run on the tensors' device and stream).
"""

from __future__ import annotations

import pytest
import torch

from SegDeepLib.crf import CRFRNN, available_backends, backends, crf_refine

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available() or "cuda" not in available_backends(),
    reason="no CUDA device or CUDA extension",
)
pytestmark = needs_cuda
SHAPE, SPACING = (6, 9, 10), (1.0, 0.8, 1.2)


def _image(device, seed=0, shape=SHAPE) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(1, *shape, generator=gen, dtype=torch.float64) * 20).to(device)


def _filters(name, device, dtype, shape=SHAPE):
    img = _image(device, shape=shape)
    app = backends.image_appearance_filter(name, img, SPACING, 2.0, [15.0], dtype)
    smooth = backends.smoothness_filter(name, shape, SPACING, 1.5, torch.device(device), dtype)
    return app, smooth


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_messages_match_the_pytorch_backend(dtype):
    n = int(torch.tensor(SHAPE).prod())
    q = torch.softmax(torch.randn(5, n, dtype=torch.float64), 0)[:-1].to(dtype)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    for gpu, ref in zip(_filters("cuda", "cuda", dtype), _filters("torch", "cpu", dtype)):
        for a, b in (
            (gpu.forward(q.cuda()), ref.forward(q)),
            (gpu.adjoint(q.cuda()), ref.adjoint(q)),
        ):
            assert a.is_cuda and a.dtype == dtype
            assert (a.cpu() - b).abs().max() <= tol * b.abs().max()


def test_cuda_adjoint_identity():
    n = int(torch.tensor(SHAPE).prod())
    x = torch.randn(3, n, dtype=torch.float64, device="cuda")
    y = torch.randn(3, n, dtype=torch.float64, device="cuda")
    for filt in _filters("cuda", "cuda", torch.float64):
        lhs, rhs = (filt.forward(x) * y).sum(), (x * filt.adjoint(y)).sum()
        assert abs(float(lhs - rhs)) <= 1e-12 * abs(float(lhs))


def _grads(backend, device, labels=4):
    gen = torch.Generator().manual_seed(labels)
    crf = CRFRNN(labels, 2.0, [10.0], 1.5, 2.0, 1.0, 3, backend=backend).double().to(device)
    mu = (
        1 - torch.eye(labels, dtype=torch.float64) + 0.5 * torch.rand(labels, labels, generator=gen)
    )
    with torch.no_grad():
        crf.compatibility.copy_(mu.to(device))
    logits = torch.randn(1, labels, *SHAPE, generator=gen, dtype=torch.float64).to(device)
    logits.requires_grad_()
    weights = torch.randn(1, labels, *SHAPE, generator=gen, dtype=torch.float64).to(device)
    out = crf(logits, _image(device)[None], SPACING)
    (out * weights).sum().backward()
    assert crf.last_backend == backend
    grads = (logits.grad, crf.w1.grad, crf.w2.grad, crf.compatibility.grad)
    return out.detach().cpu(), [g.cpu() for g in grads]


def test_cuda_crfrnn_forward_and_gradients_match_the_cpu():
    out, grads = _grads("cuda", "cuda")
    ref_out, ref_grads = _grads("torch", "cpu")
    assert torch.allclose(out, ref_out, rtol=1e-10, atol=1e-10)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-9, atol=1e-10)


def test_auto_picks_cuda_for_cuda_tensors():
    assert backends.resolve_backend("auto", torch.device("cuda")) == "cuda"


def test_cuda_deterministic_mode_is_bit_identical():
    big = (24, 40, 40)
    filt, _ = _filters("cuda", "cuda", torch.float32, shape=big)
    q = torch.rand(13, filt.lat.index.shape[0], device="cuda")
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = [filt.forward(q) for _ in range(5)]
    finally:
        torch.use_deterministic_algorithms(before)
    assert all(torch.equal(r, runs[0]) for r in runs[1:])
    assert torch.allclose(runs[0], filt.forward(q), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_tensors_on_a_second_gpu():
    """Kernels run on the tensors' device (CUDA guard and that device's stream)."""
    probs = torch.softmax(torch.randn(3, *SHAPE, dtype=torch.float64), 0)
    img = _image("cpu")
    ref = crf_refine(probs, img, SPACING, backend="torch")
    with torch.cuda.device(0):
        out = crf_refine(probs.to("cuda:1"), img.to("cuda:1"), SPACING, backend="cuda")
    assert out.device == torch.device("cuda:1")
    assert torch.allclose(out.cpu(), ref, rtol=1e-9, atol=1e-10)


def test_half_values_are_refused_on_the_device():
    from SegDeepLib.crf.extension import load_extension

    filt, _ = _filters("cuda", "cuda", torch.float32)
    lat = filt.lat
    values = torch.rand(2, lat.index.shape[0], device="cuda", dtype=torch.float16)
    with pytest.raises(RuntimeError, match="convert them to float32"):
        load_extension("cuda").lattice_filter(lat.index, lat.weight, lat.neighbors, values, False)
    with pytest.raises(RuntimeError, match="is on cpu"):
        load_extension("cuda").lattice_filter(
            lat.index.cpu(), lat.weight, lat.neighbors, values.float(), False
        )
