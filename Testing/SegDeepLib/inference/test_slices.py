"""2D slice-by-slice inference against explicit per-slice loops."""

from __future__ import annotations

import pytest
import torch

from SegDeepLib.errors import SegDeepError
from SegDeepLib.inference.slices import predict_slices, slice_stack
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
