"""Size guard: estimate the memory a volume will need *before* anything is resampled or allocated.

A header with a wrong spacing (100 mm instead of 1 mm) makes the network grid a million times too
large; resampling it would eat all the RAM before failing. :func:`check_memory` estimates, from the
header alone (size, spacing, direction), every grid the pipeline allocates — the canonical copy,
the resampled network grid per preprocessing spec, its tiles, the probability buffers and the way
back onto the input grid — and refuses with the numbers when the total exceeds the budget.

The budget: ``memory_limit_gb`` (``segdeep segment --memory-limit GB``), else the environment
variable ``SEGDEEP_MEMORY_LIMIT_GB``, else 80 % of the memory available when the command starts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import SimpleITK as sitk

from SegDeepLib.core.preprocessing_spec import num_channels, validate_spec
from SegDeepLib.errors import SegDeepError
from SegDeepLib.preprocessing.resample import resampled_size

ENV_LIMIT = "SEGDEEP_MEMORY_LIMIT_GB"
GB = 1024**3


def physical_memory() -> int:
    """Bytes of memory available now (``MemAvailable``), else physical memory, else 16 GB."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 16 * GB


def memory_budget(limit_gb: float | None = None) -> int:
    """The budget in bytes: the argument, ``$SEGDEEP_MEMORY_LIMIT_GB``, or 80 % of the free RAM."""
    if limit_gb is None and os.environ.get(ENV_LIMIT):
        try:
            limit_gb = float(os.environ[ENV_LIMIT])
        except ValueError:
            raise SegDeepError(f"{ENV_LIMIT}={os.environ[ENV_LIMIT]!r}: not a number of GB") from None
    if limit_gb is None:
        return int(0.8 * physical_memory())
    if not (math.isfinite(limit_gb) and limit_gb > 0):
        raise SegDeepError(f"memory limit {limit_gb!r} GB: must be a positive number")
    return int(limit_gb * GB)


@dataclass(frozen=True)
class Estimate:
    """Bytes needed and the largest grid (for the message)."""

    bytes: int
    grid_zyx: tuple[int, ...]
    spacing_zyx: tuple[float, ...]
    tiles: int


def canonical_size_spacing(
    size: Sequence[int], spacing: Sequence[float], direction: Sequence[float]
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Voxel counts and spacing along canonical (Z, Y, X), from header values only."""
    from SegDeepLib.io.layout import _layout

    holder = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    holder.SetSpacing(tuple(float(s) for s in spacing))
    holder.SetDirection(tuple(float(d) for d in direction))
    layout = _layout(holder)
    kji = tuple(reversed([int(s) for s in size]))
    return tuple(kji[p] for p in layout.permutation), layout.spacing_zyx


def _tiles(grid: Sequence[int], tile: Sequence[int] | None, overlap: float) -> int:
    if not tile:
        return 1
    count = 1
    for n, t in zip(grid, tile):
        step = max(1, int(t * (1.0 - overlap)))
        count *= 1 + max(0, math.ceil((n - t) / step))
    return count


def estimate_memory(
    size: Sequence[int],
    spacing: Sequence[float],
    direction: Sequence[float],
    specs: Sequence[Mapping[str, Any] | None],
    classes: int,
    tile_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    probabilities: bool = False,
    bytes_per_voxel: int = 4,
) -> Estimate:
    """Peak bytes of one prediction (upper bound: no crop assumed), worst preprocessing spec."""
    size_zyx, spacing_zyx = canonical_size_spacing(size, spacing, direction)
    n_input = math.prod(size_zyx)
    # the image itself, its float32 canonical copy and crop, the label map back on the input grid
    input_bytes = n_input * (bytes_per_voxel + 4 + 4 + 1)
    if probabilities:
        input_bytes += n_input * classes * 4 * 2
    worst = Estimate(input_bytes, size_zyx, spacing_zyx, 1)
    for spec in specs:
        spec = validate_spec(spec)
        target = spec["spacing"] or spacing_zyx
        grid = resampled_size(size_zyx, spacing_zyx, target)
        n_net = math.prod(grid)
        channels = num_channels(spec)
        # resampled image + network input channels + (accumulated probabilities, weights,
        # flipped copy, CRF/softmax copy) per class + labels
        net_bytes = n_net * (4 + 4 * channels + 4 * classes * 3 + 4 + 4)
        total = input_bytes + net_bytes
        if total > worst.bytes:
            worst = Estimate(total, tuple(grid), tuple(target), _tiles(grid, tile_size, overlap))
    return worst


def _gb(n: int) -> str:
    return f"{n / GB:.3g} GB"


def check_memory(
    image: sitk.Image,
    specs: Sequence[Mapping[str, Any] | None],
    classes: int,
    name: str,
    limit_gb: float | None = None,
    tile_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    probabilities: bool = False,
) -> Estimate:
    """Raise :class:`SegDeepError` (with the numbers) when ``image`` would need more than the budget."""
    budget = memory_budget(limit_gb)
    estimate = estimate_memory(
        image.GetSize(),
        image.GetSpacing(),
        image.GetDirection(),
        specs,
        classes,
        tile_size,
        overlap,
        probabilities,
        image.GetSizeOfPixelComponent() * image.GetNumberOfComponentsPerPixel(),
    )
    if estimate.bytes > budget:
        size_zyx, spacing_zyx = canonical_size_spacing(
            image.GetSize(), image.GetSpacing(), image.GetDirection()
        )
        grid = "x".join(str(n) for n in estimate.grid_zyx)
        raise SegDeepError(
            f"{name}: needs about {_gb(estimate.bytes)} of memory, over the budget of {_gb(budget)}: "
            f"{'x'.join(map(str, size_zyx))} voxels at {', '.join(f'{s:g}' for s in spacing_zyx)} mm "
            f"become a {grid} grid at {', '.join(f'{s:g}' for s in estimate.spacing_zyx)} mm "
            f"({estimate.tiles} tiles); check the spacing in the header, or raise the budget with "
            f"--memory-limit GB / {ENV_LIMIT}"
        )
    return estimate
