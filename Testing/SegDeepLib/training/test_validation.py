"""Sliding-window validation against whole-volume forwards, Dice against hand counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from SegDeepLib.inference.slices import predict_slices
from SegDeepLib.inference.sliding_window import TileSettings, sliding_window
from SegDeepLib.training.validation import crop_to_output, dice_per_class, mean_dice


class ValidConv(nn.Module):
    """Two unpadded 3x3x3 convolutions: output = input - 4 per axis (like the valid 3D U-Net)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv3d(1, 3, 3), nn.Tanh(), nn.Conv3d(3, 3, 3))

    def forward(self, x):
        return self.net(x)

    def output_size(self, size):
        return tuple(s - 4 for s in size)


def test_tiles_equal_one_whole_volume_forward_for_valid_convolutions():
    # the tiling training uses (cascade stage-1 regions): constant weights, zero padding
    model = ValidConv().eval()
    image = np.random.default_rng(0).normal(size=(1, 13, 17, 11)).astype(np.float32)
    tiles = TileSettings((8, 8, 8), overlap=0.5, weighting="constant")
    probs = sliding_window(image, model, tiles, torch.device("cpu")).numpy()
    padded = np.pad(image, [(0, 0)] + [(2, 2)] * 3)
    with torch.no_grad():
        whole = torch.softmax(model(torch.from_numpy(padded)[None]), 1)[0].numpy()
    assert probs.shape == (3, 13, 17, 11)
    assert np.allclose(probs, whole, atol=1e-5)


def test_slices_equal_per_slice_forward():
    torch.manual_seed(1)
    model = nn.Conv2d(3, 2, 3, padding=1).eval()
    image = np.random.default_rng(1).normal(size=(1, 6, 9, 10)).astype(np.float32)
    # the slice path validation uses for 2D models (context 3 slices = 1 on each side)
    probs = predict_slices(image, model, torch.device("cpu"), batch_size=8, context=1).numpy()
    padded = np.pad(image, [(0, 0), (1, 1), (0, 0), (0, 0)], mode="edge")
    with torch.no_grad():
        for z in range(6):
            ref = torch.softmax(model(torch.from_numpy(padded[0, z:z + 3])[None]), 1)[0].numpy()
            assert np.allclose(probs[:, z], ref, atol=1e-6)


def test_dice_per_class_hand_counts():
    pred = np.array([0, 1, 1, 2, 2, 0])
    ref = np.array([0, 1, 0, 2, 0, 0])
    assert dice_per_class(pred, ref, 4) == [pytest.approx(2 / 3), pytest.approx(2 / 3), None]
    classes, mean = mean_dice([[1.0, None], [0.5, 0.25]])
    assert classes == [0.75, 0.25] and mean == 0.5


def test_crop_to_output_centre():
    logits = torch.zeros(1, 2, 4, 4, 4)
    label = torch.arange(8**3).reshape(1, 8, 8, 8)
    (cropped,) = crop_to_output(logits, label)
    assert torch.equal(cropped, label[:, 2:6, 2:6, 2:6])


def test_validate_case_uses_inference_path_and_matches_reference():
    from SegDeepLib.data.cache import CachedCase
    from SegDeepLib.training.validation import validate_case

    model = ValidConv().eval()
    rng = np.random.default_rng(3)
    image = rng.normal(size=(1, 13, 17, 11)).astype(np.float32)
    # the prediction, independently: one forward of the zero-padded volume (valid convolutions)
    with torch.no_grad():
        whole = model(torch.from_numpy(np.pad(image, [(0, 0)] + [(2, 2)] * 3))[None])[0]
    pred = whole.argmax(0).numpy()
    # a reference that disagrees with it in a known way
    label = pred.copy()
    label[:4][label[:4] == 1] = 0  # class-1 voxels of the first slices missed
    label[-3:, :5] = 1  # and a block labelled 1 the network does not all call 1
    tp = int(((pred == 1) & (label == 1)).sum())
    expected = 2.0 * tp / (int((pred == 1).sum()) + int((label == 1).sum()))
    assert 0.3 < expected < 0.95
    case = CachedCase("c", image, label.astype(np.uint8), None, (1.0, 1.0, 1.0), [True, True, False], {})
    scores = validate_case(model, case, "patch3d", (8, 8, 8), 0.5, 3, 1, 3, torch.device("cpu"))
    assert scores[0] == pytest.approx(expected, abs=1e-12)
    assert scores[1] is None  # class 2 not annotated -> None


class SequenceLength(nn.Module):
    """A 2D sequence model whose class-1 logit is (sequence length - 5): it tells how many slices
    it was given at once."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, _, h, w = x.shape
        logits = torch.zeros(s, 2, h, w)
        logits[:, 1] = s - 5
        return logits


def test_validate_sequence_model_on_runs_of_its_training_length():
    # Whole-volume sequences (12 slices) would give class 1 everywhere (Dice 1 on an all-foreground
    # label); runs of the training length 4 give background everywhere (Dice 0), as inference does.
    from SegDeepLib.data.cache import CachedCase
    from SegDeepLib.training.validation import validate_case

    image = np.zeros((1, 12, 6, 6), np.float32)
    case = CachedCase("c", image, np.ones((12, 6, 6), np.uint8), None, (1.0, 1.0, 1.0), [True, True], {})
    scores = validate_case(SequenceLength(), case, "sequence2d", (6, 6), 0.0, 3, 4, 2, torch.device("cpu"))
    assert scores == [0.0]
    scores = validate_case(SequenceLength(), case, "sequence2d", (6, 6), 0.0, 3, 12, 2, torch.device("cpu"))
    assert scores == [1.0]


def test_validation_pad_mode_reaches_the_sliding_window():
    # A 3x3x3 box sum of an all-ones 4^3 image in an 8^3 tile: zero padding beyond the volume makes
    # the far-side voxels fall below the threshold, replicate padding does not.
    from SegDeepLib.data.cache import CachedCase
    from SegDeepLib.training.validation import validate_case

    model = nn.Conv3d(1, 2, 3, padding=1, bias=True)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[1].fill_(1.0)
        model.bias.copy_(torch.tensor([0.0, -26.5]))
    image = np.ones((1, 4, 4, 4), np.float32)
    case = CachedCase("c", image, np.ones((4, 4, 4), np.uint8), None, (1.0, 1.0, 1.0), [True, True], {})
    args = ("patch3d", (8, 8, 8), 0.0, 3, 1, 2, torch.device("cpu"))
    constant = validate_case(model, case, *args, pad_mode="constant")[0]
    replicate = validate_case(model, case, *args, pad_mode="replicate")[0]
    assert constant < replicate
