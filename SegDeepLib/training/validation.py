"""Whole-volume validation: sliding-window prediction on the network grid and Dice per class.

:func:`validate_case` is the one adapter between training and inference: it runs the inference
package's sliding window (3D) or slice predictor (2D stacks / sequences) on a cached case.
:func:`predict_probabilities_3d` / :func:`predict_slices` are small independent implementations
(used by the cascade's stage-1 regions and as test references).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from SegDeepLib.data.cache import CachedCase


def _positions(size: int, tile: int, step: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, step))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def _network_sizes(model: torch.nn.Module, tile: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(input tile, output tile) respecting ``valid_input_size`` / ``output_size`` when present."""
    tile = tuple(int(t) for t in tile)
    if hasattr(model, "valid_input_size"):
        tile = tuple(int(t) for t in model.valid_input_size(tile))
    out = tuple(int(t) for t in model.output_size(tile)) if hasattr(model, "output_size") else tile
    return tile, out


@torch.no_grad()
def predict_probabilities_3d(model: torch.nn.Module, image: np.ndarray, tile: Sequence[int], overlap: float,
                             num_classes: int, device: torch.device) -> np.ndarray:
    """``(K, Z, Y, X)`` softmax averaged over overlapping tiles (constant weights)."""
    inner = model.module if hasattr(model, "module") else model
    tile_in, tile_out = _network_sizes(inner, tile)
    margin = [(i - o) // 2 for i, o in zip(tile_in, tile_out)]
    shape = image.shape[1:]
    padded_out = [max(s, o) for s, o in zip(shape, tile_out)]
    pad = [(m, m + po - s + (i - o - 2 * m)) for m, po, s, i, o in zip(margin, padded_out, shape, tile_in, tile_out)]
    volume = np.pad(image, [(0, 0)] + pad, mode="constant")
    probs = np.zeros((num_classes, *padded_out), np.float32)
    counts = np.zeros(padded_out, np.float32)
    steps = [max(1, round(o * (1 - overlap))) for o in tile_out]
    for start in itertools.product(*[_positions(s, o, st) for s, o, st in zip(padded_out, tile_out, steps)]):
        window = volume[(slice(None), *[slice(a, a + i) for a, i in zip(start, tile_in)])]
        logits = model(torch.from_numpy(np.ascontiguousarray(window))[None].to(device))
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        out = torch.softmax(logits.float(), 1)[0].cpu().numpy()
        region = tuple(slice(a, a + o) for a, o in zip(start, tile_out))
        probs[(slice(None), *region)] += out
        counts[region] += 1
    probs /= np.maximum(counts, 1)
    return probs[(slice(None), *[slice(0, s) for s in shape])]


@torch.no_grad()
def predict_slices(model: torch.nn.Module, image: np.ndarray, context: int, sequence: int | None,
                   num_classes: int, device: torch.device) -> np.ndarray:
    """2D models: ``(K, Z, Y, X)`` from slice stacks in batches of 8, or (``sequence``) the whole
    volume's stacks in slice order as one ``(S, C, H, W)`` sequence."""
    inner = model.module if hasattr(model, "module") else model
    half = context // 2
    size = tuple(image.shape[2:])
    valid = tuple(inner.valid_input_size(size)) if hasattr(inner, "valid_input_size") else size
    padded = np.pad(image, [(0, 0), (half, half), (0, valid[0] - size[0]), (0, valid[1] - size[1])], mode="edge")
    stacks = np.stack([padded[:, z:z + context].reshape(-1, *valid) for z in range(image.shape[1])])
    chunk = len(stacks) if sequence else 8  # a sequence model reads the whole volume as one sequence
    outputs = []
    for a in range(0, len(stacks), chunk):
        x = torch.from_numpy(np.ascontiguousarray(stacks[a:a + chunk])).to(device)
        logits = model(x)
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        outputs.append(torch.softmax(logits.float(), 1).cpu().numpy())
    probs = np.concatenate(outputs)[:, :, : size[0], : size[1]]
    return np.ascontiguousarray(probs.transpose(1, 0, 2, 3))


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

