"""Dataset fingerprint (spacings, sizes, foreground intensities) and a proposed training plan.

The plan follows nnU-Net's rules of thumb: target spacing = median spacing (the out-of-plane axis
takes the 10th percentile when the data is anisotropic, ratio > 3); patch size = the median
resampled shape, shrunk along its largest physical axis until a batch of 2 fits the memory budget;
then the batch grows while it fits (at most 16). The memory model is a rough, documented heuristic:
``ACTIVATION_BYTES_PER_VOXEL`` bytes of stored activations per input voxel (a width-32 3D U-Net in
float32); the config can override every proposed value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from SegDeepLib.data.datasets import Dataset, read_case_image, read_case_label

ACTIVATION_BYTES_PER_VOXEL = 1200
DIVISOR = 16  # patch sizes divisible by 2**4 (four poolings)
ANISOTROPY = 3.0


def case_fingerprint(dataset: Dataset, case_index: int, max_voxels: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Spacing/shape in canonical (Z, Y, X) order and sampled foreground intensities of one case."""
    from SegDeepLib.io import to_canonical

    case = dataset.cases[case_index]
    image = read_case_image(case)[0]
    array, layout = to_canonical(image)
    label = read_case_label(dataset, case, image) if case.label else None
    values = np.empty(0)
    if label is not None:
        labels, _ = to_canonical(label, dtype=None)
        values = array[labels > 0]
        if values.size > max_voxels:
            values = np.random.default_rng(seed + case_index).choice(values, max_voxels, replace=False)
    return {"id": case.id, "spacing_zyx": [float(s) for s in layout.spacing_zyx],
            "shape_zyx": [int(s) for s in array.shape], "foreground": values.astype(np.float64)}


def compute_fingerprint(dataset: Dataset, max_voxels_per_case: int = 10000) -> dict[str, Any]:
    """Per-case spacings/shapes and pooled foreground intensity statistics (JSON-able)."""
    cases = [case_fingerprint(dataset, i, max_voxels_per_case) for i in range(len(dataset.cases))]
    pooled = np.concatenate([c.pop("foreground") for c in cases])
    stats = {}
    if pooled.size:
        lo, hi = np.percentile(pooled, [0.5, 99.5])
        stats = {"mean": float(pooled.mean()), "std": float(pooled.std()), "median": float(np.median(pooled)),
                 "percentile_00_5": float(lo), "percentile_99_5": float(hi),
                 "min": float(pooled.min()), "max": float(pooled.max())}
    return {"num_cases": len(cases), "channels": dataset.channels, "cases": cases, "foreground_intensity": stats}


def target_spacing(spacings: np.ndarray) -> list[float]:
    """Median spacing; the coarsest axis takes the 10th percentile when anisotropic."""
    spacing = np.median(spacings, axis=0)
    worst = int(np.argmax(spacing))
    others = np.delete(spacing, worst)
    if spacing[worst] > ANISOTROPY * others.max():
        spacing[worst] = max(np.percentile(spacings[:, worst], 10), others.max())
    return [float(s) for s in spacing]


def _round_down(size: float) -> int:
    return max(DIVISOR, int(size // DIVISOR) * DIVISOR)


def propose_plan(fingerprint: dict[str, Any], memory_gb: float | None = None,
                 max_batch: int = 16) -> dict[str, Any]:
    """Target spacing, patch size and batch size for a memory budget (default: 8 GB)."""
    budget = (memory_gb or 8.0) * 1024**3
    spacings = np.array([c["spacing_zyx"] for c in fingerprint["cases"]])
    shapes = np.array([c["shape_zyx"] for c in fingerprint["cases"]], dtype=float)
    spacing = target_spacing(spacings)
    resampled = np.median(shapes * spacings / np.array(spacing), axis=0)
    patch = [min(_round_down(s) if s >= DIVISOR else DIVISOR, 256) for s in resampled]
    per_voxel = ACTIVATION_BYTES_PER_VOXEL
    while 2 * int(np.prod(patch)) * per_voxel > budget and max(patch) > DIVISOR:
        physical = [p * s for p, s in zip(patch, spacing)]
        axis = int(np.argmax([ph if p > DIVISOR else -1 for ph, p in zip(physical, patch)]))
        patch[axis] = _round_down(patch[axis] - DIVISOR)
    batch = 2
    while batch < max_batch and (batch + 1) * int(np.prod(patch)) * per_voxel <= budget:
        batch += 1
    intensity = fingerprint.get("foreground_intensity") or {}
    plan: dict[str, Any] = {"spacing": spacing, "patch_size": patch, "batch_size": batch,
                            "median_resampled_shape": [float(s) for s in resampled], "memory_gb": budget / 1024**3}
    if intensity:
        plan["intensity"] = {"kind": "ct_nnunet", "clip": [intensity["percentile_00_5"], intensity["percentile_99_5"]],
                             "mean": intensity["mean"], "std": intensity["std"]}
    return plan
