"""The tiling training used before it called the inference sliding window (kept as a brute-force
reference): constant weights, zero padding, tiles of the network's output size."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch


def _positions(size: int, tile: int, step: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, step))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


@torch.no_grad()
def predict_probabilities_3d(model: torch.nn.Module, image: np.ndarray, tile: Sequence[int],
                             overlap: float, num_classes: int) -> np.ndarray:
    """``(K, Z, Y, X)`` softmax averaged over overlapping tiles (constant weights)."""
    tile_in = tuple(int(t) for t in tile)
    if hasattr(model, "valid_input_size"):
        tile_in = tuple(int(t) for t in model.valid_input_size(tile_in))
    tile_out = tuple(int(t) for t in model.output_size(tile_in)) if hasattr(model, "output_size") else tile_in
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
        out = torch.softmax(model(torch.from_numpy(np.ascontiguousarray(window))[None]).float(), 1)[0].numpy()
        region = tuple(slice(a, a + o) for a, o in zip(start, tile_out))
        probs[(slice(None), *region)] += out
        counts[region] += 1
    probs /= np.maximum(counts, 1)
    return probs[(slice(None), *[slice(0, s) for s in shape])]
