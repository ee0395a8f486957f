"""Whole-volume validation: sliding-window prediction on the network grid and Dice per class.

:func:`validate_case` is the one adapter between training and inference: it runs the inference
package's sliding window (3D) or slice predictor (2D stacks / sequences) on a cached case. The
cascade's stage-1 regions (:mod:`SegDeepLib.training.cascade`) use the same sliding window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from SegDeepLib.data.cache import CachedCase


def dice_per_class(pred: np.ndarray, target: np.ndarray, num_classes: int,
                   valid: np.ndarray | None = None) -> list[float | None]:
    """Dice of classes 1..K-1 (None when a class is absent from both prediction and reference)."""
    if valid is not None:
        pred, target = pred[valid], target[valid]
    scores: list[float | None] = []
    for k in range(1, num_classes):
        p, t = pred == k, target == k
        denom = int(p.sum()) + int(t.sum())
        scores.append(None if denom == 0 else 2.0 * int((p & t).sum()) / denom)
    return scores


def validate_case(model: torch.nn.Module, case: CachedCase, mode: str, tile: Sequence[int], overlap: float,
                  context: int, sequence: int, num_classes: int, device: torch.device,
                  pad_mode: str = "constant") -> list[float | None]:
    """Dice per class of one whole case on the network grid (only annotated classes count).

    Runs the inference package's sliding window / slice predictor (the path the Predictor uses),
    skipping tiles outside the case's candidate region like inference does.
    """
    from SegDeepLib.inference.slices import predict_slices as infer_slices
    from SegDeepLib.inference.sliding_window import TileSettings, sliding_window

    model.eval()
    image = torch.from_numpy(np.array(case.image, np.float32))  # a writable copy of the memory map
    if mode == "patch3d":
        settings = TileSettings(tuple(int(t) for t in tile), overlap=overlap, weighting="gaussian",
                                pad_mode=pad_mode)
        probs = sliding_window(image, model, settings, device, region=case.region)
    else:
        # sequence models see runs of their training sequence length, as the exported model does
        is_sequence = mode == "sequence2d"
        probs = infer_slices(image, model, device, context=context // 2, sequence=is_sequence,
                             window=sequence if is_sequence else None)
    pred = probs.argmax(0).numpy()
    scores = dice_per_class(pred, case.label, num_classes)
    return [s if present else None for s, present in zip(scores, case.class_present[1:])]


def mean_dice(per_case: list[list[float | None]]) -> tuple[list[float | None], float]:
    """Per-class mean over cases (ignoring None) and the mean over classes."""
    if not per_case:
        return [], 0.0
    classes = []
    for k in range(len(per_case[0])):
        values = [c[k] for c in per_case if c[k] is not None]
        classes.append(float(np.mean(values)) if values else None)
    valid = [v for v in classes if v is not None]
    return classes, float(np.mean(valid)) if valid else 0.0


def crop_to_output(logits: torch.Tensor, *arrays: torch.Tensor) -> list[torch.Tensor]:
    """Centre-crop label/mask tensors to the logits' spatial size (valid-convolution networks)."""
    spatial = logits.shape[2:]
    out = []
    for array in arrays:
        lead = array.dim() - len(spatial)
        slices = [slice(None)] * lead
        for have, want in zip(array.shape[lead:], spatial):
            start = (have - want) // 2
            slices.append(slice(start, start + want))
        out.append(array[tuple(slices)])
    return out

