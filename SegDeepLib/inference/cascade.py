"""The two-stage cascade of the hierarchical 3D FCN paper, at inference.

1. C1: the body mask (stage 1's preprocessing usually says ``"crop": "body"``), coarse spacing;
2. stage 1 network over C1 with non-overlapping tiles (``overlap`` 0 by default);
3. C2: stage 1's foreground on the input grid, dilated by ``dilation`` voxels (or mm);
4. stage 2 network at the fine spacing with overlapping tiles, only on tiles touching C2;
5. voxels outside C2 are background; the result is pasted back onto the input grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from SegDeepLib.inference.run import PredictionRun
from SegDeepLib.inference.settings import fast_preprocessing
from SegDeepLib.preprocessing.pipeline import Preprocessed
from SegDeepLib.preprocessing.regions import dilate_foreground
from SegDeepLib.progress import log


def _stage_settings(run: PredictionRun, name: str, default_overlap: float) -> dict[str, Any]:
    stage = dict(run.settings["cascade"][name])
    stage.setdefault("network", name)
    stage.setdefault("tile_size", run.settings["tile_size"])
    stage.setdefault("overlap", default_overlap)
    stage.setdefault("batch_size", run.settings["batch_size"])
    return stage


def stage1_labels(run: PredictionRun, image: sitk.Image) -> sitk.Image:
    """Stage 1's label map (class indices) on the input grid."""
    stage = _stage_settings(run, "stage1", 0.0)
    pre = run.preprocess(image, stage["preprocessing"])
    probs = run.networks_probabilities(pre.array, [stage["network"]], stage, tta=False)
    labels = torch.argmax(probs, dim=0).numpy().astype(np.uint8)
    return pre.to_input_grid(labels, is_label=True)


def run_cascade(
    run: PredictionRun, image: sitk.Image, tta: bool
) -> tuple[Preprocessed, torch.Tensor]:
    """(stage 2 preprocessing, stage 2 probabilities with background outside C2)."""
    cascade = run.settings["cascade"]
    coarse = stage1_labels(run, image)
    c2 = dilate_foreground(
        coarse, float(cascade.get("dilation", 3)), bool(cascade.get("dilation_in_mm", False))
    )
    empty = not sitk.GetArrayFromImage(c2).any()
    if empty:
        log(run.progress, "cascade: stage 1 found no organ; the segmentation is empty", "warning")
        c2 = _centre_voxel(c2)
    spec = (
        fast_preprocessing(run.p.spec, run.p.spec.get("inference") or {})
        if run.fast
        else dict(run.p.spec.get("preprocessing") or {})
    )
    pre = run.preprocess(image, {**spec, "crop": "mask"}, region=c2)
    stage = _stage_settings(run, "stage2", 0.5)
    if empty:
        probs = torch.zeros((len(run.p.table.labels) + 1, *pre.shape_zyx))
        probs[0] = 1.0
        return pre, probs
    probs = run.networks_probabilities(pre.array, [stage["network"]], stage, tta, region=pre.region)
    outside = torch.from_numpy(~pre.region)
    probs[:, outside] = 0.0
    probs[0, outside] = 1.0
    return pre, probs


def _centre_voxel(mask: sitk.Image) -> sitk.Image:
    """A one-voxel region (keeps preprocessing well defined when stage 1 found nothing)."""
    array = np.zeros(sitk.GetArrayViewFromImage(mask).shape, dtype=np.uint8)
    array[tuple(s // 2 for s in array.shape)] = 1
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(mask)
    return out
