"""2D models on a volume: slice by slice along Z with adjacent slices as extra channels.

Slice ``z`` is fed as the ``2 * context + 1`` slices ``z - context .. z + context`` (clamped at the
volume's ends; ``context=1`` gives the pancreas paper's 3-slice input), channels ordered slice by
slice, then by input channel. Slices go through the network ``batch_size`` at a time.

Sequence models (``sequence=True``, e.g. ``"pnet_msa_birnn"``) take the whole slice sequence as one
batch ``(S, C, H, W)`` (batch = the sequence, top to bottom) and return per-slice logits. A separate
``sequence_network`` (e.g. ``"biconvlstm"``) is applied to the stacked per-slice probabilities of the
2D model, ``(S, K, H, W)`` (or the ``K - 1`` foreground maps when its ``in_channels`` says so,
as ``"biconvlstm"`` does) -> logits ``(S, K, H, W)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from SegDeepLib.errors import SegDeepError
from SegDeepLib.progress import CancelToken, ProgressCallback, StageTimer


def slice_stack(volume: torch.Tensor, indices: list[int], context: int = 1) -> torch.Tensor:
    """``(len(indices), C * (2 * context + 1), Y, X)`` inputs for slices ``indices`` of ``(C, Z, Y, X)``."""
    depth = volume.shape[1]
    offsets = range(-context, context + 1)
    picks = [[min(max(z + o, 0), depth - 1) for o in offsets] for z in indices]
    index = torch.as_tensor(picks, dtype=torch.long)  # (B, 2c+1)
    stacked = volume[:, index]  # (C, B, 2c+1, Y, X)
    return stacked.permute(1, 2, 0, 3, 4).reshape(len(indices), -1, *volume.shape[2:])


def _padded(batch: torch.Tensor, network: torch.nn.Module) -> tuple[torch.Tensor, tuple[int, int]]:
    size = tuple(batch.shape[2:])
    valid = (
        tuple(int(s) for s in network.valid_input_size(size))
        if hasattr(network, "valid_input_size")
        else size
    )
    pad_y, pad_x = valid[0] - size[0], valid[1] - size[1]
    if pad_y < 0 or pad_x < 0:
        raise SegDeepError(f"network valid input size {valid} is smaller than the slice {size}")
    if pad_y or pad_x:
        batch = F.pad(
            batch,
            [pad_x // 2, pad_x - pad_x // 2, pad_y // 2, pad_y - pad_y // 2],
            mode="replicate",
        )
    return batch, (pad_y // 2, pad_x // 2)


def _run(network: torch.nn.Module, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    size = tuple(batch.shape[2:])
    padded, (oy, ox) = _padded(batch, network)
    with torch.inference_mode():
        logits = network(padded.to(device)).float()
    if logits.ndim != 4 or logits.shape[0] != batch.shape[0] or logits.shape[1] < 2:
        raise SegDeepError(
            f"2D network returned shape {tuple(logits.shape)}; expected (N, K>=2, H, W)"
        )
    if tuple(logits.shape[2:]) != tuple(padded.shape[2:]):
        raise SegDeepError(
            f"2D network output {tuple(logits.shape[2:])} != its input {tuple(padded.shape[2:])}"
        )
    return logits[:, :, oy : oy + size[0], ox : ox + size[1]]


def predict_slices(
    volume: torch.Tensor | np.ndarray,
    network: torch.nn.Module,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    context: int = 1,
    sequence: bool = False,
    sequence_network: torch.nn.Module | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Softmax probabilities ``(K, Z, Y, X)`` (float32, CPU) of a 2D network over ``(C, Z, Y, X)``.

    ``window``: a sequence model sees runs of ``window`` slices (half-overlapping, probabilities
    averaged) instead of the whole volume at once, as it saw them in training.
    """
    volume = torch.as_tensor(volume, dtype=torch.float32)
    device = torch.device(device)
    depth = volume.shape[1]
    runs = slice_runs(depth, batch_size, sequence, window)
    timer = StageTimer(progress, "slices", len(runs), cancel)
    total = None
    count = torch.zeros(depth)
    for run in runs:
        logits = _run(network, slice_stack(volume, list(run), context), device)
        probs = torch.softmax(logits, dim=1).cpu()
        if total is None:
            total = torch.zeros((depth, *probs.shape[1:]))
        total[run.start : run.stop] += probs
        count[run.start : run.stop] += 1
        timer.step(1, f"slices {run.start + 1}-{run.stop}/{depth}")
    probs = total / count[:, None, None, None]  # (S, K, Y, X); runs that do not overlap: exact
    if sequence_network is not None:
        # "biconvlstm" reads the K - 1 foreground maps by default (its in_channels), others all K
        wanted = int(getattr(sequence_network, "in_channels", probs.shape[1]))
        maps = probs[:, 1:] if wanted == probs.shape[1] - 1 else probs
        with torch.inference_mode():
            logits = sequence_network(maps.to(device)).float()
        if logits.shape != probs.shape:
            raise SegDeepError(
                f"sequence network returned {tuple(logits.shape)}; expected {tuple(probs.shape)}"
            )
        probs = torch.softmax(logits, dim=1).cpu()
    return probs.permute(1, 0, 2, 3).contiguous()


def window_starts(depth: int, window: int) -> list[int]:
    """First slices of half-overlapping runs of ``window`` slices covering ``0 .. depth - 1``."""
    stride = max(1, window // 2)
    starts = list(range(0, max(depth - window, 0) + 1, stride))
    if starts[-1] + window < depth:
        starts.append(depth - window)
    return starts


def slice_runs(depth: int, batch_size: int, sequence: bool, window: int | None) -> list[range]:
    """The slices each forward pass takes: batches of ``batch_size`` (per-slice models), the whole
    volume (sequence models), or half-overlapping runs of ``window`` slices (sequence models)."""
    if sequence and window and depth > window:
        return [range(first, first + int(window)) for first in window_starts(depth, int(window))]
    step = depth if sequence else max(1, int(batch_size))
    return [range(first, min(first + step, depth)) for first in range(0, depth, step)]
