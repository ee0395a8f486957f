"""Augmentation split into "sample parameters" (random, seeded) and "apply" (deterministic).

Spatial transforms (rotation, scaling, translation, B-spline elastic deformation, flips) are folded
into one map from output-patch voxels to source-volume coordinates, so the volume is resampled once:
images with linear interpolation, labels and masks with nearest neighbour (no interpolation
artefacts: a label patch only ever contains values of the source). The elastic deformation is a
cubic B-spline free-form deformation with control points every ``grid_spacing`` voxels, each moved
by up to ``max_displacement`` voxels (32 / 4 and 24 / 4 in the papers); ``in_plane_only`` keeps every
transform in the (Y, X) plane (the bladder paper).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class SpatialParams:
    """One draw of the spatial transform (all in voxel units, array axis order Z, Y, X)."""

    angles: tuple[float, float, float] = (0.0, 0.0, 0.0)  # radians about the Z, Y, X axes
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    flips: tuple[int, ...] = ()
    elastic: np.ndarray | None = None  # (3, nz, ny, nx) control-point displacements (voxels)
    grid_spacing: int = 32

    @property
    def is_identity(self) -> bool:
        return (self.angles == (0.0, 0.0, 0.0) and self.scale == (1.0, 1.0, 1.0)
                and self.translation == (0.0, 0.0, 0.0) and self.elastic is None)


@dataclass
class IntensityParams:
    gamma: float = 1.0
    contrast: float = 1.0
    brightness: float = 0.0
    blur_sigma: float = 0.0
    noise_std: float = 0.0
    noise_seed: int = 0

    @property
    def is_identity(self) -> bool:
        return (self.gamma, self.contrast, self.brightness, self.blur_sigma, self.noise_std) == (1.0, 1.0, 0.0, 0.0, 0.0)


@dataclass
class AugmentSettings:
    """Plain settings (mirrors :class:`SegDeepLib.training.config.AugmentConfig`)."""

    elastic_probability: float = 0.0
    elastic_grid_spacing: int = 32
    elastic_max_displacement: float = 4.0
    in_plane_only: bool = False
    rotation_deg: float = 0.0
    scale_range: Sequence[float] = (1.0, 1.0)
    translation_vox: float = 0.0
    affine_probability: float = 0.0
    flip_axes: Sequence[int] = field(default_factory=tuple)
    noise_std: float = 0.0
    blur_sigma: Sequence[float] = (0.0, 0.0)
    gamma_range: Sequence[float] = (1.0, 1.0)
    brightness: float = 0.0
    contrast_range: Sequence[float] = (1.0, 1.0)
    intensity_probability: float = 0.0
    class_shift: dict[int, float] = field(default_factory=dict)  # class -> largest added value
    class_shift_probability: float = 0.0
    class_shift_cap: float | None = None  # values are not raised above it (a window's top)


def _control_shape(patch: Sequence[int], spacing: int) -> tuple[int, ...]:
    return tuple(math.ceil(p / spacing) + 3 for p in patch)


def sample_spatial(rng: np.random.Generator, s: AugmentSettings, patch: Sequence[int]) -> SpatialParams:
    """Draw rotation/scale/translation/elastic/flip parameters for a ``patch`` (Z, Y, X)."""
    params = SpatialParams(grid_spacing=int(s.elastic_grid_spacing))
    if s.affine_probability > 0 and rng.random() < s.affine_probability:
        limit = math.radians(s.rotation_deg)
        angles = rng.uniform(-limit, limit, 3)
        if s.in_plane_only:
            angles[1:] = 0.0  # only about Z (in the axial plane)
        scale = rng.uniform(s.scale_range[0], s.scale_range[1])
        shift = rng.uniform(-s.translation_vox, s.translation_vox, 3)
        if s.in_plane_only:
            shift[0] = 0.0
        params.angles = tuple(float(a) for a in angles)
        params.scale = (1.0 if s.in_plane_only else float(scale), float(scale), float(scale))
        params.translation = tuple(float(t) for t in shift)
    if s.elastic_probability > 0 and rng.random() < s.elastic_probability:
        shape = _control_shape(patch, params.grid_spacing)
        field_ = rng.uniform(-s.elastic_max_displacement, s.elastic_max_displacement, (3, *shape))
        if s.in_plane_only:
            field_[0] = 0.0
        params.elastic = field_.astype(np.float32)
    params.flips = tuple(int(ax) for ax in s.flip_axes if rng.random() < 0.5)
    return params


def sample_intensity(rng: np.random.Generator, s: AugmentSettings) -> IntensityParams:
    """Draw gamma/contrast/brightness/blur/noise parameters (identity unless the draw fires)."""
    if s.intensity_probability <= 0 or rng.random() >= s.intensity_probability:
        return IntensityParams()
    return IntensityParams(
        gamma=float(rng.uniform(*s.gamma_range)),
        contrast=float(rng.uniform(*s.contrast_range)),
        brightness=float(rng.uniform(-s.brightness, s.brightness)),
        blur_sigma=float(rng.uniform(*s.blur_sigma)),
        noise_std=float(rng.uniform(0, s.noise_std)),
        noise_seed=int(rng.integers(2**31)),
    )


def sample_class_shift(rng: np.random.Generator, s: AugmentSettings) -> dict[int, float]:
    """Per-class additive shifts for one sample: every configured class gets its largest shift
    times one common U(0, 1) draw (organs enhance together after a contrast injection); ``{}``
    unless the draw fires."""
    if not s.class_shift or s.class_shift_probability <= 0 or rng.random() >= s.class_shift_probability:
        return {}
    level = float(rng.uniform(0.0, 1.0))
    return {int(k): level * float(v) for k, v in s.class_shift.items()}


def apply_class_shift(shifts: dict[int, float], image: np.ndarray, label: np.ndarray,
                      cap: float | None = None) -> np.ndarray:
    """Add ``shifts[k]`` to every channel inside class ``k`` of ``label`` (same spatial shape);
    shifted values are not raised above ``cap`` (a windowed CT saturates at the window's top)."""
    if not shifts:
        return image
    out = image.astype(np.float32, copy=True)
    for k, shift in shifts.items():
        inside = label == k
        raised = out[:, inside] + np.float32(shift)
        out[:, inside] = raised if cap is None else np.minimum(raised, np.maximum(out[:, inside], cap))
    return out


def bspline_weights(n_out: int, n_ctrl: int, spacing: int) -> np.ndarray:
    """``(n_out, n_ctrl)`` cubic B-spline basis values; control point j sits at ``(j - 1) * spacing``."""
    x = np.arange(n_out, dtype=np.float64)[:, None] / spacing - (np.arange(n_ctrl)[None, :] - 1)
    a = np.abs(x)
    w = np.where(a < 1, (4 - 6 * a**2 + 3 * a**3) / 6, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))
    return w


def elastic_field(ctrl: np.ndarray, patch: Sequence[int], spacing: int) -> np.ndarray:
    """Dense ``(3, *patch)`` displacement from control-point displacements (separable B-spline)."""
    wz, wy, wx = (bspline_weights(p, n, spacing) for p, n in zip(patch, ctrl.shape[1:]))
    return np.einsum("za,yb,xc,dabc->dzyx", wz, wy, wx, ctrl.astype(np.float64), optimize=True).astype(np.float32)


def _rotation(angles: Sequence[float]) -> np.ndarray:
    az, ay, ax = angles
    rz = np.array([[1, 0, 0], [0, math.cos(az), -math.sin(az)], [0, math.sin(az), math.cos(az)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rx = np.array([[math.cos(ax), -math.sin(ax), 0], [math.sin(ax), math.cos(ax), 0], [0, 0, 1]])
    return rz @ ry @ rx


def source_coordinates(params: SpatialParams, patch: Sequence[int], centre: Sequence[float]) -> np.ndarray:
    """``(3, *patch)`` source-volume coordinates (Z, Y, X) of every output voxel."""
    grid = np.stack(np.meshgrid(*[np.arange(p, dtype=np.float32) - (p - 1) / 2 for p in patch], indexing="ij"))
    matrix = _rotation(params.angles) @ np.diag(1.0 / np.asarray(params.scale))
    coords = np.einsum("ij,j...->i...", matrix.astype(np.float32), grid)
    if params.elastic is not None:
        coords = coords + elastic_field(params.elastic, patch, params.grid_spacing)
    offset = np.asarray(centre, np.float32) + np.asarray(params.translation, np.float32)
    return (coords + offset.reshape(3, 1, 1, 1)).astype(np.float32)


def sample_volume(volume: np.ndarray, coords: np.ndarray, nearest: bool, fill: float = 0.0) -> np.ndarray:
    """Resample ``volume`` ``(C, Z, Y, X)`` at ``coords`` ``(3, *patch)``; outside -> ``fill``.

    Only the bounding box of the coordinates is read (volumes may be memory-mapped).
    """
    lo = np.maximum(np.floor(coords.reshape(3, -1).min(1)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(coords.reshape(3, -1).max(1)).astype(int) + 2, volume.shape[1:])
    if np.any(hi <= lo):
        return np.full((volume.shape[0], *coords.shape[1:]), fill, np.float32)
    box = np.ascontiguousarray(volume[:, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], dtype=np.float32)
    local = coords - lo.reshape(3, 1, 1, 1)
    size = np.asarray(box.shape[1:], np.float32).reshape(3, 1, 1, 1)
    norm = ((2 * local + 1) / size - 1).astype(np.float32)  # align_corners=False convention
    grid = torch.from_numpy(norm[::-1].copy()).permute(1, 2, 3, 0)[None]  # (1, z, y, x, [x, y, z])
    if not box.flags.writeable:  # a read-only memory map: torch wants writable memory
        box = box.copy()
    data = torch.from_numpy(box)[None] - fill
    mode = "nearest" if nearest else "bilinear"
    out = F.grid_sample(data, grid, mode=mode, padding_mode="zeros", align_corners=False)[0] + fill
    return out.numpy()


def extract(volume: np.ndarray, start: Sequence[int], patch: Sequence[int], fill: float = 0.0) -> np.ndarray:
    """Plain crop ``(C, *patch)`` starting at ``start`` (may lie partly outside; padded with ``fill``)."""
    out = np.full((volume.shape[0], *patch), fill, dtype=volume.dtype)
    src, dst = [], []
    for s, p, n in zip(start, patch, volume.shape[1:]):
        a, b = max(s, 0), min(s + p, n)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - s, b - s))
    out[(slice(None), *dst)] = volume[(slice(None), *src)]
    return out


def apply_spatial(params: SpatialParams, centre: Sequence[float], patch: Sequence[int], image: np.ndarray,
                  nearest_arrays: Sequence[np.ndarray], fills: Sequence[float]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Transform ``image`` ``(C, Z, Y, X)`` (linear) and ``nearest_arrays`` ``(Z, Y, X)`` (nearest)."""
    if params.is_identity:
        start = [int(np.floor(c - (p - 1) / 2 + 0.5)) for c, p in zip(centre, patch)]
        img = extract(image, start, patch).astype(np.float32)
        others = [extract(a[None], start, patch, f)[0] for a, f in zip(nearest_arrays, fills)]
    else:
        coords = source_coordinates(params, patch, centre)
        img = sample_volume(image, coords, nearest=False)
        others = [sample_volume(a[None].astype(np.float32), coords, True, f)[0].round().astype(a.dtype)
                  for a, f in zip(nearest_arrays, fills)]
    for axis in params.flips:
        img = np.flip(img, axis + 1)
        others = [np.flip(o, axis) for o in others]
    return np.ascontiguousarray(img), [np.ascontiguousarray(o) for o in others]


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(int(3 * sigma + 0.5), 1)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    data = torch.from_numpy(np.ascontiguousarray(image, np.float32))
    flat = data.reshape(-1, 1, *data.shape[1:])
    for axis in range(flat.dim() - 2):
        shape = [1, 1] + [1] * (flat.dim() - 2)
        shape[axis + 2] = -1
        pad = [0, 0] * (flat.dim() - 2)
        pad[2 * (flat.dim() - 3 - axis)] = pad[2 * (flat.dim() - 3 - axis) + 1] = radius
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[flat.dim() - 2]
        flat = conv(F.pad(flat, pad, mode="replicate"), kernel.reshape(shape))
    return flat.reshape(data.shape).numpy()


def apply_intensity(params: IntensityParams, image: np.ndarray) -> np.ndarray:
    """Gamma (on the per-channel [min, max] range), contrast about the mean, brightness, blur, noise."""
    if params.is_identity:
        return image
    out = image.astype(np.float32, copy=True)
    if params.gamma != 1.0:
        lo = out.reshape(out.shape[0], -1).min(1).reshape(-1, *[1] * (out.ndim - 1))
        hi = out.reshape(out.shape[0], -1).max(1).reshape(-1, *[1] * (out.ndim - 1))
        span = np.maximum(hi - lo, 1e-8)
        out = ((out - lo) / span) ** params.gamma * span + lo
    if params.contrast != 1.0:
        mean = out.reshape(out.shape[0], -1).mean(1).reshape(-1, *[1] * (out.ndim - 1))
        out = (out - mean) * params.contrast + mean
    out = out + params.brightness
    if params.blur_sigma > 0:
        out = _gaussian_blur(out, params.blur_sigma)
    if params.noise_std > 0:
        out = out + np.random.default_rng(params.noise_seed).normal(0, params.noise_std, out.shape).astype(np.float32)
    return out.astype(np.float32)
