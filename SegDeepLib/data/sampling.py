"""Training samples from cached cases: 3D patches, 2D slice stacks and 2D slice sequences.

Every sample is a pure function of ``(seed, epoch, index)`` (see :class:`PatchDataset`), so results do
not depend on the number of workers or processes, and a resumed run draws exactly the same samples.

Centres: with probability ``foreground_fraction`` a random voxel of a class chosen uniformly among
the classes the case contains (class-balanced oversampling); otherwise a random voxel of the
candidate region (C1 / C2) when ``in_region`` and the case has one, else anywhere in the volume.
A sample is ``{"image": (C, *patch) float32, "label": (*patch) int64, "mask": (*patch) bool,
"class_present": (K,) bool}``; 2D stacks put the adjacent slices in the channels
(``C * context_slices``) and label the middle slice; sequences are ``(T, C*ctx, H, W)`` / ``(T, H, W)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import numpy as np

from SegDeepLib.data.augment import (
    AugmentSettings,
    apply_class_shift,
    apply_intensity,
    apply_spatial,
    sample_class_shift,
    sample_intensity,
    sample_spatial,
)
from SegDeepLib.data.cache import CachedCase


@dataclass
class SamplingSettings:
    mode: str = "patch3d"
    patch_size: Sequence[int] = (64, 64, 64)
    foreground_fraction: float = 0.33
    in_region: bool = True
    context_slices: int = 3
    sequence_length: int = 8


def window_shape(s: SamplingSettings) -> tuple[int, int, int]:
    """The 3D window (Z, Y, X) read from the volume for one sample."""
    if s.mode == "patch3d":
        return tuple(int(p) for p in s.patch_size)
    depth = s.context_slices if s.mode == "slices2d" else s.sequence_length + s.context_slices - 1
    return (int(depth), int(s.patch_size[0]), int(s.patch_size[1]))


def choose_centre(case: CachedCase, rng: np.random.Generator, s: SamplingSettings) -> np.ndarray:
    """A voxel to centre the sample on (class-balanced foreground or region/background)."""
    if rng.random() < s.foreground_fraction:
        present = [k for k, c in sorted(case.class_coords.items()) if len(c)]
        if present:
            coords = case.class_coords[present[rng.integers(len(present))]]
            return coords[rng.integers(len(coords))].astype(np.float64)
    if s.in_region and case.region is not None and case.region.any():
        return _random_true_voxel(case.region, rng)
    return np.array([rng.integers(n) for n in case.shape], dtype=np.float64)


def clamp_centre(centre: np.ndarray, shape: Sequence[int], window: Sequence[int]) -> np.ndarray:
    """Move the centre so the window lies inside the volume along every axis where it fits
    (padding only where the volume is smaller than the window, as nnU-Net does)."""
    out = np.array(centre, dtype=np.float64)
    for axis, (n, w) in enumerate(zip(shape, window)):
        lo, hi = (w - 1) / 2, n - 1 - (w - 1) / 2
        out[axis] = np.clip(out[axis], lo, hi) if n >= w else (n - 1) / 2
    return out


def _random_true_voxel(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flat = np.flatnonzero(mask)
    return np.array(np.unravel_index(flat[rng.integers(len(flat))], mask.shape), dtype=np.float64)


def draw_sample(case: CachedCase, rng: np.random.Generator, s: SamplingSettings,
                aug: AugmentSettings | None) -> dict[str, np.ndarray]:
    """One augmented sample from ``case`` (layout depends on ``s.mode``)."""
    window = window_shape(s)
    centre = clamp_centre(choose_centre(case, rng, s), case.shape, window)
    if s.mode != "patch3d":
        aug = _in_plane(aug)
    spatial = sample_spatial(rng, aug or AugmentSettings(), window)
    intensity = sample_intensity(rng, aug) if aug else None
    shifts = sample_class_shift(rng, aug) if aug else {}
    valid = np.ones(case.shape, np.uint8) if case.region is None else case.region.astype(np.uint8)
    image, (label, mask) = apply_spatial(spatial, centre, window, case.image, [case.label, valid], [0, 0])
    image = apply_class_shift(shifts, image, label, aug.class_shift_cap if aug else None)
    if intensity is not None:
        image = apply_intensity(intensity, image)
    sample = {"image": image, "label": label.astype(np.int64), "mask": mask.astype(bool),
              "class_present": np.asarray(case.class_present, bool)}
    return _to_layout(sample, s)


def _in_plane(aug: AugmentSettings | None) -> AugmentSettings | None:
    if aug is None:
        return None
    from dataclasses import replace

    return replace(aug, in_plane_only=True, flip_axes=[a for a in aug.flip_axes if a != 0])


def _to_layout(sample: dict[str, np.ndarray], s: SamplingSettings) -> dict[str, np.ndarray]:
    if s.mode == "patch3d":
        return sample
    ctx, half = s.context_slices, s.context_slices // 2
    image, label, mask = sample["image"], sample["label"], sample["mask"]
    depth = image.shape[1] - ctx + 1
    # channels ordered slice-major (slice 0: all channels, slice 1: ...), as inference stacks them
    stacks = np.stack([image[:, t:t + ctx].swapaxes(0, 1).reshape(-1, *image.shape[2:]) for t in range(depth)])
    labels, masks = label[half:half + depth], mask[half:half + depth]
    if s.mode == "slices2d":
        stacks, labels, masks = stacks[0], labels[0], masks[0]
    return {"image": np.ascontiguousarray(stacks), "label": np.ascontiguousarray(labels),
            "mask": np.ascontiguousarray(masks), "class_present": sample["class_present"]}


class PatchDataset:
    """Map-style dataset for ``torch.utils.data.DataLoader``: index -> sample, seeded by (seed, epoch, index).

    ``load_case(case_id) -> CachedCase`` is called lazily inside each worker (memory-mapped arrays).
    """

    def __init__(self, case_ids: Sequence[str], load_case: Callable[[str], CachedCase], sampling: SamplingSettings,
                 augment: AugmentSettings | None, seed: int, epoch: int = 0, length: int = 1) -> None:
        self.case_ids, self.load_case = list(case_ids), load_case
        self.sampling, self.augment = sampling, augment
        self.seed, self.epoch, self.length = int(seed), int(epoch), int(length)
        self._cases: dict[str, CachedCase] = {}

    def __len__(self) -> int:
        return self.length

    def _case(self, case_id: str) -> CachedCase:
        if case_id not in self._cases:
            self._cases[case_id] = self.load_case(case_id)
        return self._cases[case_id]

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        case_id = self.case_ids[rng.integers(len(self.case_ids))]
        return draw_sample(self._case(case_id), rng, self.sampling, self.augment)
