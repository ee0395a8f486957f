"""The CUDA kernels compiled for the host (``cuda_emulated``): the GPU's lines of code, in CI.

Tested like the other backends: messages against the PyTorch backend and the exact Gaussian, the
adjoint identity, CRFRNN forward and gradients (logits, w1, w2 and an asymmetric compatibility)
in float32 and float64, 2D and 3D, 2 to 14 labels; the deterministic sorted splat; the binding's
input checks; the chunked feature source (no (N, d) float64 array).
"""

from __future__ import annotations

import pytest
import torch

from SegDeepLib.crf import CRFRNN, available_backends, backends, filters, lattice
from SegDeepLib.crf.backends import features as features_mod
from SegDeepLib.crf.exact import exact_filter
from SegDeepLib.crf.extension import load_extension
from Testing.SegDeepLib.crf import helpers

pytestmark = pytest.mark.skipif(
    "cuda_emulated" not in available_backends(), reason="host build of the CUDA kernels failed"
)
EMU = "cuda_emulated"
SHAPES = {2: (11, 13), 3: (5, 6, 7)}
SPACINGS = {2: (0.9, 1.1), 3: (1.0, 0.8, 1.2)}


def _module():
    return load_extension("emulated")


def _image(shape, seed=0, channels=1, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(channels, *shape, generator=gen, dtype=torch.float64) * 20).to(dtype)


def _filters(name, shape, dtype, seed=0):
    img = _image(shape, seed)
    spacing = SPACINGS[len(shape)]
    app = backends.image_appearance_filter(name, img, spacing, 2.0, [15.0], dtype)
    smooth = backends.smoothness_filter(name, shape, spacing, 1.5, torch.device("cpu"), dtype)
    return app, smooth


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("labels", [2, 5, 14])
def test_messages_match_the_pytorch_backend(dim, dtype, labels):
    """Same lattice, same operator: forward and adjoint messages agree to rounding."""
    shape = SHAPES[dim]
    n = int(torch.tensor(shape).prod())
    gen = torch.Generator().manual_seed(labels)
    q = torch.softmax(torch.randn(labels, n, generator=gen, dtype=torch.float64), 0)[:-1].to(dtype)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    for emu, ref in zip(_filters(EMU, shape, dtype), _filters("torch", shape, dtype)):
        assert type(emu) is not type(ref)
        for a, b in ((emu.forward(q), ref.forward(q)), (emu.adjoint(q), ref.adjoint(q))):
            assert a.dtype == dtype and a.shape == q.shape
            assert (a - b).abs().max() <= tol * b.abs().max(), float((a - b).abs().max())


def test_messages_close_to_exact_on_real_crop():
    hu, mask = helpers.real_crop()
    feats = backends.bilateral_features(
        torch.from_numpy(hu)[None], helpers.SPACING, helpers.SETTING_A["theta_alpha"], [15.0]
    )
    p = torch.from_numpy(helpers.noisy_probabilities(mask)).double().reshape(1, -1)
    q = torch.cat([1 - p, p], 0)  # as test_lattice's check of the other backends
    ref = exact_filter(feats, q) / exact_filter(feats, torch.ones_like(p))
    msg = backends.appearance_filter(EMU, feats, torch.float64).forward(q)
    assert (msg - ref).norm() / ref.norm() <= 0.015
    assert (msg - ref).abs().max() <= 0.10


@pytest.mark.parametrize("dim", [2, 3])
def test_adjoint_identity(dim):
    shape = SHAPES[dim]
    n = int(torch.tensor(shape).prod())
    gen = torch.Generator().manual_seed(dim)
    x = torch.randn(3, n, generator=gen, dtype=torch.float64)
    y = torch.randn(3, n, generator=gen, dtype=torch.float64)
    for filt in _filters(EMU, shape, torch.float64):
        lhs, rhs = (filt.forward(x) * y).sum(), (x * filt.adjoint(y)).sum()
        assert abs(lhs - rhs) <= 1e-12 * abs(lhs)
        assert not torch.allclose(filt.forward(x), filt.adjoint(x))  # not self-adjoint


def _asymmetric_compatibility(labels: int, gen) -> torch.Tensor:
    mu = 1 - torch.eye(labels, dtype=torch.float64)
    mu = mu + 0.5 * torch.rand(labels, labels, generator=gen, dtype=torch.float64)
    assert (mu - mu.t()).abs().max() > 0.05  # non-Potts and asymmetric
    return mu


def _crf_outputs(backend, labels, shape, dtype, seed=0):
    """Refined logits and the gradients of a fixed loss w.r.t. logits, w1, w2, compatibility."""
    gen = torch.Generator().manual_seed(seed)
    crf = CRFRNN(labels, 2.0, [10.0], 1.5, 2.0, 1.0, 3, backend=backend).to(dtype)
    with torch.no_grad():
        crf.compatibility.copy_(_asymmetric_compatibility(labels, gen))
    logits = torch.randn(1, labels, *shape, generator=gen, dtype=torch.float64).to(dtype)
    logits.requires_grad_()
    feats = _image(shape, seed + 1)[None].to(dtype)
    weights = torch.randn(1, labels, *shape, generator=gen, dtype=torch.float64).to(dtype)
    out = crf(logits, feats, SPACINGS[len(shape)])
    (out * weights).sum().backward()
    grads = [logits.grad, crf.w1.grad, crf.w2.grad, crf.compatibility.grad]
    return out.detach(), grads, crf.last_backend


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("labels", [2, 3, 14])
def test_crfrnn_forward_and_gradients_match_the_pytorch_backend(dim, dtype, labels):
    out, grads, used = _crf_outputs(EMU, labels, SHAPES[dim], dtype)
    ref_out, ref_grads, _ = _crf_outputs("torch", labels, SHAPES[dim], dtype)
    assert used == EMU
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    assert (out - ref_out).abs().max() <= tol * ref_out.abs().max()
    for name, g, r in zip(("logits", "w1", "w2", "compatibility"), grads, ref_grads):
        assert g is not None and g.dtype == dtype, name
        assert (g - r).abs().max() <= tol * max(r.abs().max(), 1.0), name
    assert grads[3].abs().max() > 0 and not torch.allclose(grads[3], grads[3].t())


@pytest.mark.parametrize("labels,shape", [(2, (2, 3, 4)), (4, (5, 6)), (14, (2, 2, 3))])
def test_crfrnn_gradcheck(labels, shape):
    """Gradients of the emulated kernels against finite differences (float64)."""
    gen = torch.Generator().manual_seed(labels)
    crf = CRFRNN(labels, 2.0, [10.0, 4.0], 1.5, 2.0, 1.0, 2, backend=EMU).double()
    logits = torch.randn(1, labels, *shape, generator=gen, dtype=torch.float64)
    feats = torch.randn(1, 2, *shape, generator=gen, dtype=torch.float64) * 10
    mu = _asymmetric_compatibility(labels, gen)
    w1, w2 = torch.tensor(2.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    del crf.w1, crf.w2, crf.compatibility
    spacing = SPACINGS[len(shape)]

    def fn(lg, a, b, m):
        crf.w1, crf.w2, crf.compatibility = a, b, m
        return crf(lg, feats, spacing)

    inputs = tuple(t.clone().requires_grad_() for t in (logits, w1, w2, mu))
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=labels > 2)


# The mean field against the exact one on the real crop, and robustness (extreme inputs,
# non-contiguous inputs, aspect ratio, the buffer-reusing inference loop): test_crfrnn.py runs
# those for every lattice backend, cuda_emulated included (LATTICE_BACKENDS).


# --- deterministic mode -----------------------------------------------------------------------


@pytest.fixture
def launch_order():
    module = _module()
    yield module.set_launch_order
    module.set_launch_order(0)


def _kernel_filter(dtype, labels=6):
    img = _image((6, 9, 10), 3)
    filt = backends.image_appearance_filter(EMU, img, (1.0, 1.0, 1.0), 2.0, [15.0], dtype)
    assert isinstance(filt, filters.KernelLatticeFilter)
    gen = torch.Generator().manual_seed(7)
    q = torch.rand(labels, img[0].numel(), generator=gen, dtype=torch.float64).to(dtype)
    return filt, q


def test_sorted_splat_is_the_atomic_splat_in_order(launch_order):
    """Threads run in order on the host: the segmented reduction sums in the same order as the
    atomics, so the two splats agree bit for bit."""
    filt, q = _kernel_filter(torch.float32)
    atomic = filt.forward(q)
    with _deterministic():
        assert torch.equal(filt.forward(q), atomic)


def test_deterministic_mode_is_bit_identical_in_any_thread_order(launch_order):
    """Threads in a different order (as on a GPU) change the float32 atomic sums; with
    torch.use_deterministic_algorithms(True) the sorted splat gives the same bits every time."""
    filt, q = _kernel_filter(torch.float32)
    atomic, sorted_ = [], []
    for seed in (0, 1, 2, 3):
        launch_order(seed)
        atomic.append(filt.forward(q))
        with _deterministic():
            sorted_.append((filt.forward(q), filt.adjoint(q)))
    assert any(not torch.equal(a, atomic[0]) for a in atomic[1:])  # the order shows in the bits
    assert all((a - atomic[0]).abs().max() <= 1e-5 for a in atomic)  # ... and only there
    for fwd, adj in sorted_[1:]:
        assert torch.equal(fwd, sorted_[0][0]) and torch.equal(adj, sorted_[0][1])


class _deterministic:
    def __enter__(self):
        self.before = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)

    def __exit__(self, *exc):
        torch.use_deterministic_algorithms(self.before)


def test_splat_order_groups_pairs_by_vertex():
    filt, _ = _kernel_filter(torch.float64)
    order, starts = filt.splat_order()
    flat = filt.lat.index.reshape(-1)
    assert starts.numel() == filt.lat.num_vertices + 1 and int(starts[-1]) == flat.numel()
    for v in (0, 5, filt.lat.num_vertices - 1):
        run = order[starts[v] : starts[v + 1]]
        assert torch.all(flat[run] == v) and torch.all(run[1:] > run[:-1])


# --- binding input checks ---------------------------------------------------------------------


@pytest.fixture
def tables():
    img = _image((4, 5, 6), 2)
    lat = lattice.build_lattice(features_mod.bilateral_features(img, (1, 1, 1), 2.0, [15.0]))
    values = torch.rand(2, lat.index.shape[0], dtype=torch.float64)
    return lat, values


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_values_are_refused_clearly(tables, dtype):
    lat, values = tables
    with pytest.raises(RuntimeError, match="convert them to float32"):
        _module().lattice_filter(lat.index, lat.weight, lat.neighbors, values.to(dtype), False)
    with pytest.raises(RuntimeError, match="convert them to float32"):
        _module().separable_filter(values.reshape(2, 8, 15).to(dtype), [torch.ones(8, 1)] * 2)


def test_bad_inputs_are_refused(tables):
    lat, values = tables
    f = _module().lattice_filter
    args = (lat.index, lat.weight, lat.neighbors)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        f(*args, values.long(), False)
    with pytest.raises(RuntimeError, match=r"values must be \(C, N\)"):
        f(*args, values[None], False)
    with pytest.raises(RuntimeError, match="index must be"):
        f(lat.index[:-1], lat.weight[:-1], lat.neighbors, values, False)
    with pytest.raises(RuntimeError, match="weight must have"):
        f(lat.index, lat.weight[:, :-1], lat.neighbors, values, False)
    with pytest.raises(RuntimeError, match="neighbors must be"):
        f(lat.index, lat.weight, lat.neighbors[:-1], values, False)
    with pytest.raises(RuntimeError, match="int32 or int64"):
        f(lat.index.double(), lat.weight, lat.neighbors, values, False)
    with pytest.raises(RuntimeError, match="on meta"):
        f(lat.index.to("meta"), lat.weight, lat.neighbors, values, False)
    with pytest.raises(RuntimeError, match="values are on meta"):
        f(*args, values.to("meta"), False)
    with pytest.raises(RuntimeError, match="splat_order"):
        f(*args, values, False, splat_order=torch.zeros(3, dtype=torch.long))
    with pytest.raises(RuntimeError, match="one band per spatial axis"):
        _module().separable_filter(values.reshape(2, 8, 15), [torch.ones(8, 1)])
    with pytest.raises(RuntimeError, match="band 1 must be"):
        _module().separable_filter(values.reshape(2, 8, 15), [torch.ones(8, 1), torch.ones(8, 2)])


def test_inputs_are_converted_where_that_is_safe(tables):
    """int32 tables, float32 weights, non-contiguous values: same result as the plain call."""
    lat, values = tables
    f = _module().lattice_filter
    ref = f(lat.index.long(), lat.weight, lat.neighbors.long(), values, False)
    strided = torch.rand(values.shape[1], 2, dtype=torch.float64).t()
    strided.copy_(values)
    assert not strided.is_contiguous()
    assert torch.equal(f(lat.index.int(), lat.weight, lat.neighbors.int(), strided, False), ref)
    out32 = f(lat.index, lat.weight, lat.neighbors, values.float(), False)
    assert out32.dtype == torch.float32 and torch.allclose(out32.double(), ref, rtol=1e-5)
    empty = f(lat.index[:0], lat.weight[:0], lat.neighbors, values[:, :0], False)
    assert empty.shape == (2, 0)


def test_out_of_range_ids_are_refused_before_a_kernel_runs(tables):
    lat, _ = tables
    bad = lattice.Lattice(lat.index.clone(), lat.weight, lat.neighbors, lat.num_vertices)
    bad.index[3, 1] = lat.num_vertices  # the zero vertex is only a neighbour, never a point's
    with pytest.raises(ValueError, match="index ids"):
        filters.KernelLatticeFilter(bad, torch.float64, _module())


# --- chunked features -------------------------------------------------------------------------


def test_kernel_backends_never_build_the_full_feature_array(monkeypatch):
    """The CUDA path builds its lattice from the chunked feature source, like the torch one."""
    img = _image((6, 7, 8), 4)
    ref = backends.appearance_filter(
        EMU, features_mod.bilateral_features(img, (1, 1, 1), 2.0, [15.0]), torch.float64
    )

    def refuse(*args, **kwargs):
        raise AssertionError("the (N, d) float64 feature array was built")

    monkeypatch.setattr(features_mod, "bilateral_features", refuse)
    monkeypatch.setattr(backends, "bilateral_features", refuse)
    monkeypatch.setattr(lattice, "_CHUNK", 64)  # several chunks
    filt = backends.image_appearance_filter(EMU, img, (1, 1, 1), 2.0, [15.0], torch.float64)
    q = torch.rand(3, img[0].numel(), dtype=torch.float64)
    assert torch.allclose(filt.forward(q), ref.forward(q), rtol=1e-12, atol=1e-14)


# --- one source for both builds ---------------------------------------------------------------


def test_host_build_compiles_with_a_plain_cpp_compiler(tmp_path):
    """The host kernels need no CUDA and no torch: g++ alone builds the C interface of the .cu,
    and both builds take their kernel bodies from the one shared header."""
    import shutil
    import subprocess

    from SegDeepLib.crf.extension import CSRC

    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    host, cuda = (CSRC / "crf_kernels_host.cpp").read_text(), (CSRC / "crf_kernels.cu").read_text()
    for text in (host, cuda):
        assert '#include "crf_kernel_bodies.h"' in text
        assert "lattice_filter_steps<" in text and "band_pass_steps<" in text
        assert "atomicAdd" not in text and "#include <torch" not in text
    obj = tmp_path / "host.o"
    cmd = [cxx, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-c"]
    proc = subprocess.run(
        [*cmd, str(CSRC / "crf_kernels_host.cpp"), "-o", str(obj)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    symbols = subprocess.run(["nm", str(obj)], capture_output=True, text=True, check=False).stdout
    for name in (
        "segdeep_lattice_filter_f32",
        "segdeep_lattice_filter_f64",
        "segdeep_band_pass_f32",
    ):
        assert f" T {name}" in symbols, name
