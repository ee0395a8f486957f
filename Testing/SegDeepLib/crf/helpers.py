"""Shared test helpers for the CRF tests: a crop across the bladder wall and references.

The crop comes from the real CT in ../shared/data when it is there, else from a synthetic pelvic
volume built here (so every CRF accuracy test always runs). The references (features, dense
Gaussian messages, mean field) are written here independently of :mod:`SegDeepLib.crf`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from Testing.conftest import SHARED_DATA

CT = "totalsegmentator-testfiles/ct_abdomen_pelvis_3mm/example_ct.nii.gz"
SEG = "totalsegmentator-testfiles/ct_abdomen_pelvis_3mm/example_seg_fast_force_split.nii.gz"
BLADDER = 21
# Crop (z, y, x) straddling the posterior bladder wall of the 3 mm TotalSegmentator CT.
CROP = (slice(12, 24), slice(58, 82), slice(48, 72))
# The 16x32x32 crop ("S") of shared/docs/crf.md, about the same centre.
LARGE_CROP = (slice(10, 26), slice(54, 86), slice(44, 76))
SPACING = (3.0, 3.0, 3.0)
# Setting A of shared/docs/crf.md (theta in voxels there; 3 mm voxels here).
SETTING_A = {"theta_alpha": 12.0, "theta_beta": 15.0, "theta_gamma": 6.0, "w1": 5.0, "w2": 3.0}
# Setting P: the bladder paper's thetas and weights (1 voxel, ~20 HU, 1 voxel; w1 15, w2 1).
SETTING_P = {"theta_alpha": 3.0, "theta_beta": 20.0, "theta_gamma": 3.0, "w1": 15.0, "w2": 1.0}


def have_real_crop() -> bool:
    return (SHARED_DATA / CT).exists() and (SHARED_DATA / SEG).exists()


def real_crop(crop=CROP) -> tuple[np.ndarray, np.ndarray]:
    """(hu float32, bladder mask uint8) of a crop of the real CT; the synthetic crop of the same
    shape when ../shared/data is absent (skips if SimpleITK is absent, as on the GPU check's image)."""
    if not have_real_crop():
        return synthetic_crop(tuple(s.stop - s.start for s in crop))
    sitk = pytest.importorskip("SimpleITK")
    if getattr(sitk, "STUB", False):  # benchmarks/gpu/stubs stands in for a missing SimpleITK
        pytest.skip("SimpleITK not installed")
    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(SHARED_DATA / CT))).astype(np.float32)
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(SHARED_DATA / SEG)))
    return hu[crop].copy(), (seg[crop] == BLADDER).astype(np.uint8)


def synthetic_crop(shape, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A pelvic crop like the real one: urine (8 HU) in a 45 HU muscle wall, fat (-100 HU) on
    one side only (the other wall is weak), partial-volume blur, correlated noise (sigma 15 HU).
    Returns (hu float32, bladder mask uint8)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")
    radii = [0.45 * n for n in shape]
    r = np.sqrt(sum((c / a) ** 2 for c, a in zip((z, y, x + 0.3 * shape[2]), radii)))
    mask = r < 1.0
    hu = np.full(shape, 45.0)
    hu[mask] = 8.0
    hu[(r > 1.25) & (x > 0)] = -100.0
    hu = gaussian_filter(hu, 0.7)
    noise = gaussian_filter(rng.standard_normal(shape), 1.0)
    hu += 15.0 * noise / noise.std()
    return hu.astype(np.float32), mask.astype(np.uint8)


def appearance_features(hu: np.ndarray, theta_alpha: float, theta_beta: float) -> torch.Tensor:
    """(N, 4) float64: positions in mm / theta_alpha, then HU / theta_beta (C order)."""
    inten = torch.from_numpy(np.asarray(hu)).double().reshape(-1, 1)
    return torch.cat([positions(hu.shape, SPACING) / theta_alpha, inten / theta_beta], 1)


def dense_message(features: torch.Tensor, q: torch.Tensor, block: int = 2048) -> torch.Tensor:
    """Row-normalised sum_j exp(-|f_i - f_j|^2 / 2) q_j / sum_j exp(...) of q (C, N), float64,
    the voxel itself included: brute force, blocks of rows."""
    sq = (features * features).sum(1)
    values = torch.cat([q.double(), torch.ones_like(q[:1]).double()])
    out = torch.empty(q.shape, dtype=torch.float64)
    for a in range(0, features.shape[0], block):
        d2 = torch.addmm(sq[a : a + block, None] + sq[None, :], features[a : a + block],
                         features.t(), alpha=-2.0)
        k = d2.clamp_min_(0).mul_(-0.5).exp_()
        r = values @ k.t()
        out[:, a : a + block] = r[:-1] / r[-1:]
    return out


def separable_message(shape, theta_gamma: float, q: torch.Tensor) -> torch.Tensor:
    """The row-normalised position-only Gaussian message of q (C, N) on the crop's grid, exactly,
    as a product of dense 1D Gaussians (the normaliser of a product kernel is the product)."""
    vals = q.double().reshape(q.shape[0], *shape)
    ones = torch.ones(1, *shape, dtype=torch.float64)
    for axis, (n, s) in enumerate(zip(shape, SPACING)):
        x = torch.arange(n, dtype=torch.float64) * s / theta_gamma
        g = torch.exp(-0.5 * (x[:, None] - x[None, :]) ** 2)
        vals = torch.movedim(torch.tensordot(vals, g, dims=([axis + 1], [1])), -1, axis + 1)
        ones = torch.movedim(torch.tensordot(ones, g, dims=([axis + 1], [1])), -1, axis + 1)
    return (vals / ones).reshape(q.shape[0], -1)


def dense_mean_field(probs: np.ndarray, hu: np.ndarray, setting: dict, iters: int = 5):
    """Exact mean field (float64) of probabilities (2, *crop) on the crop with ``setting``:
    Potts in the attractive form Q <- softmax(log P + w1 Mb + w2 Ms)."""
    logp = torch.log(torch.from_numpy(probs).double().reshape(probs.shape[0], -1))
    feats = appearance_features(hu, setting["theta_alpha"], setting["theta_beta"])
    q = torch.softmax(logp, 0)
    for _ in range(iters):
        mb = dense_message(feats, q)
        ms = separable_message(hu.shape, setting["theta_gamma"], q)
        q = torch.softmax(logp + setting["w1"] * mb + setting["w2"] * ms, 0)
    return q


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
