"""Overfitting one real example: a crop of the TotalSegmentator abdominal CT (3 mm).

Classes: 0 background, 1 urinary bladder (label 21), 2 hip bones (labels 77 + 78). The default
crop (32 x 48 x 48 voxels, canonical z, y, x) holds the whole bladder and parts of both hips.
"""

from __future__ import annotations

import time

import numpy as np
import SimpleITK as sitk
import torch

from SegDeepLib.io.layout import to_canonical
from SegDeepLib.losses import build_loss
from Testing.conftest import shared_file

FOLDER = "totalsegmentator-testfiles/ct_abdomen_pelvis_3mm/"
CROP_ORIGIN = (0, 24, 37)
CROP_SIZE = (32, 48, 48)
WINDOW = (-200.0, 300.0)


def abdomen_crop(margin=(0, 0, 0)) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x (1, 1, *in), target (1, *CROP_SIZE))``; the input extends ``margin`` voxels beyond
    the labelled crop on each side (air outside the scan), for valid-convolution networks."""
    ct, _ = to_canonical(sitk.ReadImage(str(shared_file(FOLDER + "example_ct.nii.gz"))))
    seg, _ = to_canonical(
        sitk.ReadImage(str(shared_file(FOLDER + "example_seg_fast_force_split.nii.gz")))
    )
    labels = _box(seg, CROP_ORIGIN, CROP_SIZE, fill=0)
    target = np.zeros(labels.shape, np.int64)
    target[labels == 21] = 1
    target[(labels == 77) | (labels == 78)] = 2
    start = [o - m for o, m in zip(CROP_ORIGIN, margin)]
    size = [s + 2 * m for s, m in zip(CROP_SIZE, margin)]
    image = _box(ct, start, size, fill=-1024.0)
    image = np.clip((image - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0.0, 1.0).astype(np.float32)
    return torch.from_numpy(image)[None, None], torch.from_numpy(target)[None]


def _box(array: np.ndarray, start, size, fill) -> np.ndarray:
    """``array[start:start+size]`` with ``fill`` where the box leaves the array."""
    out = np.full(size, fill, dtype=array.dtype)
    src = tuple(slice(max(s, 0), min(s + n, d)) for s, n, d in zip(start, size, array.shape))
    dst = tuple(slice(a.start - s, a.stop - s) for a, s in zip(src, start))
    out[dst] = array[src]
    return out


def dice_per_class(pred: torch.Tensor, target: torch.Tensor, classes=(1, 2)) -> list[float]:
    """Hard Dice of each foreground class (independent of the losses' soft Dice)."""
    scores = []
    for k in classes:
        p, t = pred == k, target == k
        scores.append(float(2 * (p & t).sum()) / float(p.sum() + t.sum()))
    return scores


def overfit(model, x, target, max_steps: int, lr: float = 1e-2, goal: float = 0.92, every: int = 5):
    """Adam + Dice/CE on one example until every class's Dice >= ``goal`` in inference mode.

    Every ``every`` steps the Dice is measured with ``model.eval()`` (BatchNorm with its running
    statistics, as at inference). Returns ``(Dice per class, steps, seconds)``.
    """
    loss = build_loss({"name": "dice_ce"})
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    dice, steps = [0.0], 0
    for steps in range(1, max_steps + 1):
        model.train()
        value = loss(model(x), target)
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        if steps % every == 0 or steps == max_steps:
            dice = evaluate(model, x, target)
            if min(dice) >= goal:
                break
    return dice, steps, time.perf_counter() - start


def evaluate(model, x, target) -> list[float]:
    """Dice per foreground class of the model in inference mode."""
    model.eval()
    with torch.no_grad():
        return dice_per_class(model(x).argmax(1), target)
