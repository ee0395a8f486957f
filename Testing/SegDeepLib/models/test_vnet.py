"""V-Net: paper layout and parameter count, sizes, residual input stage, memory formats,
autocast, and overfitting a real CT crop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from SegDeepLib.errors import SegDeepError
from SegDeepLib.models import build_model
from SegDeepLib.models.blocks import count_parameters
from SegDeepLib.models.vnet import VNet


def paper_vnet_parameters(in_channels: int, num_classes: int, batch_norm: bool) -> int:
    """Parameters of Milletari's V-Net counted from the paper's figure, layer by layer."""

    def conv(cin, cout, k):  # weights + (bias, or BN scale and shift) + PReLU slopes
        return cin * cout * k**3 + (2 * cout if batch_norm else cout) + cout

    total = conv(in_channels, 16, 5)  # level 0: one 5x5x5 conv
    # left stages (channels, convolutions), each entered through a 2x2x2 stride-2 conv
    for cin, ch, n in [(16, 32, 2), (32, 64, 3), (64, 128, 3), (128, 256, 3)]:
        total += conv(cin, ch, 2) + n * conv(ch, ch, 5)
    # right stages: transposed conv to half the stage width, concat, n convs at stage width
    for cin, ch, n in [(256, 256, 3), (256, 128, 3), (128, 64, 2), (64, 32, 1)]:
        total += conv(cin, ch // 2, 2) + n * conv(ch, ch, 5)
    return total + 32 * num_classes + num_classes  # final 1x1x1 conv (with bias)


@pytest.mark.parametrize("batch_norm,in_channels", [(False, 1), (True, 2)])
def test_paper_parameter_count(batch_norm, in_channels):
    model = build_model(
        {"name": "vnet", "in_channels": in_channels, "num_classes": 2, "batch_norm": batch_norm}
    )
    count = count_parameters(model)
    print(f"V-Net (batch_norm={batch_norm}, in={in_channels}): {count:,} parameters")
    assert count == paper_vnet_parameters(in_channels, 2, batch_norm)
    assert 60e6 < count < 70e6  # ~65M (neither the V-Net nor the bladder paper states a count)


def test_layout_follows_the_paper():
    model = VNet(batch_norm=True)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    five = [m for m in convs if m.kernel_size == (5, 5, 5)]
    assert len(five) == 1 + 2 + 3 + 3 + 3 + 3 + 3 + 2 + 1
    downs = [m for m in convs if m.kernel_size == (2, 2, 2)]
    assert [m.stride for m in downs] == [(2, 2, 2)] * 4
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose3d)]
    assert [(m.kernel_size, m.stride) for m in ups] == [((2, 2, 2), (2, 2, 2))] * 4
    assert [m.out_channels for m in five][:1] == [16] and max(m.out_channels for m in five) == 256
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    assert len(bns) == len(convs) + len(ups) - 1  # after every convolution but the classifier
    assert not any(isinstance(m, nn.BatchNorm3d) for m in VNet().modules())
    assert any(isinstance(m, nn.PReLU) for m in model.modules())


@pytest.mark.parametrize("in_channels,width,depth", [(1, 4, 2), (2, 5, 3), (3, 2, 1)])
def test_output_is_logits_on_the_input_grid(in_channels, width, depth):
    model = VNet(in_channels=in_channels, num_classes=3, width=width, depth=depth).eval()
    size = model.valid_input_size((9, 16, 13))
    assert size == tuple(-(-s // 2**depth) * 2**depth for s in (9, 16, 13))
    assert model.output_size(size) == size
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, *size))
    assert out.shape == (2, 3, *size) and torch.isfinite(out).all()
    assert model.spatial_dims == 3


def test_bad_inputs_raise_clear_errors():
    model = VNet(width=2, depth=2)
    with pytest.raises(SegDeepError, match="multiple of 4"):
        model(torch.randn(1, 1, 8, 8, 6))
    with pytest.raises(SegDeepError, match="channel"):
        model(torch.randn(1, 2, 8, 8, 8))
    with pytest.raises(SegDeepError, match="multiple"):
        model.output_size((8, 8, 10))
    with pytest.raises(SegDeepError, match="num_classes"):
        build_model({"name": "vnet", "num_classes": 1})


def test_input_stage_is_residual():
    # With the stage's convolution zeroed and identity PReLU, the input stage returns the input
    # repeated along the channel axis (Milletari's 16 copies), cut to the width.
    model = VNet(in_channels=2, width=5, depth=1)
    stage = model.input_stage
    with torch.no_grad():
        for p in stage.lift.parameters():
            p.zero_()
        stage.act.weight.fill_(1.0)
        x = torch.randn(1, 2, 2, 2, 2)
        out = stage(x)
    assert torch.equal(out, torch.cat([x, x, x], dim=1)[:, :5])


def test_normal_initialisation_of_the_bladder_paper():
    torch.manual_seed(0)
    model = VNet(width=8, depth=2, init_std=0.01)
    big = model.down_stages[-1].convs[0].weight.detach()  # 32 x 32 x 5 x 5 x 5 samples
    assert float(big.std()) == pytest.approx(0.01, rel=0.02)
    assert abs(float(big.mean())) < 1e-3
    assert all(
        float(m.bias.detach().abs().sum()) == 0
        for m in model.modules()
        if hasattr(m, "bias") and isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))
    )
    with pytest.raises(SegDeepError, match="init_std"):
        VNet(init_std=0.0)


def test_every_parameter_gets_a_gradient():
    model = VNet(in_channels=2, num_classes=3, width=2, depth=2, batch_norm=True)
    model(torch.randn(2, 2, 8, 8, 8)).logsumexp(1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_channels_last_3d_and_autocast():
    model = VNet(num_classes=3, width=4, depth=2, batch_norm=True).eval()
    x = torch.randn(1, 1, 8, 12, 16)
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last_3d)(
            x.to(memory_format=torch.channels_last_3d)
        )
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert torch.allclose(cl, ref, atol=1e-5)
    assert low.dtype == torch.bfloat16
    assert torch.allclose(low.float(), ref, atol=0.1 * ref.abs().max().item())


@pytest.mark.slow
@pytest.mark.realdata
def test_overfits_a_real_ct_crop():
    from Testing.SegDeepLib.models._overfit3d import abdomen_crop, overfit

    torch.manual_seed(0)
    x, target = abdomen_crop()
    model = VNet(num_classes=3, width=4, depth=3, batch_norm=True)
    dice, steps, seconds = overfit(model, x, target, max_steps=150)
    print(
        f"V-Net w4 d3 BN: Dice bladder/hips {dice[0]:.3f}/{dice[1]:.3f}, {steps} steps, "
        f"{seconds:.1f} s"
    )
    assert min(dice) >= 0.9
