"""PNet-MSA: parameter count, the fusion maths, layer-wise growing, geometry, overfitting a real CT."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from SegDeepLib.errors import SegDeepError
from SegDeepLib.models import build_model
from SegDeepLib.models.pnet_msa import PNetMSA, stack_adjacent_slices
from Testing.conftest import shared_file

CT_DIR = "totalsegmentator-testfiles/ct_abdomen_pelvis_3mm"
LIVER = 5


def expected_parameters(in_ch: int, classes: int, modules: int, width: int, depth: int) -> int:
    """Hand count of the documented design: branches, deconvolutions, fusions, classifiers."""
    conv_bn = lambda cin, cout, k: cin * cout * k * k + 2 * cout
    forward = conv_bn(in_ch, width, 3) + (depth - 1) * conv_bn(width, width, 3)
    forward += (modules - 1) * depth * conv_bn(width, width, 3)
    deconv = sum(width * width * (2**k) ** 2 + width for k in range(1, modules))
    backward = sum(conv_bn((k + 1) * width, width, 1) for k in range(modules))
    classify = modules * (width * classes * 9 + classes)
    return forward + deconv + backward + classify + modules  # + fusion scores


def test_parameter_count_at_paper_settings():
    model = build_model({"name": "pnet_msa"})
    count = sum(p.numel() for p in model.parameters())
    print(f"PNet-MSA parameters at paper settings (5 modules, 64 channels): {count:,}")
    assert count == expected_parameters(3, 2, 5, 64, 4)
    assert count < 3_000_000  # paper: "< 3 million parameters"
    convs = [m for m in model.forward_branches.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5 * 4 and all(
        c.kernel_size == (3, 3) and c.out_channels == 64 for c in convs
    )


def test_fused_output_is_log_of_weighted_probabilities():
    model = PNetMSA(width=8, num_modules=3).eval()
    with torch.no_grad():
        model.fusion_scores.copy_(torch.tensor([0.3, -1.0, 2.0]))
        fused, scores = model(torch.randn(2, 3, 16, 16), return_all=True)
    assert len(scores) == 3 and all(s.shape == (2, 2, 16, 16) for s in scores)
    w = np.exp([0.3, -1.0, 2.0]) / np.exp([0.3, -1.0, 2.0]).sum()
    probs = [torch.softmax(s.double(), 1).numpy() for s in scores]
    expected_y = sum(wk * pk for wk, pk in zip(w, probs))
    np.testing.assert_allclose(fused.exp().double().numpy(), expected_y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(torch.softmax(fused, 1).numpy(), expected_y, rtol=1e-5, atol=1e-6)


def test_paper_objective_with_the_project_losses():
    """Eq. 4, L(Y) + sum_k L(U_k), through the deep-supervision wrapper with the Jaccard loss."""
    from SegDeepLib.losses import build_loss

    model = PNetMSA(width=8, num_modules=3)
    x, target = torch.randn(2, 3, 16, 16), torch.randint(0, 2, (2, 16, 16))
    fused, scores = model(x, return_all=True)
    jaccard = build_loss({"name": "jaccard"})
    objective = build_loss({"name": "deep_supervision", "loss": "jaccard"})((fused, scores), target)
    by_hand = jaccard(fused, target) + sum(jaccard(s, target) for s in scores)
    torch.testing.assert_close(objective, by_hand)
    objective.backward()
    assert model.fusion_scores.grad.abs().sum() > 0  # the fusion weights w_k are learned


def test_grow_keeps_weights_and_earlier_outputs():
    model = PNetMSA(width=8, num_modules=3, num_active_modules=1).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        fused1, scores1 = model(x, return_all=True)
    before = {k: v.clone() for k, v in model.state_dict().items() if k != "active_modules"}
    assert len(scores1) == 1
    assert model.grow() == 2
    with torch.no_grad():
        fused2, scores2 = model(x, return_all=True)
    assert len(scores2) == 2
    torch.testing.assert_close(scores2[0], scores1[0])  # module 1 untouched
    assert not torch.allclose(fused2, fused1)  # module 2 now contributes
    for key, value in model.state_dict().items():
        if key != "active_modules":
            torch.testing.assert_close(value, before[key])
    copy = PNetMSA(width=8, num_modules=3)
    copy.load_state_dict(model.state_dict())
    assert copy.num_active_modules == 2  # the active count travels with the weights
    model.grow()
    with pytest.raises(SegDeepError, match="already active"):
        model.grow()


def test_geometry_and_bad_input():
    model = PNetMSA(width=4, num_modules=5)
    assert model.spatial_dims == 2
    assert model.valid_input_size((100, 33)) == (112, 48)
    assert model.output_size((112, 48)) == (112, 48)
    assert model(torch.randn(1, 3, 16, 32)).shape == (1, 2, 16, 32)
    with pytest.raises(SegDeepError, match="multiple of 16"):
        model(torch.randn(1, 3, 20, 32))
    with pytest.raises(SegDeepError, match="expected"):
        model(torch.randn(1, 1, 16, 16))
    with pytest.raises(SegDeepError):
        build_model({"name": "pnet_msa", "num_classes": 1})
    with pytest.raises(SegDeepError):
        PNetMSA(num_modules=2, num_active_modules=3)


def test_stack_adjacent_slices_matches_clipped_indexing():
    volume = torch.arange(4 * 2 * 3, dtype=torch.float32).reshape(4, 2, 3)
    stacked = stack_adjacent_slices(volume)
    for z in range(4):
        for c, dz in enumerate((-1, 0, 1)):
            torch.testing.assert_close(stacked[z, c], volume[min(max(z + dz, 0), 3)])
    with pytest.raises(SegDeepError):
        stack_adjacent_slices(volume[0])


def test_bf16_autocast_forward_backward():
    model = PNetMSA(width=8, num_modules=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused, scores = model(torch.randn(2, 3, 16, 16), return_all=True)
    assert scores[0].dtype == torch.bfloat16 and fused.dtype == torch.float32
    (fused.sum() + sum(s.float().sum() for s in scores)).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# --- overfitting one real example (shared by test_convlstm) --------------------------------------
def liver_slices(first: int = 88, count: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, 3, 64, 64) adjacent-slice stacks of a liver crop of the TotalSegmentator CT + labels."""
    import SimpleITK as sitk

    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_file(f"{CT_DIR}/example_ct.nii.gz"))))
    seg_path = shared_file(f"{CT_DIR}/example_seg_fast_force_split.nii.gz")
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(seg_path)))
    crop = (slice(first - 1, first + count + 1), slice(16, 80), slice(32, 96))
    volume = torch.from_numpy(np.clip((ct[crop].astype(np.float32) - 40) / 200, -2, 2))
    labels = torch.from_numpy((seg[crop][1:-1] == LIVER).astype(np.int64))
    return stack_adjacent_slices(volume)[1:-1], labels


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    probability = torch.softmax(logits.float(), 1)[:, 1]
    return 1 - 2 * (probability * target).sum() / (probability.sum() + target.sum())


def hard_dice(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> float:
    """Foreground Dice of the arg-max prediction in eval mode."""
    model.eval()
    with torch.no_grad():
        prediction = model(x).argmax(1) == 1
    model.train()
    truth = target == 1
    return float(2 * (prediction & truth).sum() / (prediction.sum() + truth.sum()))


def overfit(model, x, target, lr: float, max_steps: int, deep: bool = True) -> tuple[float, int]:
    """Adam on CE + soft Dice (summed over deep-supervision outputs) until Dice >= 0.9."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    dice = 0.0
    for step in range(1, max_steps + 1):
        fused, aux = model(x, return_all=True) if deep else (model(x), [])
        loss = sum(
            F.cross_entropy(o.float(), target) + soft_dice_loss(o, target) for o in [fused, *aux]
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 10 == 0:
            dice = hard_dice(model, x, target)
            if dice >= 0.9:
                return dice, step
    return dice, max_steps


@pytest.mark.realdata
@pytest.mark.slow
def test_overfits_liver_slices_of_real_ct():
    x, target = liver_slices()
    assert target.float().mean() > 0.05  # the crop really contains liver
    model = build_model({"name": "pnet_msa", "width": 16, "num_modules": 3})
    start, cpu = time.perf_counter(), time.process_time()
    dice, steps = overfit(model, x, target, lr=1e-2, max_steps=80)
    print(
        f"PNet-MSA (width 16, 3 modules) liver Dice {dice:.3f} after {steps} steps, "
        f"{time.perf_counter() - start:.1f} s wall, {time.process_time() - cpu:.1f} s CPU"
    )
    assert dice >= 0.9
