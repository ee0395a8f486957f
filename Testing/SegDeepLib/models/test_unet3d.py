"""3D U-Net (same and valid): paper parameter counts and sizes, centred valid output, size
helpers, memory formats, autocast, and overfitting a real CT crop."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from SegDeepLib.errors import SegDeepError
from SegDeepLib.models import build_model
from SegDeepLib.models.blocks import count_parameters
from SegDeepLib.models.unet3d import UNet3D

CICEK_PARAMETERS = 19_069_955  # Çiçek et al. 2016 (3 input channels, 3 labels)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_paper_parameter_count(padding):
    model = build_model({"name": "unet3d", "in_channels": 3, "num_classes": 3, "padding": padding})
    count = count_parameters(model)
    print(f"3D U-Net ({padding}): {count:,} parameters (Çiçek: {CICEK_PARAMETERS:,})")
    assert abs(count - CICEK_PARAMETERS) / CICEK_PARAMETERS < 0.10
    assert 18e6 < count_parameters(UNet3D(in_channels=1, num_classes=8)) < 20e6  # tutorial ~19M


def test_layout_follows_cicek():
    model = UNet3D(in_channels=3, num_classes=3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d) and m.kernel_size == (3,) * 3]
    assert [c.out_channels for c in convs[:8]] == [32, 64, 64, 128, 128, 256, 256, 512]
    assert [c.in_channels for c in convs[8::2]] == [768, 384, 192]  # up-conv keeps channels
    assert [c.out_channels for c in convs[8:]] == [256, 256, 128, 128, 64, 64]
    assert sum(isinstance(m, nn.BatchNorm3d) for m in model.modules()) == len(convs) == 14
    assert sum(isinstance(m, nn.MaxPool3d) for m in model.modules()) == 1  # reused 3 times
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose3d)]
    assert [(m.kernel_size, m.stride) for m in ups] == [((2, 2, 2), (2, 2, 2))] * 3


def test_valid_paper_input_gives_paper_output():
    model = UNet3D(width=1, padding="valid").eval()  # sizes do not depend on the width
    assert model.output_size((132, 132, 116)) == (44, 44, 28)
    with torch.no_grad():
        out = model(torch.randn(1, 1, 132, 132, 116))
    assert out.shape == (1, 2, 44, 44, 28)


def test_valid_sizes_match_the_closed_form():
    # Four levels of valid 3x3x3 convs: accepted sides are 92 + 8 m, output = input - 88.
    model = UNet3D(padding="valid")
    for side in [1, 50, 92, 93, 99, 100, 101, 132, 133, 250]:
        expected = max(92, 92 + 8 * math.ceil((side - 92) / 8))
        assert model.valid_input_size((side, 1, 1))[0] == expected
        assert model.output_size((expected,) * 3) == (expected - 88,) * 3
        if side != expected:
            with pytest.raises(SegDeepError, match="valid_input_size"):
                model.output_size((side, 92, 92))


def test_valid_output_is_the_centre_of_the_input():
    # Shifting the input window by 8 voxels (one level-3 voxel) shifts the output by 8: the
    # output of a 92-voxel window equals the matching part of the output of a 100-voxel window.
    torch.manual_seed(0)
    model = UNet3D(width=2, padding="valid").eval()
    x = torch.randn(1, 1, 100, 92, 92)
    with torch.no_grad():
        full = model(x)  # (1, 2, 12, 4, 4): input voxels 44..55 along z
        part = model(x[:, :, 8:])  # input voxels 8+44..8+47 = 52..55
    assert full.shape[2:] == (12, 4, 4)
    assert torch.allclose(full[:, :, 8:], part, atol=1e-5)


def test_same_padding_keeps_the_grid():
    model = UNet3D(in_channels=2, num_classes=4, width=2).eval()
    assert model.valid_input_size((9, 16, 17)) == (16, 16, 24)
    assert model.output_size((16, 16, 24)) == (16, 16, 24)
    with torch.no_grad():
        out = model(torch.randn(2, 2, 16, 16, 24))
    assert out.shape == (2, 4, 16, 16, 24)
    with pytest.raises(SegDeepError, match="not accepted"):
        model(torch.randn(1, 2, 16, 16, 20))
    with pytest.raises(SegDeepError, match="channel"):
        model(torch.randn(1, 1, 16, 16, 16))
    with pytest.raises(SegDeepError, match="padding"):
        build_model({"name": "unet3d", "padding": "full"})


@pytest.mark.parametrize("padding,size", [("same", (8, 16, 16)), ("valid", (44, 44, 48))])
def test_channels_last_3d_and_autocast(padding, size):
    model = UNet3D(num_classes=3, width=4, depth=2, padding=padding).eval()
    x = torch.randn(1, 1, *size)
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


def test_every_parameter_gets_a_gradient():
    model = UNet3D(num_classes=3, width=2, depth=2)
    model(torch.randn(2, 1, 8, 8, 8)).logsumexp(1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_overfits_a_real_ct_crop(padding):
    from Testing.SegDeepLib.models._overfit3d import CROP_SIZE, abdomen_crop, overfit

    torch.manual_seed(0)
    depth = 3 if padding == "same" else 2  # valid depth 3 would need a 88-voxel margin
    model = UNet3D(num_classes=3, width=4, depth=depth, padding=padding)
    need = model.valid_input_size(CROP_SIZE) if padding == "same" else _valid_input(model)
    x, target = abdomen_crop(tuple((n - c) // 2 for n, c in zip(need, CROP_SIZE)))
    dice, steps, seconds = overfit(model, x, target, max_steps=150)
    print(
        f"3D U-Net {padding} w4 d{depth}: Dice bladder/hips {dice[0]:.3f}/{dice[1]:.3f}, "
        f"{steps} steps, {seconds:.1f} s"
    )
    assert min(dice) >= 0.9


def _valid_input(model: UNet3D) -> tuple[int, ...]:
    """Input size whose valid output is exactly the labelled crop."""
    from Testing.SegDeepLib.models._overfit3d import CROP_SIZE

    sizes = []
    for side in CROP_SIZE:
        size = model.valid_input_size((side, side, side))[0]
        while model.output_size((size,) * 3)[0] < side:
            size = model.valid_input_size((size + 1,) * 3)[0]
        assert model.output_size((size,) * 3)[0] == side
        sizes.append(size)
    return tuple(sizes)
