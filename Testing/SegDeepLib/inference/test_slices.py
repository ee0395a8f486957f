"""2D slice-by-slice inference against explicit per-slice loops."""

from __future__ import annotations

import pytest
import torch

from SegDeepLib.errors import SegDeepError
from SegDeepLib.inference.slices import predict_slices, slice_stack, window_starts
from Testing.SegDeepLib.inference.tiny_nets import CentreNet


@pytest.mark.parametrize("context", [0, 1, 2])
def test_slice_stack_matches_a_loop(context):
    volume = torch.arange(2 * 5 * 3 * 4, dtype=torch.float32).reshape(2, 5, 3, 4)
    stack = slice_stack(volume, [0, 2, 4], context)
    for row, z in enumerate([0, 2, 4]):
        expected = []
        for o in range(-context, context + 1):
            zz = min(max(z + o, 0), 4)
            expected += [volume[c, zz] for c in range(2)]
        torch.testing.assert_close(stack[row], torch.stack(expected))


@pytest.mark.parametrize("channel,shift", [(1, 0), (0, -1), (2, 1)])
def test_predict_slices_reads_the_right_neighbour(channel, shift):
    torch.manual_seed(0)
    volume = torch.rand(1, 7, 10, 13) * 2
    net = CentreNet((0.0, 1.0, 2.0), spatial_dims=2, channel=channel, multiple=8)
    probs = predict_slices(volume, net, batch_size=3, context=1)
    ref_net = CentreNet((0.0, 1.0, 2.0), spatial_dims=2, channel=0)
    for z in range(7):
        source = volume[:, min(max(z + shift, 0), 6)]
        with torch.no_grad():
            ref = torch.softmax(ref_net(source[None]), 1)[0]
        torch.testing.assert_close(probs[:, z], ref, atol=1e-6, rtol=1e-6)
    assert all(c[2:] == (16, 16) for c in net.calls)  # padded to the valid size
    assert max(c[0] for c in net.calls) <= 3


def test_sequence_mode_sends_the_whole_volume_and_applies_the_sequence_network():
    volume = torch.rand(1, 6, 8, 8)
    net = CentreNet((0.0, 1.0), spatial_dims=2)

    class Smooth(torch.nn.Module):  # averages probabilities along the sequence: logits = log(mean)
        def forward(self, p):
            return torch.log(p.mean(0, keepdim=True).expand_as(p))

    probs = predict_slices(volume, net, sequence=True, sequence_network=Smooth())
    assert [c[0] for c in net.calls] == [6]
    per_slice = predict_slices(volume, CentreNet((0.0, 1.0), spatial_dims=2), batch_size=2)
    torch.testing.assert_close(
        probs, per_slice.mean(1, keepdim=True).expand_as(per_slice), atol=1e-6, rtol=1e-6
    )


@pytest.mark.parametrize("depth,window", [(6, 6), (7, 6), (12, 6), (13, 4), (5, 8), (9, 1)])
def test_window_starts_cover_every_slice_with_half_overlapping_runs(depth, window):
    starts = window_starts(depth, window)
    covered = sorted({z for first in starts for z in range(first, min(first + window, depth))})
    assert covered == list(range(depth))
    assert all(first + window <= max(depth, window) for first in starts)
    assert all(b - a <= max(1, window // 2) for a, b in zip(starts, starts[1:]))


def test_sequence_window_runs_the_sequence_model_on_runs_and_averages():
    """A sequence model that mixes slices (mean over its sequence) sees runs of ``window`` slices;
    each slice's probability is the average over the runs holding it (brute force below)."""
    torch.manual_seed(1)
    volume = torch.rand(1, 10, 8, 8) * 2

    class MeanOverSequence(torch.nn.Module):
        spatial_dims = 2

        def __init__(self):
            super().__init__()
            self.calls = []

        def forward(self, x):
            self.calls.append(x.shape[0])
            fg = x[:, 1:2].mean(0, keepdim=True).expand(x.shape[0], 1, *x.shape[2:])
            return torch.cat([torch.zeros_like(fg), fg], 1)

    net = MeanOverSequence()
    probs = predict_slices(volume, net, sequence=True, context=1, window=4)
    starts = window_starts(10, 4)
    assert starts == [0, 2, 4, 6] and net.calls == [4, 4, 4, 4]
    expected = torch.zeros(10, 8, 8)
    count = torch.zeros(10)
    for first in starts:  # the centre channel of slice z is volume[0, z]
        mean = volume[0, first : first + 4].mean(0)
        expected[first : first + 4] += torch.sigmoid(mean)
        count[first : first + 4] += 1
    torch.testing.assert_close(probs[1], expected / count[:, None, None], atol=1e-6, rtol=1e-6)
    whole = predict_slices(volume, MeanOverSequence(), sequence=True, context=1)
    assert not torch.allclose(whole, probs)  # the whole sequence at once is a different result


def test_bad_2d_output_is_reported():
    class Wrong(torch.nn.Module):
        def forward(self, x):
            return x[:, :1]

    with pytest.raises(SegDeepError, match="K>=2"):
        predict_slices(torch.rand(1, 3, 4, 4), Wrong())


def test_biconvlstm_refines_a_2d_models_sequence():
    from SegDeepLib.models import build_model

    torch.manual_seed(0)
    volume = torch.rand(1, 5, 8, 8)
    rnn = build_model({"name": "biconvlstm", "num_classes": 2}).eval()
    probs = predict_slices(
        volume, CentreNet((0.0, 1.0), spatial_dims=2), batch_size=2, sequence_network=rnn
    )
    base = predict_slices(volume, CentreNet((0.0, 1.0), spatial_dims=2), batch_size=5)
    with torch.no_grad():
        expected = torch.softmax(rnn(base.permute(1, 0, 2, 3)[:, 1:]), 1).permute(1, 0, 2, 3)
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=1e-6)
