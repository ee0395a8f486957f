"""Bidirectional ConvLSTM: a direct transcription of the paper's eqs 5-10, direction symmetry,
the PNet-MSA + BiRNN stack, and overfitting real CT slices end to end."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from SegDeepLib.errors import SegDeepError
from SegDeepLib.models import build_model
from SegDeepLib.models.convlstm import BiConvLSTM, ConvLSTM
from Testing.SegDeepLib.models.test_pnet_msa import liver_slices, overfit


def reference_convlstm(layer: ConvLSTM, y: torch.Tensor) -> torch.Tensor:
    """Eqs 5-9 written out term by term with plain tensor ops; y (S, C, H, W) -> H (S, h, H, W).

    The layer's stacked convolution holds, per gate g in (i, f, c, o), the kernels W_yg (input
    channels) and W_hg (hidden channels) and the bias b_g.
    """
    cell = layer.cell
    c_in, hid = cell.in_channels, cell.hidden_channels
    pad = cell.conv.padding
    W, b = cell.conv.weight, cell.conv.bias
    gate = {g: slice(n * hid, (n + 1) * hid) for n, g in enumerate("ifco")}
    W_y = {g: W[s, :c_in] for g, s in gate.items()}
    W_h = {g: W[s, c_in:] for g, s in gate.items()}
    bias = {g: b[s] for g, s in gate.items()}

    def conv(w: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return F.conv2d(image[None], w, padding=pad)[0]

    H = torch.zeros(hid, *y.shape[2:], dtype=y.dtype)
    C = torch.zeros_like(H)
    outputs = []
    for tau in range(y.shape[0]):
        Y = y[tau]
        I = torch.sigmoid(
            conv(W_y["i"], Y) + conv(W_h["i"], H) + cell.w_ci * C + bias["i"][:, None, None]
        )
        Fg = torch.sigmoid(
            conv(W_y["f"], Y) + conv(W_h["f"], H) + cell.w_cf * C + bias["f"][:, None, None]
        )
        C = Fg * C + I * torch.tanh(
            conv(W_y["c"], Y) + conv(W_h["c"], H) + bias["c"][:, None, None]
        )
        O = torch.sigmoid(
            conv(W_y["o"], Y) + conv(W_h["o"], H) + cell.w_co * C + bias["o"][:, None, None]
        )
        H = O * torch.tanh(C)
        outputs.append(H)
    return torch.stack(outputs)


@pytest.mark.parametrize("peephole_size", [None, (5, 6)])
@pytest.mark.parametrize("hidden", [1, 2])
def test_convlstm_matches_paper_equations(peephole_size, hidden):
    torch.manual_seed(1)
    layer = ConvLSTM(in_channels=2, hidden_channels=hidden, peephole_size=peephole_size).double()
    with torch.no_grad():  # make every term matter (default peepholes are small)
        for p in layer.parameters():
            p.uniform_(-1.0, 1.0)
    y = torch.rand(4, 2, 5, 6, dtype=torch.float64)
    expected = reference_convlstm(layer, y)
    with torch.no_grad():
        got = layer(y[None])[0]
    assert got.shape == (4, hidden, 5, 6)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # the recurrence matters: the last output differs from running the last slice alone
    assert not torch.allclose(got[-1], reference_convlstm(layer, y[-1:])[0])


def test_bottom_up_equals_top_down_on_reversed_sequence():
    layer = ConvLSTM(in_channels=1, hidden_channels=1).double()
    sequence = torch.rand(2, 5, 1, 7, 7, dtype=torch.float64)
    with torch.no_grad():
        bottom_up = layer(sequence, reverse=True)
        top_down_reversed = layer(sequence.flip(1)).flip(1)
        top_down = layer(sequence)
    torch.testing.assert_close(bottom_up, top_down_reversed, rtol=0, atol=0)
    assert not torch.allclose(bottom_up, top_down)


def test_bidirectional_combination_and_symmetry():
    model = BiConvLSTM(num_classes=2).double()
    with torch.no_grad():
        model.direction_weights.copy_(torch.tensor([0.7, -1.3]).view(2, 1, 1, 1))
        model.bias.fill_(0.25)
    x = torch.rand(6, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        logits = model(x)
        h_down = reference_convlstm(model.top_down, x)
        h_up = reference_convlstm(model.bottom_up, x.flip(0)).flip(0)
    assert logits.shape == (6, 2, 8, 8)
    torch.testing.assert_close(logits[:, 0], torch.zeros(6, 8, 8, dtype=torch.float64))
    torch.testing.assert_close(logits[:, 1:], 0.7 * h_down - 1.3 * h_up + 0.25)
    # swapping the two directions' weights and reversing the slices reverses the output
    swapped = BiConvLSTM(num_classes=2).double()
    swapped.load_state_dict(model.state_dict())
    with torch.no_grad():
        swapped.top_down.load_state_dict(model.bottom_up.state_dict())
        swapped.bottom_up.load_state_dict(model.top_down.state_dict())
        swapped.direction_weights.copy_(model.direction_weights.flip(0))
        torch.testing.assert_close(swapped(x.flip(0)).flip(0), logits)


def test_multiclass_input_from_any_2d_model_and_bad_input():
    other = build_model({"name": "pnet_msa", "num_classes": 3, "width": 4, "num_modules": 2})
    model = build_model({"name": "biconvlstm", "num_classes": 3})
    probabilities = torch.softmax(other(torch.randn(5, 3, 8, 8)), 1)[:, 1:]
    fused, aux = model(probabilities, return_all=True)
    assert fused.shape == (5, 3, 8, 8) and aux == []
    assert model.output_size((8, 9)) == (8, 9) and model.spatial_dims == 2
    with pytest.raises(SegDeepError, match="expected"):
        model(torch.rand(5, 1, 8, 8))
    with pytest.raises(SegDeepError):
        BiConvLSTM(num_classes=1)


def test_passthrough_init_reproduces_the_input_segmentation():
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    radii = torch.tensor([6.0, 8.0, 10.0, 9.0, 7.0])[:, None, None]
    distance = ((yy - 16) ** 2 + (xx - 15) ** 2).sqrt()
    probability = torch.sigmoid(radii - distance)[:, None]  # smooth disks, one per slice
    with torch.no_grad():
        logits = BiConvLSTM(num_classes=2)(probability)
        plain = BiConvLSTM(num_classes=2, passthrough_init=False)(probability)
    confident = (probability[:, 0] - 0.5).abs() > 0.25  # more than ~1 pixel from the edge
    truth = probability[:, 0] > 0.5
    agree = ((logits.argmax(1) == 1) == truth)[confident].float().mean()
    print(f"pass-through agreement away from edges: {agree:.4f}")
    assert agree > 0.99
    assert ((plain.argmax(1) == 1) == truth)[confident].float().mean() < agree


def test_pnet_msa_birnn_stack_outputs_and_gradients():
    model = build_model({"name": "pnet_msa_birnn", "width": 8, "num_modules": 3})
    x = torch.randn(4, 3, 16, 16)
    logits, aux = model(x, return_all=True)
    assert logits.shape == (4, 2, 16, 16) and len(aux) == 4  # log(Y) and U_1..U_3
    with torch.no_grad():
        torch.testing.assert_close(aux[0], model.cnn(x))
    logits.sum().backward()  # end to end: the CNN receives gradient through the RNN
    assert model.cnn.forward_branches[0][0][0].weight.grad.abs().sum() > 0
    assert model.valid_input_size((30, 17)) == (32, 20)
    model.cnn.num_active_modules = 1
    assert model.grow() == 2


def test_pnet_msa_birnn_inference_in_chunks_equals_one_pass(monkeypatch):
    model = build_model({"name": "pnet_msa_birnn", "width": 8, "num_modules": 3}).eval()
    with torch.no_grad():  # BatchNorm statistics away from their initial values
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(11, 3, 16, 16)
    with torch.no_grad():
        fused, _ = model.cnn(x, return_all=True)
        whole = model.rnn(fused.exp()[:, 1:])
    monkeypatch.setattr(type(model), "inference_chunk", 4)  # 11 slices -> 4 + 4 + 3
    calls = []
    model.cnn.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    with torch.inference_mode():
        chunked = model(x)
    assert calls == [4, 4, 3]
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def test_bf16_autocast():
    model = build_model({"name": "pnet_msa_birnn", "width": 8, "num_modules": 2})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(3, 3, 16, 16))
    logits.float().sum().backward()
    assert torch.isfinite(logits.float()).all()


@pytest.mark.realdata
@pytest.mark.slow
def test_pnet_msa_birnn_overfits_liver_slices_of_real_ct():
    x, target = liver_slices(first=88, count=6)
    model = build_model({"name": "pnet_msa_birnn", "width": 12, "num_modules": 3})
    start, cpu = time.perf_counter(), time.process_time()
    dice, steps = overfit(model, x, target, lr=1e-2, max_steps=120)
    print(
        f"PNet-MSA + BiConvLSTM (width 12, 3 modules, 6 slices) liver Dice {dice:.3f} after {steps} steps, "
        f"{time.perf_counter() - start:.1f} s wall, {time.process_time() - cpu:.1f} s CPU"
    )
    assert dice >= 0.9
