"""Permutohedral lattice (Adams, Baek & Davis 2010) in pure PyTorch.

The lattice is *built* once per image and kernel (:func:`build_lattice`): every point gets the
d + 1 vertices of its enclosing simplex (``index``) with barycentric ``weight`` s, and every vertex
its two neighbours along each of the d + 1 lattice directions (``neighbors``). Filtering
(:func:`lattice_filter`) is then splat -> blur along each direction -> slice, which is a linear map
``A = S^T B_d ... B_0 S``; its adjoint is the same map with the blurs in reverse order (each B_j is
symmetric), which is what the backward pass uses.

The same :class:`Lattice` tensors are consumed by the C++ and CUDA filters, so all lattice
backends compute the same operator. Vertex keys are packed into one int64 with per-axis padding,
so that neighbour keys never alias. The build runs in chunks of points, so that its temporaries
are those of one chunk. Index and neighbour tables are int32 on the CPU while the ids fit (like
the C++ build), int64 on other devices (the CUDA kernels) and beyond; every offset is int64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from SegDeepLib.errors import SegDeepError

_MAX_PACKED = 2**62
MAX_FEATURE = 1e12
_CHUNK = 1 << 15  # points per chunk of the lattice build on the CPU (64 times that on GPUs)


@dataclass
class Lattice:
    """A built lattice: ``index``/``weight`` (N, d+1), ``neighbors`` (d+1, 2, M), int64 or int32.

    Missing neighbours point to vertex ``M``, a row that is always zero. ``norm`` (N,) is the
    filtered constant 1 (the row normaliser), filled in by the backend that built the lattice.
    """

    index: torch.Tensor
    weight: torch.Tensor
    neighbors: torch.Tensor
    num_vertices: int
    norm: torch.Tensor | None = None

    @property
    def dim(self) -> int:
        """Feature dimension d."""
        return self.index.shape[1] - 1


@dataclass
class FeatureSource:
    """Scaled features (N, d) made a block of rows at a time: ``rows(slice)`` -> (rows, d) float64,
    with per-feature bounds ``low``/``high`` (d,) float64 (used for the key packing)."""

    rows: Callable[[slice], torch.Tensor]
    num_points: int
    low: torch.Tensor
    high: torch.Tensor


def _elevation_matrix(d: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(d, d+1) matrix mapping scaled features onto the plane sum(x) = 0, times the scales."""
    inv_std = (d + 1) * math.sqrt(2.0 / 3.0)
    scale = torch.tensor(
        [inv_std / math.sqrt((k + 1) * (k + 2)) for k in range(d)], dtype=dtype, device=device
    )
    mat = torch.zeros(d, d + 1, dtype=dtype, device=device)
    for j in range(d + 1):
        mat[j:, j] = 1.0
        if j >= 1:
            mat[j - 1, j] = -float(j)
    return mat * scale[:, None]


def _rank(residual: torch.Tensor) -> torch.Tensor:
    """Rank of each residual inside its point (ties broken like Kraehenbuehl's code)."""
    n, dp1 = residual.shape
    rank = torch.zeros(n, dp1, dtype=torch.int64, device=residual.device)
    for i in range(dp1):
        for j in range(i + 1, dp1):
            lower = (residual[:, i] < residual[:, j]).long()
            rank[:, i] += lower
            rank[:, j] += 1 - lower
    return rank


def _simplex(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Remainder-0 vertex (N, d) int64, ranks (N, d+1) and barycentric weights (N, d+1)."""
    feat = features.to(torch.float64)
    n, d = feat.shape
    elevated = feat @ _elevation_matrix(d, torch.float64, feat.device)
    down = elevated / (d + 1)
    up_pt = torch.ceil(down) * (d + 1)
    down_pt = torch.floor(down) * (d + 1)
    rem0 = torch.where(up_pt - elevated < elevated - down_pt, up_pt, down_pt)
    total = torch.round(rem0.sum(1) / (d + 1)).long()[:, None]
    rank = _rank(elevated - rem0)
    pos = total > 0
    neg = total < 0
    high = pos & (rank >= d + 1 - total)
    low = neg & (rank < -total)
    rem0 = rem0 - (d + 1) * high.to(rem0.dtype) + (d + 1) * low.to(rem0.dtype)
    rank = rank + total + (d + 1) * (low.long() - high.long())
    vals = (elevated - rem0) / (d + 1)
    bary = torch.zeros(n, d + 2, dtype=torch.float64, device=feat.device)
    bary.scatter_add_(1, d - rank, vals)
    bary.scatter_add_(1, d - rank + 1, -vals)
    bary[:, 0] += 1.0 + bary[:, d + 1]
    return rem0[:, :d].long(), rank, bary[:, : d + 1]


def simplex_coordinates(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertex coordinates (N, d+1, d) int64 and barycentric weights (N, d+1) of every point.

    ``features`` (N, d) are already divided by their bandwidths; computed in float64.
    """
    r0, rank, bary = _simplex(features)
    d = r0.shape[1]
    rem = torch.arange(d + 1, device=r0.device)
    keys = r0[:, None] + rem[None, :, None] - (d + 1) * (rank[:, None, :d] > d - rem[None, :, None])
    return keys, bary


def _packed_simplex(
    features: torch.Tensor, origin: torch.Tensor, strides: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed keys (N, d+1) int64 of the :func:`simplex_coordinates` vertices, and the weights.

    Key r is the remainder-0 vertex plus r along every axis, minus d+1 where the axis' rank
    exceeds d - r; packed term by term, without the (N, d+1, d) coordinates.
    """
    r0, rank, bary = _simplex(features)
    d = r0.shape[1]
    base = ((r0 - origin) * strides).sum(1)
    packed = torch.empty_like(rank)
    for r in range(d + 1):
        wrapped = ((rank[:, :d] > d - r) * strides).sum(1)
        torch.add(base, wrapped, alpha=-(d + 1), out=packed[:, r]).add_(r * int(strides.sum()))
    return packed, bary


def _packing(low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-axis origin and stride packing key coordinates into one int64 (C++ ``make_geometry``).

    Bounds of the elevated coordinates come from the per-feature ranges (interval arithmetic),
    padded by 4 (d+1): room for the remainder shifts and the neighbour offsets, so that neighbour
    keys never alias. None when the packed keys would overflow int64 (huge feature ranges, e.g.
    a tiny theta_beta).
    """
    d = low.numel()
    mat = _elevation_matrix(d, torch.float64, low.device)[:, :d]
    ends = torch.stack([low.double()[:, None] * mat, high.double()[:, None] * mat])
    pad = 4.0 * (d + 1)
    lo = torch.floor(ends.amin(0).sum(0) - pad)
    hi = torch.ceil(ends.amax(0).sum(0) + pad)
    total, strides = 1, []
    for size in (hi - lo + 1).tolist():
        strides.append(total)
        total *= int(size)
    if total >= _MAX_PACKED:
        return None
    return lo.long(), torch.tensor(strides, dtype=torch.int64, device=low.device)


def _neighbor_table(uniq: torch.Tensor, strides: torch.Tensor, d: int) -> torch.Tensor:
    """(d+1, 2, M) neighbour ids of the sorted packed keys ``uniq``; M where missing."""
    m = uniq.numel()
    neighbors = torch.empty(d + 1, 2, m, dtype=torch.int64, device=uniq.device)
    shifts = (direction_offsets(d, uniq.device) * strides).sum(1)
    for j, shift in enumerate(shifts.tolist()):
        for side, sign in enumerate((1, -1)):
            target = uniq + sign * shift
            pos = torch.searchsorted(uniq, target).clamp_(max=m - 1)
            found = uniq[pos] == target
            neighbors[j, side] = torch.where(found, pos, torch.full_like(pos, m))
    return neighbors


def _build_packed(source: FeatureSource, packing, weight_dtype: torch.dtype) -> Lattice:
    """Lattice via packed int64 keys, chunk by chunk (temporaries of one chunk only).

    Each chunk's keys are deduplicated on their own (``index`` keeps the chunk-local ids); the
    distinct keys of all chunks give the sorted vertex keys, and a second pass maps the local ids
    to vertex ids. On the CPU ``index`` is int32 (like the C++ build) while the ids fit.
    """
    n, d, device = source.num_points, source.low.numel(), source.low.device
    origin, strides = packing
    cpu = device.type == "cpu"
    narrow = cpu and n * (d + 1) < 2**31 - 1
    index = torch.empty(n, d + 1, dtype=torch.int32 if narrow else torch.int64, device=device)
    weight = torch.empty(n, d + 1, dtype=weight_dtype, device=device)
    chunk = _CHUNK if cpu else 64 * _CHUNK
    pieces = []
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        packed, weight[rows] = _packed_simplex(source.rows(rows), origin, strides)
        keys, index[rows] = torch.unique(packed, return_inverse=True)
        pieces.append(keys)
    uniq = torch.unique(torch.cat(pieces))
    for start, keys in zip(range(0, n, chunk), pieces):
        rows = slice(start, start + chunk)
        index[rows] = torch.searchsorted(uniq, keys, out_int32=narrow)[index[rows]]
    neighbors = _neighbor_table(uniq, strides, d).to(index.dtype)
    return Lattice(index, weight, neighbors, uniq.numel())


def _build_rows(features: torch.Tensor, weight_dtype: torch.dtype) -> Lattice:
    """Lattice for any key range (row-wise unique of all keys at once; slower, more memory)."""
    n, d = features.shape
    keys, bary = simplex_coordinates(features)
    inverse, neighbors, m = _dedupe_rows(keys.reshape(-1, d))
    return Lattice(inverse.reshape(n, d + 1), bary.to(weight_dtype), neighbors, m)


def _dedupe_rows(keys: torch.Tensor):
    """Vertex ids of ``keys`` (K, d) and neighbour table, via a row-wise unique."""
    d = keys.shape[1]
    uniq, inverse = torch.unique(keys, dim=0, return_inverse=True)
    m = uniq.shape[0]
    neighbors = torch.empty(d + 1, 2, m, dtype=torch.int64, device=keys.device)
    offsets = direction_offsets(d, keys.device)
    for j in range(d + 1):
        for side, sign in enumerate((1, -1)):
            both = torch.cat([uniq, uniq + sign * offsets[j]], 0)
            _, inv = torch.unique(both, dim=0, return_inverse=True)
            to_vertex = torch.full((int(inv.max()) + 1,), m, dtype=torch.int64, device=keys.device)
            to_vertex[inv[:m]] = torch.arange(m, device=keys.device)
            neighbors[j, side] = to_vertex[inv[m:]]
    return inverse, neighbors, m


def direction_offsets(d: int, device: torch.device) -> torch.Tensor:
    """(d+1, d) int64 key offsets of the d+1 lattice directions (first d coordinates)."""
    off = torch.full((d + 1, d), -1, dtype=torch.int64, device=device)
    for j in range(d):
        off[j, j] = d
    return off


def check_feature_range(features: torch.Tensor) -> None:
    """Raise a clear error when scaled features are too large for exact integer lattice keys."""
    lo, hi = torch.aminmax(features)  # one pass, no temporaries; NaN propagates to lo and hi
    check_feature_extent(max(abs(float(lo)), abs(float(hi))))


def check_feature_extent(extent: float) -> None:
    """Raise unless the largest absolute scaled feature ``extent`` is finite and small enough."""
    if not math.isfinite(extent) or extent > MAX_FEATURE:
        raise SegDeepError(
            "CRF lattice: feature range too large for the lattice keys (theta_beta or theta_alpha "
            "far too small for this image); use larger bandwidths or rescale the intensities"
        )


def build_lattice(features: torch.Tensor, weight_dtype: torch.dtype | None = None) -> Lattice:
    """Build the lattice of ``features`` (N, d) (already divided by the bandwidths).

    ``weight_dtype``: that of the barycentric weights (default: the features' floating dtype).
    """
    if features.ndim != 2 or features.shape[0] == 0:
        raise SegDeepError("CRF lattice: features must be a non-empty (N, d) tensor")
    if weight_dtype is None:
        weight_dtype = features.dtype if features.is_floating_point() else torch.float32
    low, high = torch.aminmax(features, dim=0)  # NaN propagates: build_lattice_from refuses it
    rows = features.__getitem__
    return build_lattice_from(FeatureSource(rows, features.shape[0], low, high), weight_dtype)


def build_lattice_from(source: FeatureSource, weight_dtype: torch.dtype) -> Lattice:
    """Build the lattice of the features of ``source`` without holding all of them at once."""
    extent = torch.maximum(source.low.abs(), source.high.abs()).max()
    check_feature_extent(float(extent))  # NaN fails the check
    packing = _packing(source.low, source.high)
    if packing is None:
        return _build_rows(source.rows(slice(0, source.num_points)), weight_dtype)
    return _build_packed(source, packing, weight_dtype)


def _point_chunks(lat: Lattice) -> range:
    """Starts of the point chunks that splat and slice process at a time (bounded temporaries)."""
    return range(0, lat.index.shape[0], 4 * _CHUNK)


def splat(lat: Lattice, values: torch.Tensor) -> torch.Tensor:
    """Splat ``values`` (C, N) onto the vertices: (C, M+1), last row zero."""
    c = values.shape[0]
    out = values.new_zeros(c, lat.num_vertices + 1)
    weight = lat.weight.to(values.dtype)
    for start in _point_chunks(lat):
        rows = slice(start, start + 4 * _CHUNK)
        contrib = values[:, rows, None] * weight[None, rows]
        ids = lat.index[rows].reshape(-1).long()  # index_add_ is many times slower on int32
        out.index_add_(1, ids, contrib.reshape(c, -1))
    return out


def blur(lat: Lattice, verts: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """[1/2, 1, 1/2] blur along every lattice direction (reverse order for the adjoint)."""
    m = lat.num_vertices
    order = range(lat.dim, -1, -1) if reverse else range(lat.dim + 1)
    for j in order:
        new = verts.clone()
        new[:, :m] += 0.5 * (verts[:, lat.neighbors[j, 0]] + verts[:, lat.neighbors[j, 1]])
        verts = new
    return verts


def slice_values(
    lat: Lattice, verts: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Interpolate vertex values back at the points: (C, N), written into ``out`` when given."""
    if out is None:
        out = verts.new_empty(verts.shape[0], lat.index.shape[0])
    weight = lat.weight.to(verts.dtype)
    for start in _point_chunks(lat):
        rows = slice(start, start + 4 * _CHUNK)
        gathered = verts[:, lat.index[rows].long()]  # gathers by int64 ids are faster
        torch.sum(gathered * weight[None, rows], -1, out=out[:, rows])
    return out


def lattice_filter(
    lat: Lattice, values: torch.Tensor, reverse: bool = False, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Unnormalised lattice filtering of ``values`` (C, N); ``reverse`` gives the adjoint."""
    return slice_values(lat, blur(lat, splat(lat, values), reverse), out)
