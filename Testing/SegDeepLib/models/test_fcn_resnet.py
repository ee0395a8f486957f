"""FCN pre-processor (Table I) + FC-ResNet (Table II): parameter counts, the tables' resolutions and
widths, long skips, end-to-end gradients, and overfitting an ISBI 2012 EM slice."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from SegDeepLib.errors import SegDeepError
from SegDeepLib.models import build_model
from SegDeepLib.models.fcn_resnet import FCNPreprocessor, FCResNet
from Testing.conftest import shared_file
from Testing.SegDeepLib.models.test_pnet_msa import overfit


def table_one_parameters() -> int:
    """Hand count of Table I (3x3 convs with bias; 2x2 merge convs; 1-channel 3x3 output)."""
    conv = lambda cin, cout, k: cin * cout * k * k + cout
    down = [(1, 16), (16, 32), (32, 64), (64, 128), (128, 256)]
    total = sum(conv(a, b, 3) + conv(b, b, 3) for a, b in down)
    for merged, width in [(384, 128), (192, 64), (96, 32), (48, 16)]:
        total += conv(merged, width, 2) + 2 * conv(width, width, 3)
    return total + conv(16, 1, 3)


def within(count: int, paper: float, tolerance: float = 0.10) -> bool:
    return abs(count - paper) <= tolerance * paper


def test_parameter_counts_at_paper_settings():
    counts = {
        "pre-processor": sum(p.numel() for p in FCNPreprocessor().parameters()),
        "FC-ResNet": sum(p.numel() for p in build_model({"name": "fc_resnet"}).parameters()),
        "pipeline": sum(p.numel() for p in build_model({"name": "fcn_resnet"}).parameters()),
    }
    print("parameters at paper settings: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    assert counts["pre-processor"] == table_one_parameters()
    assert within(counts["pre-processor"], 1.8e6)
    assert within(counts["FC-ResNet"], 11e6)
    assert within(counts["pipeline"], 12.8e6)
    convs = [m for m in FCNPreprocessor().modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 23  # "composed of 23 convolutional layers"


def _record_stage_outputs(model: FCResNet, x: torch.Tensor) -> dict[str, tuple[int, int, int]]:
    shapes: dict[str, tuple[int, int, int]] = {}
    stages = {f"down{i + 2}": s for i, s in enumerate(model.down)}
    stages.update({f"up{i + 1}": s for i, s in enumerate(model.up)}, across=model.across)
    hooks = [
        stage.register_forward_hook(
            lambda m, i, o, n=name: shapes.__setitem__(n, tuple(o.shape[1:]))
        )
        for name, stage in stages.items()
    ]
    model(x)
    for hook in hooks:
        hook.remove()
    return shapes


def test_fc_resnet_follows_table_two():
    """Widths and resolutions of Table II (scaled: base width 4, input 64 instead of 512)."""
    model = FCResNet(base_width=4, blocks=(3, 8, 10, 3))
    shapes = _record_stage_outputs(model, torch.randn(1, 1, 64, 64))
    assert shapes["down2"] == (4, 32, 32)
    assert shapes["down3"] == (16, 16, 16) and len(model.down[1]) == 3
    assert shapes["down4"] == (32, 8, 8) and len(model.down[2]) == 8
    assert shapes["down5"] == (64, 4, 4) and len(model.down[3]) == 10
    assert shapes["across"] == (128, 4, 4) and len(model.across) == 3
    # expanding stages work at their twin's resolution/width; the stage then upsamples
    assert shapes["up1"] == (64, 4, 4) and len(model.up[0]) == 10
    assert shapes["up2"] == (32, 8, 8) and len(model.up[1]) == 8
    assert shapes["up3"] == (16, 16, 16) and len(model.up[2]) == 3
    assert shapes["up4"] == (4, 32, 32)


def test_geometry_bad_input_and_return_all():
    model = build_model(
        {"name": "fcn_resnet", "base_width": 4, "preprocessor_width": 4, "blocks": (1, 1, 1, 1)}
    )
    assert model.spatial_dims == 2
    assert model.valid_input_size((100, 16)) == (112, 16)
    assert model.output_size((112, 16)) == (112, 16)
    logits, aux = model(torch.randn(2, 1, 32, 48), return_all=True)
    assert logits.shape == (2, 2, 32, 48) and aux == []
    with pytest.raises(SegDeepError, match="multiple of 16"):
        model(torch.randn(1, 1, 24, 32))
    with pytest.raises(SegDeepError, match="expected"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(SegDeepError):
        build_model({"name": "fc_resnet", "blocks": (1, 1)})
    segmenter = build_model({"name": "fcn_preprocessor", "num_classes": 3, "base_width": 4})
    assert segmenter(torch.randn(1, 1, 16, 16)).shape == (1, 3, 16, 16)


def test_end_to_end_gradient_reaches_preprocessor_and_bf16_autocast():
    model = build_model(
        {"name": "fcn_resnet", "base_width": 4, "preprocessor_width": 4, "blocks": (1, 1, 1, 1)}
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(2, 1, 32, 32))
    assert logits.dtype == torch.bfloat16
    logits.float().sum().backward()
    grad = model.preprocessor.down[0][0].weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def em_crop() -> tuple[torch.Tensor, torch.Tensor]:
    """Raw 128x128 crop of ISBI 2012 training slice 0 (no pre-processing) and its membrane mask."""
    import SimpleITK as sitk

    image = sitk.GetArrayFromImage(
        sitk.ReadImage(str(shared_file("isbi2012-em/train/image/0.png")))
    )
    label = sitk.GetArrayFromImage(
        sitk.ReadImage(str(shared_file("isbi2012-em/train/label/0.png")))
    )
    x = torch.from_numpy(image[:128, :128].astype(np.float32))[None, None]
    membrane = torch.from_numpy((label[:128, :128] == 0).astype(np.int64))[None]
    return x, membrane


@pytest.mark.realdata
@pytest.mark.slow
def test_fcn_resnet_overfits_an_em_slice():
    x, membrane = em_crop()
    assert 0.1 < membrane.float().mean() < 0.4
    model = build_model(
        {"name": "fcn_resnet", "base_width": 8, "preprocessor_width": 8, "blocks": (1, 1, 1, 1)}
    )
    start, cpu = time.perf_counter(), time.process_time()
    dice, steps = overfit(model, x, membrane, lr=3e-3, max_steps=150, deep=False)
    print(
        f"FCN + FC-ResNet (widths 8/8, 1 block per stage) EM membrane Dice {dice:.3f} after "
        f"{steps} steps, {time.perf_counter() - start:.1f} s wall, {time.process_time() - cpu:.1f} s CPU"
    )
    assert dice >= 0.9
