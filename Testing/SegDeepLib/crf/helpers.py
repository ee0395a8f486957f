"""Shared test helpers for the CRF tests: a real crop across the bladder wall and references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from Testing.conftest import shared_file

CT = "totalsegmentator-testfiles/ct_abdomen_pelvis_3mm/example_ct.nii.gz"
SEG = "totalsegmentator-testfiles/ct_abdomen_pelvis_3mm/example_seg_fast_force_split.nii.gz"
BLADDER = 21
# Crop (z, y, x) straddling the posterior bladder wall of the 3 mm TotalSegmentator CT.
CROP = (slice(12, 24), slice(58, 82), slice(48, 72))
SPACING = (3.0, 3.0, 3.0)
# Setting A of shared/docs/crf.md (theta in voxels there; 3 mm voxels here).
SETTING_A = {"theta_alpha": 12.0, "theta_beta": 15.0, "theta_gamma": 6.0, "w1": 5.0, "w2": 3.0}


def real_crop(crop=CROP) -> tuple[np.ndarray, np.ndarray]:
    """(hu float32, bladder mask uint8) of a crop of the real CT (skips if data or SimpleITK is
    absent, as on the GPU check's image)."""
    sitk = pytest.importorskip("SimpleITK")
    if getattr(sitk, "STUB", False):  # benchmarks/gpu/stubs stands in for a missing SimpleITK
        pytest.skip("SimpleITK not installed")

    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_file(CT)))).astype(np.float32)
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_file(SEG))))
    return hu[crop].copy(), (seg[crop] == BLADDER).astype(np.uint8)


def noisy_probabilities(mask: np.ndarray, seed: int = 1) -> np.ndarray:
    """CNN-like foreground probability from a mask: blurred signed distance plus smooth noise."""
    from scipy.ndimage import distance_transform_edt, gaussian_filter

    rng = np.random.default_rng(seed)
    sd = distance_transform_edt(mask) - distance_transform_edt(1 - mask)
    noise = gaussian_filter(rng.standard_normal(mask.shape), 1.5)
    noise /= noise.std() + 1e-8
    logit = sd / 1.5 + 1.2 * noise
    return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)


def exact_mean_field(logp, feats_b, feats_s, w1, w2, iters):
    """Brute-force mean field (float64 reference written independently of SegDeepLib.crf).

    logp (L, N); feats (N, d) already divided by the bandwidths. Potts in the equivalent
    attractive form: Q <- softmax(logp + w1 Mb + w2 Ms).
    """

    def filt(f, q):
        out = torch.empty_like(q)
        for s in range(0, f.shape[0], 1024):
            k = torch.exp(-0.5 * torch.cdist(f[s : s + 1024], f) ** 2)
            out[:, s : s + 1024] = (q @ k.t()) / k.sum(1)[None]
        return out

    q = torch.softmax(logp, 0)
    for _ in range(iters):
        q = torch.softmax(logp + w1 * filt(feats_b, q) + w2 * filt(feats_s, q), 0)
    return q


def positions(shape, spacing) -> torch.Tensor:
    """(N, S) positions in mm, float64."""
    axes = [torch.arange(n, dtype=torch.float64) * s for n, s in zip(shape, spacing)]
    return torch.stack([g.reshape(-1) for g in torch.meshgrid(*axes, indexing="ij")], 1)
