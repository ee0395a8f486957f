"""A synthetic abdominal CT phantom with known labels, for tests and the demo.

**It is no substitute for real data in any accuracy claim**: organs are deformed ellipsoids and
tubes at textbook portal-venous-phase HU values; real anatomy, pathology, contrast timing, scanner
noise texture and artefacts are not modelled.

Labels follow ``SegDeepLib/resources/labels/phantom.json``: 1 liver, 2 spleen, 3 kidney_right,
4 kidney_left, 5 pancreas, 6 urinary_bladder, 7 spine. The images have an identity direction
(voxel axes i, j, k = patient L, P, S, as in the canonical layout), so the liver lies at small x
(patient right) and the spine at large y (posterior).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError

LABELS = {
    "liver": 1,
    "spleen": 2,
    "kidney_right": 3,
    "kidney_left": 4,
    "pancreas": 5,
    "urinary_bladder": 6,
    "spine": 7,
}
HU = {
    "air": -1000.0,
    "skin": 40.0,
    "fat": -100.0,
    "muscle": 55.0,
    "cavity": 20.0,
    "gas": -900.0,
    "liver": 110.0,
    "spleen": 120.0,
    "kidney": 170.0,
    "pancreas": 95.0,
    "bladder": 10.0,
    "cortical_bone": 700.0,
    "cancellous_bone": 250.0,
    "disc": 90.0,
    "canal": 15.0,
    "aorta": 160.0,
    "ivc": 130.0,
}


@dataclass(frozen=True)
class _Grid:
    """Voxel-centre coordinates in mm (volume centre at 0), broadcastable as (Z, Y, X)."""

    z: np.ndarray
    y: np.ndarray
    x: np.ndarray

    @classmethod
    def make(cls, shape: Sequence[int], spacing: Sequence[float]) -> _Grid:
        axes = [
            ((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32) for n, s in zip(shape, spacing)
        ]
        return cls(axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :])

    def window(self, center: Sequence[float], reach: float) -> tuple[tuple[slice, ...], _Grid]:
        """Index box covering ``center +- reach`` mm (z, y, x), and the coordinates inside it."""
        slices = []
        for coords, c in zip((self.z.ravel(), self.y.ravel(), self.x.ravel()), center):
            inside = np.flatnonzero(np.abs(coords - c) <= reach)
            slices.append(
                slice(int(inside[0]), int(inside[-1]) + 1) if inside.size else slice(0, 0)
            )
        z, y, x = self.z[slices[0]], self.y[:, slices[1]], self.x[:, :, slices[2]]
        return tuple(slices), _Grid(z, y, x)


def _ellipsoid(
    grid: _Grid, center, radii, angle: float, bumps: np.ndarray, cut=None
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Mask of an ellipsoid rotated by ``angle`` about z, its surface wobbled by harmonics ``bumps``.

    Returns the index box and the mask inside it. ``center``/``radii`` are (z, y, x) mm. ``cut``,
    when given, maps the normalised coordinates ``(nz, nv, nu)`` to a mask of voxels to keep.
    """
    reach = float(max(radii)) * (1.0 + float(np.abs(bumps).sum())) + 1.0
    box, g = grid.window(center, reach)
    dz, dy, dx = g.z - center[0], g.y - center[1], g.x - center[2]
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    nu, nv, nz = u / radii[2], v / radii[1], dz / radii[0]
    theta = np.arctan2(nv, nu)
    wobble = (
        1.0 + bumps[0] * np.sin(2 * theta + bumps[1]) + bumps[2] * np.cos(3 * theta) + bumps[3] * nz
    )
    mask = (nu * nu + nv * nv + nz * nz) <= wobble * wobble
    return box, mask if cut is None else mask & cut(nz, nv, nu)


def _tube(grid: _Grid, points: np.ndarray, radius: float) -> tuple[tuple[slice, ...], np.ndarray]:
    """Mask of voxels within ``radius`` mm of a polyline through ``points`` ((n, 3) z, y, x mm)."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    box, g = grid.window((lo + hi) / 2, float(np.max(hi - lo)) / 2 + radius + 1.0)
    best = np.full(np.broadcast_shapes(g.z.shape, g.y.shape, g.x.shape), np.inf, dtype=np.float32)
    for a, b in zip(points[:-1], points[1:]):
        ab = b - a
        t = ((g.z - a[0]) * ab[0] + (g.y - a[1]) * ab[1] + (g.x - a[2]) * ab[2]) / float(ab @ ab)
        t = np.clip(t, 0.0, 1.0)
        d2 = (
            (g.z - a[0] - t * ab[0]) ** 2
            + (g.y - a[1] - t * ab[1]) ** 2
            + (g.x - a[2] - t * ab[2]) ** 2
        )
        np.minimum(best, d2, out=best)
    return box, best <= radius * radius


class _Painter:
    """Paints HU values and labels; a label is only written where no earlier organ claimed the voxel."""

    def __init__(self, shape: Sequence[int]) -> None:
        self.hu = np.full(shape, HU["air"], dtype=np.float32)
        self.labels = np.zeros(shape, dtype=np.uint8)
        self.inside = np.zeros(shape, dtype=bool)  # the abdominal cavity: organs stay inside it

    def paint(self, box, mask: np.ndarray, hu: float, label: int = 0, confine: bool = True) -> None:
        mask = np.broadcast_to(mask, self.hu[box].shape)
        if confine:
            mask = mask & self.inside[box]
        if label:
            mask = mask & (self.labels[box] == 0)
            self.labels[box][mask] = label
        self.hu[box][mask] = hu


def _torso(p: _Painter, grid: _Grid, rng: np.random.Generator, center, radii) -> None:
    """Skin, subcutaneous fat, muscle wall and the abdominal cavity (elliptic cylinders)."""
    fat = rng.uniform(6.0, 18.0)
    layers = [(0.0, "skin"), (2.0, "fat"), (2.0 + fat, "muscle")]
    full = (slice(None),) * 3
    for inset, tissue in layers:
        p.paint(full, _ellipse(grid, center, radii, inset), HU[tissue], confine=False)
    cavity = _ellipse(grid, center, radii, 10.0 + fat)
    p.inside[...] = np.broadcast_to(cavity, p.inside.shape)
    p.paint(full, cavity, HU["cavity"], confine=False)


def _ellipse(grid: _Grid, center, radii, inset: float) -> np.ndarray:
    """Axial elliptic cross-section shrunk by ``inset`` mm, slowly varying along z."""
    scale = 1.0 + 0.04 * np.sin(grid.z / 90.0)
    ry, rx = (radii[0] - inset) * scale, (radii[1] - inset) * scale
    return ((grid.y - center[0]) / ry) ** 2 + ((grid.x - center[1]) / rx) ** 2 <= 1.0


def _spine(p: _Painter, grid: _Grid, rng: np.random.Generator, cy: float, cx: float) -> None:
    """Vertebral bodies (cortical shell, cancellous core) with discs, arch and canal, along z."""
    radius = rng.uniform(15.0, 19.0)
    body = ((grid.y - cy) ** 2 + (grid.x - cx) ** 2) <= radius**2
    core = ((grid.y - cy) ** 2 + (grid.x - cx) ** 2) <= (radius - 2.5) ** 2
    canal_y = cy + radius + 9.0
    arch_d2 = (grid.y - canal_y) ** 2 + (grid.x - cx) ** 2
    arch = (arch_d2 <= 15.0**2) & ~(arch_d2 <= 8.0**2)
    canal = arch_d2 <= 8.0**2
    period, phase = rng.uniform(28.0, 34.0), rng.uniform(0.0, 30.0)
    disc = np.mod(grid.z + phase, period) < 6.0
    full = (slice(None),) * 3
    p.paint(full, body & ~disc, HU["cortical_bone"], LABELS["spine"], confine=False)
    p.hu[np.broadcast_to(core & ~disc, p.hu.shape) & (p.labels == LABELS["spine"])] = HU[
        "cancellous_bone"
    ]
    p.paint(full, arch & ~disc, HU["cortical_bone"], LABELS["spine"], confine=False)
    p.paint(full, body & disc, HU["disc"], confine=False)
    p.paint(full, canal, HU["canal"], confine=False)
    for side in (-1.0, 1.0):  # paraspinal muscles
        muscle = ((grid.y - canal_y) / 22.0) ** 2 + ((grid.x - cx - side * 38.0) / 20.0) ** 2 <= 1.0
        p.paint(full, muscle & (p.labels == 0), HU["muscle"], confine=False)


def _bumps(rng: np.random.Generator, amplitude: float = 0.08) -> np.ndarray:
    return np.array(
        [
            rng.uniform(0, amplitude),
            rng.uniform(0, 2 * np.pi),
            rng.uniform(0, amplitude),
            rng.uniform(-amplitude, amplitude),
        ]
    )


def _jitter(rng: np.random.Generator, center, mm: float = 6.0) -> np.ndarray:
    return np.asarray(center, dtype=float) + rng.uniform(-mm, mm, size=3)


def _scaled(rng: np.random.Generator, radii, spread: float = 0.12) -> np.ndarray:
    return np.asarray(radii, dtype=float) * rng.uniform(1 - spread, 1 + spread, size=3)


def _organs(p: _Painter, grid: _Grid, rng: np.random.Generator, origin, size: float) -> None:
    """Paint the labelled organs at plausible positions relative to the torso centre ``origin``."""

    def place(offset):  # (z, y, x) mm offset relative to the torso, scaled with the body size
        return _jitter(rng, np.asarray(origin) + np.asarray(offset) * size)

    for sign, name in ((-1.0, "kidney_right"), (1.0, "kidney_left")):
        drop = -15.0 if sign < 0 else 0.0  # the right kidney sits lower (under the liver)
        box, mask = _ellipsoid(
            grid,
            place((15.0 + drop, 30.0, sign * 58.0)),
            _scaled(rng, (55.0, 30.0, 28.0)) * size,
            sign * rng.uniform(0.2, 0.5),
            _bumps(rng),
        )
        p.paint(box, mask, HU["kidney"], LABELS[name])
    liver_c = place((75.0, -5.0, -48.0))
    liver_r = _scaled(rng, (65.0, 75.0, 85.0)) * size

    def wedge(nz, nv, nu):  # the left lobe is thin: its lower part is cut away
        return nz > -0.7 + 0.8 * nu

    box, mask = _ellipsoid(grid, liver_c, liver_r, rng.uniform(-0.15, 0.15), _bumps(rng), wedge)
    p.paint(box, mask, HU["liver"], LABELS["liver"])
    box, mask = _ellipsoid(
        grid,
        place((70.0, 30.0, 66.0)),
        _scaled(rng, (55.0, 48.0, 24.0)) * size,
        rng.uniform(-0.6, -0.3),
        _bumps(rng),
    )
    p.paint(box, mask, HU["spleen"], LABELS["spleen"])
    curve = np.array(
        [place((38.0, -8.0, -18.0)), place((42.0, -2.0, 18.0)), place((52.0, 16.0, 55.0))]
    )
    t = np.linspace(0.0, 1.0, 9)[:, None]
    path = (1 - t) ** 2 * curve[0] + 2 * t * (1 - t) * curve[1] + t**2 * curve[2]
    box, mask = _tube(grid, path, rng.uniform(13.0, 16.0) * size)
    p.paint(box, mask, HU["pancreas"], LABELS["pancreas"])
    box, mask = _ellipsoid(
        grid,
        place((-105.0, -28.0, 0.0)),
        _scaled(rng, (30.0, 30.0, 38.0), 0.2) * size,
        rng.uniform(-0.2, 0.2),
        _bumps(rng),
    )
    p.paint(box, mask, HU["bladder"], LABELS["urinary_bladder"])


def _vessels_and_gas(
    p: _Painter, grid: _Grid, rng: np.random.Generator, origin, size: float
) -> None:
    """Unlabelled distractors: aorta, inferior vena cava and bowel gas pockets."""
    for offset_x, radius, hu in ((12.0, 11.0, HU["aorta"]), (-22.0, 10.0, HU["ivc"])):
        y, x = origin[1] + 10.0 * size, origin[2] + offset_x * size
        vessel = ((grid.y - y) ** 2 + (grid.x - x) ** 2 <= radius**2) & (grid.z > origin[0] - 70.0)
        p.paint((slice(None),) * 3, vessel & (p.labels == 0), hu)
    for _ in range(int(rng.integers(6, 12))):
        center = np.asarray(origin) + rng.uniform([-90.0, -60.0, -70.0], [60.0, -20.0, 70.0]) * size
        box, mask = _ellipsoid(grid, center, rng.uniform(5.0, 12.0, size=3), 0.0, np.zeros(4))
        p.paint(box, mask & (p.labels[box] == 0), HU["gas"])


def make_phantom(
    shape: Sequence[int] = (96, 128, 128),
    spacing: Sequence[float] = (3.0, 2.0, 2.0),
    seed: int = 0,
    noise_hu: float = 12.0,
) -> tuple[sitk.Image, sitk.Image]:
    """Make a synthetic abdominal CT and its label map (not for accuracy claims: see the module doc).

    ``shape`` is (Z, Y, X) voxels and ``spacing`` (z, y, x) mm. The torso fills about 90 % of the
    field of view in x whatever the shape, organs are sized accordingly; every seed gives another
    body size, fat thickness, organ pose/shape and noise. Returns ``(ct, labels)``: int16 HU and
    uint8 labels on the same grid (identity direction, volume centred at the world origin).
    """
    shape, spacing = tuple(int(n) for n in shape), tuple(float(s) for s in spacing)
    if len(shape) != 3 or min(shape) < 8 or len(spacing) != 3 or min(spacing) <= 0:
        raise SegDeepError(
            f"phantom: need a 3D shape >= 8 voxels and positive spacing, got {shape}, {spacing}"
        )
    rng = np.random.default_rng(seed)
    grid = _Grid.make(shape, spacing)
    painter = _Painter(shape)
    half_x = (shape[2] - 1) * spacing[2] / 2.0
    size = 0.9 * half_x / 128.0 * rng.uniform(0.92, 1.05)  # organ scale relative to a 256 mm torso
    center = (rng.uniform(-8.0, 8.0), rng.uniform(-6.0, 6.0))
    radii = (0.72 * 128.0 * size * rng.uniform(0.9, 1.05), 128.0 * size)
    _torso(painter, grid, rng, center, radii)
    origin = (rng.uniform(-10.0, 10.0) * size, center[0], center[1])
    _spine(painter, grid, rng, center[0] + radii[0] - 60.0 * size, center[1])
    _organs(painter, grid, rng, origin, size)
    _vessels_and_gas(painter, grid, rng, origin, size)
    return _to_images(painter, spacing, noise_hu, rng)


def _to_images(
    p: _Painter, spacing, noise_hu: float, rng: np.random.Generator
) -> tuple[sitk.Image, sitk.Image]:
    hu = sitk.GetImageFromArray(p.hu)
    hu.SetSpacing(spacing[::-1])
    hu = sitk.SmoothingRecursiveGaussian(hu, 0.8)  # partial-volume blur (mm)
    values = sitk.GetArrayFromImage(hu) + rng.normal(0.0, noise_hu, size=p.hu.shape).astype(
        np.float32
    )
    ct = sitk.GetImageFromArray(np.clip(np.rint(values), -1024, 3071).astype(np.int16))
    labels = sitk.GetImageFromArray(p.labels)
    origin = tuple(-(n - 1) * s / 2.0 for n, s in zip(p.hu.shape[::-1], spacing[::-1]))
    for image in (ct, labels):
        image.SetSpacing(spacing[::-1])
        image.SetOrigin(origin)
    return ct, labels
