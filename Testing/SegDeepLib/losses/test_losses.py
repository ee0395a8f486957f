"""Every loss against hand-computed values, a brute-force numpy reference, gradcheck, and the
mask / ignore-label / partial-label semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from SegDeepLib.errors import SegDeepError
from SegDeepLib.losses import (
    IGNORE_INDEX,
    BatchDiceLoss,
    ClassBalancedCrossEntropyLoss,
    CrossEntropyLoss,
    DeepSupervisionLoss,
    DiceCELoss,
    JaccardLoss,
    SoftDiceLoss,
    WeightedCrossEntropyLoss,
    available_losses,
    build_loss,
)
from Testing.SegDeepLib.losses import reference as ref

SEGMENTATION_LOSSES = ["ce", "weighted_ce", "cbce", "dice", "batch_dice", "jaccard", "dice_ce"]


def binary_example():
    """Four voxels, foreground probabilities 0.8, 0.4, 0.5, 0.1, target 1, 1, 0, 0."""
    p1 = torch.tensor([0.8, 0.4, 0.5, 0.1], dtype=torch.float64)
    logits = torch.stack([torch.log(1 - p1), torch.log(p1)])[None]  # softmax gives back p1
    target = torch.tensor([[1, 1, 0, 0]])
    return logits, target


# ---------------------------------------------------------------- hand-computed values
L8, L4, L5, L9 = (math.log(v) for v in (0.8, 0.4, 0.5, 0.9))
HAND = {
    "ce": -(L8 + L4 + L5 + L9) / 4,
    # class 1: I = 1.2, P = 1.8, G = 2; class 0: I = 0.5 + 0.9 = 1.4, P = 2.2, G = 2
    "dice": 1 - (2.4 / 3.8 + 2.8 / 4.2) / 2,
    "batch_dice": 1 - 2.4 / 3.8,
    # pancreas eq. 12: (0.8 + 0.4) / (|Y+| = 2 + 0.5 + 0.1)
    "jaccard": 1 - 1.2 / 2.6,
    # balanced classes: lambda_0 = lambda_1 = (1 - 2/4) / 1
    "weighted_ce": -0.5 * (L8 + L4 + L5 + L9) / 4,
    "cbce": -0.5 * (L8 + L4 + L5 + L9) / 4,
}


@pytest.mark.parametrize("name", sorted(HAND))
def test_hand_computed_values(name):
    logits, target = binary_example()
    overlap = name in ("dice", "batch_dice", "jaccard")
    loss = build_loss({"name": name, "smooth": 0.0} if overlap else {"name": name})
    assert float(loss(logits, target)) == pytest.approx(HAND[name], abs=1e-12)


def test_weighted_ce_hand_computed_inside_candidate_region():
    # Voxel 1 outside C: N_C = 3, N_1 = 1, N_0 = 2 -> lambda_1 = 2/3, lambda_0 = 1/3.
    logits, target = binary_example()
    mask = torch.tensor([[True, False, True, True]])
    expected = -(2 / 3 * L8 + 1 / 3 * (L5 + L9)) / 3
    got = WeightedCrossEntropyLoss()(logits, target, mask=mask)
    assert float(got) == pytest.approx(expected, abs=1e-12)


def test_cbce_is_hed_beta_weighting():
    # One foreground voxel of four: beta = |Y-|/|Y| = 3/4 on the foreground, 1/4 on background.
    logits, _ = binary_example()
    target = torch.tensor([[1, 0, 0, 0]])
    expected = -(0.75 * L8 + 0.25 * (math.log(0.6) + L5 + L9)) / 4
    got = ClassBalancedCrossEntropyLoss()(logits, target)
    assert float(got) == pytest.approx(expected, abs=1e-12)


def test_dice_class_weights_and_negative_form():
    logits, target = binary_example()
    d0, d1 = 2.8 / 4.2, 2.4 / 3.8
    loss = SoftDiceLoss(weights=[0.5, 2.0], smooth=0.0)
    assert float(loss(logits, target)) == pytest.approx((0.5 * (1 - d0) + 2 * (1 - d1)) / 2)
    paper = SoftDiceLoss(smooth=0.0, negative=True)  # tutorial paper eq. 2 with w_l = 1
    assert float(paper(logits, target)) == pytest.approx(-(d0 + d1) / 2)
    batch = BatchDiceLoss(smooth=0.0, negative=True)  # FC-ResNet eq. 2, minimum -1
    assert float(batch(logits, target)) == pytest.approx(-d1)


def test_ce_matches_torch_cross_entropy_with_weights_and_ignore():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 5, 6, generator=g)
    target = torch.randint(0, 4, (2, 5, 6), generator=g)
    target[0, :2] = IGNORE_INDEX
    weight = [0.2, 1.0, 3.0, 0.5]
    expected = F.cross_entropy(logits, target, weight=torch.tensor(weight), ignore_index=255)
    got = CrossEntropyLoss(weight=weight)(logits, target)
    assert float(got) == pytest.approx(float(expected), rel=1e-6)


# ---------------------------------------------------------------- brute-force reference
def random_case(seed: int, n: int = 2, k: int = 3, shape=(3, 4, 5), partial: bool = True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, *shape, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, k, (n, *shape), generator=g)
    mask = torch.rand(n, *shape, generator=g) > 0.3
    target[torch.rand(n, *shape, generator=g) < 0.15] = IGNORE_INDEX
    present = None
    if partial:
        present = torch.ones(n, k, dtype=torch.bool)
        present[1, k - 1] = False
        target[1][target[1] == k - 1] = 0  # that case does not annotate the last class
    return logits, target, mask, present


def to_numpy(logits, target, mask, present):
    n, k = logits.shape[:2]
    return (
        logits.detach().reshape(n, k, -1).numpy(),
        target.reshape(n, -1).numpy(),
        None if mask is None else mask.reshape(n, -1).numpy(),
        None if present is None else present.numpy(),
    )


REFERENCES = {
    "ce": (CrossEntropyLoss, lambda *a: ref.ce(*a)),
    "weighted_ce": (WeightedCrossEntropyLoss, lambda *a: ref.weighted_ce(*a)),
    "cbce": (ClassBalancedCrossEntropyLoss, lambda *a: ref.cbce(*a)),
    "dice": (lambda: SoftDiceLoss(smooth=0.0), lambda *a: ref.overlap(*a)),
    "batch_dice": (
        lambda: BatchDiceLoss(smooth=0.0),
        lambda *a: ref.overlap(*a, background=False, batch=True),
    ),
    "jaccard": (
        lambda: JaccardLoss(smooth=0.0),
        lambda *a: ref.overlap(*a, kind="jaccard", background=False),
    ),
    "jaccard_batch_bg": (
        lambda: JaccardLoss(smooth=0.0, batch=True, include_background=True),
        lambda *a: ref.overlap(*a, kind="jaccard", background=True, batch=True),
    ),
    "dice_smooth": (
        lambda: SoftDiceLoss(smooth=0.7, include_background=False),
        lambda *a: ref.overlap(*a, background=False, smooth=0.7),
    ),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize(
    "seed,use_mask,partial", [(0, False, False), (1, True, False), (2, True, True)]
)
def test_matches_bruteforce_reference(name, seed, use_mask, partial):
    logits, target, mask, present = random_case(seed, partial=partial)
    if not use_mask:
        mask = None
    factory, reference = REFERENCES[name]
    got = factory()(logits, target, mask=mask, class_present=present)
    expected = reference(*to_numpy(logits, target, mask, present))
    assert float(got) == pytest.approx(expected, rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------- semantics
@pytest.mark.parametrize("name", SEGMENTATION_LOSSES)
def test_mask_equals_loss_on_the_masked_voxels(name):
    logits, target, mask, _ = random_case(3, n=1, partial=False)
    target[target == IGNORE_INDEX] = 1
    loss = build_loss(name)
    masked = loss(logits, target, mask=mask)
    subset = loss(logits[:, :, mask[0]], target[:, mask[0]])  # the masked voxels as a 1D image
    assert float(masked) == pytest.approx(float(subset), rel=1e-10)
    assert float(masked) != pytest.approx(float(loss(logits, target)), rel=1e-6)


@pytest.mark.parametrize("name", SEGMENTATION_LOSSES)
def test_ignore_label_equals_mask(name):
    logits, target, mask, _ = random_case(4, partial=False)
    target[target == IGNORE_INDEX] = 2
    ignored = target.clone()
    ignored[~mask] = IGNORE_INDEX
    loss = build_loss(name)
    assert float(loss(logits, ignored)) == pytest.approx(float(loss(logits, target, mask=mask)))
    # changing the logits or the labels of ignored voxels changes nothing
    noise = torch.randn(
        logits.shape, dtype=logits.dtype, generator=torch.Generator().manual_seed(4)
    )
    logits2 = torch.where(mask.unsqueeze(1), logits, noise)
    relabelled = torch.where(mask, target, (target + 1) % 3)
    assert float(loss(logits2, relabelled, mask=mask)) == pytest.approx(
        float(loss(logits, target, mask=mask))
    )


@pytest.mark.parametrize("name", SEGMENTATION_LOSSES)
def test_partial_labels_merge_unannotated_classes_into_background(name):
    # One case not annotating class 2 == the 2-class problem with logits (logsumexp(l0, l2), l1),
    # for CE; overlap losses additionally leave class 2 out, which the 2-class problem does too.
    logits, target, _, _ = random_case(5, n=1, partial=False)
    target[(target == 2) | (target == IGNORE_INDEX)] = 0
    present = torch.tensor([[True, True, False]])
    merged = torch.stack([torch.logsumexp(logits[:, [0, 2]], dim=1), logits[:, 1]], dim=1)
    loss = build_loss(name)
    expected = loss(merged, target)
    if name in ("weighted_ce",):  # weights use K - 1 (= 2 here vs 1): a constant factor
        expected = expected / 2
    got = loss(logits, target, class_present=present)
    assert float(got) == pytest.approx(float(expected), rel=1e-10)
    assert float(got) != pytest.approx(float(loss(logits, target)), rel=1e-6)


def test_partial_labels_contradiction_is_an_error():
    logits, target, _, _ = random_case(6, n=1, partial=False)
    target[0, 0, 0, 0] = 2
    with pytest.raises(SegDeepError, match="class_present"):
        CrossEntropyLoss()(logits, target, class_present=torch.tensor([[True, True, False]]))


@pytest.mark.parametrize("name", SEGMENTATION_LOSSES)
def test_all_voxels_ignored_gives_zero_with_graph(name):
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), IGNORE_INDEX)
    value = build_loss(name)(logits, target)
    value.backward()
    assert value.item() == 0.0 and float(logits.grad.abs().sum()) == 0.0


OVERLAP_REFERENCES = [n for n in sorted(REFERENCES) if "dice" in n or "jaccard" in n]


@pytest.mark.parametrize("how", ["mask", "ignore"])
@pytest.mark.parametrize("partial", [False, True])
@pytest.mark.parametrize("name", OVERLAP_REFERENCES)
def test_fully_masked_case_is_left_out_of_overlap_averages(name, partial, how):
    """A case with no valid voxel (e.g. a patch outside a partially labelled case's annotated
    region) must not count: the loss equals the loss of the other cases alone."""
    logits, target, mask, present = random_case(12, n=3, partial=partial)
    if how == "mask":
        mask[1] = False
    else:
        target[1] = IGNORE_INDEX
    factory, reference = REFERENCES[name]
    got = factory()(logits, target, mask=mask, class_present=present)
    keep = [0, 2]
    alone = factory()(
        logits[keep], target[keep], mask=mask[keep],
        class_present=None if present is None else present[keep],
    )
    assert float(got) == pytest.approx(float(alone), rel=1e-12)
    assert float(got) == pytest.approx(reference(*to_numpy(logits, target, mask, present)), rel=1e-9)


@pytest.mark.parametrize("negative", [False, True])
@pytest.mark.parametrize("loss_class", [SoftDiceLoss, JaccardLoss, BatchDiceLoss])
def test_only_fully_masked_cases_give_zero_in_both_forms(loss_class, negative):
    """Nothing valid: 0 with a graph (an empty case "scoring" 1 would give -1 in the negative
    form, and 0 per empty case in the per-case mean)."""
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4))
    value = loss_class(negative=negative, smooth=0.5)(
        logits, target, mask=torch.zeros(2, 4, 4, dtype=torch.bool)
    )
    value.backward()
    assert value.item() == 0.0 and float(logits.grad.abs().sum()) == 0.0


@pytest.mark.parametrize("name", SEGMENTATION_LOSSES)
def test_gradcheck_float64(name):
    logits, target, mask, present = random_case(7, n=2, k=3, shape=(2, 3), partial=True)
    logits.requires_grad_(True)
    loss = build_loss(name)
    assert torch.autograd.gradcheck(
        lambda x: loss(x, target, mask=mask, class_present=present), (logits,)
    )


@pytest.mark.parametrize("name", SEGMENTATION_LOSSES)
def test_perfect_prediction_is_minimal(name):
    target = torch.randint(0, 3, (2, 4, 4, 4), generator=torch.Generator().manual_seed(8))
    good = F.one_hot(target, 3).permute(0, 4, 1, 2, 3).double() * 30
    bad = torch.zeros_like(good)
    loss = build_loss(name)
    assert float(loss(good, target)) < 1e-6 < float(loss(bad, target))


def test_half_precision_logits_give_float32_loss():
    logits, target, mask, _ = random_case(9, partial=False)
    full = SoftDiceLoss()(logits.float(), target, mask)
    half = SoftDiceLoss()(logits.bfloat16(), target, mask)
    assert half.dtype == torch.float32
    assert float(half) == pytest.approx(float(full), abs=2e-2)


# ---------------------------------------------------------------- compound losses
def test_dice_ce_is_the_weighted_sum():
    logits, target, mask, present = random_case(10)
    args = (logits, target, mask, present)
    expected = 0.3 * SoftDiceLoss(smooth=0.1)(*args) + 2.0 * CrossEntropyLoss()(*args)
    got = DiceCELoss(dice={"smooth": 0.1}, dice_weight=0.3, ce_weight=2.0)(*args)
    assert float(got) == pytest.approx(float(expected), rel=1e-12)


def test_deep_supervision_sums_fused_and_weighted_aux_losses():
    logits, target, mask, _ = random_case(11, shape=(4, 6), partial=False)
    aux_same = torch.randn_like(logits)
    aux_small = torch.randn(2, 3, 2, 3, dtype=torch.float64)
    base = JaccardLoss()
    up = F.interpolate(aux_small, size=(4, 6), mode="bilinear", align_corners=False)
    expected = (
        2.0 * base(logits, target, mask)
        + 0.5 * base(aux_same, target, mask)
        + 0.25 * base(up, target, mask)
    )
    loss = DeepSupervisionLoss(base, aux_weights=[0.5, 0.25], fused_weight=2.0)
    got = loss((logits, [aux_same, aux_small]), target, mask)
    assert float(got) == pytest.approx(float(expected), rel=1e-12)
    plain = build_loss({"name": "deep_supervision", "loss": {"name": "jaccard"}})
    assert float(plain(logits, target, mask)) == pytest.approx(float(base(logits, target, mask)))
    with pytest.raises(SegDeepError, match="aux_weights"):
        loss((logits, [aux_same]), target)


def test_deep_supervision_gradcheck():
    logits, target, mask, present = random_case(12, shape=(2, 3))
    aux = torch.randn(2, 3, 1, 2, dtype=torch.float64)
    loss = DeepSupervisionLoss({"name": "dice_ce"}, aux_weights=[0.7])
    inputs = (logits.requires_grad_(True), aux.requires_grad_(True))
    assert torch.autograd.gradcheck(lambda a, b: loss((a, [b]), target, mask, present), inputs)


# ---------------------------------------------------------------- registry and bad input
def test_registry_lists_every_loss():
    assert set(SEGMENTATION_LOSSES) | {"deep_supervision"} <= set(available_losses())


@pytest.mark.parametrize(
    "config,match",
    [({"name": "nope"}, "unknown loss"), ({"name": "dice", "bogus": 1}, "bad parameters")],
)
def test_build_loss_errors(config, match):
    with pytest.raises(SegDeepError, match=match):
        build_loss(config)


@pytest.mark.parametrize(
    "logits,target,kwargs,match",
    [
        (torch.randn(2, 1, 4), torch.zeros(2, 4, dtype=torch.long), {}, "K >= 2"),
        (torch.randn(2, 3, 4), torch.zeros(2, 5, dtype=torch.long), {}, "does not match"),
        (torch.randn(2, 3, 4), torch.zeros(2, 4), {}, "integer"),
        (torch.randn(2, 3, 4), torch.full((2, 4), 3), {}, "outside"),
        (
            torch.randn(2, 3, 4),
            torch.zeros(2, 4, dtype=torch.long),
            {"mask": torch.ones(2, 4)},
            "mask",
        ),
        (
            torch.randn(2, 3, 4),
            torch.zeros(2, 4, dtype=torch.long),
            {"class_present": torch.ones(2, 2, dtype=torch.bool)},
            "class_present",
        ),
    ],
)
def test_bad_input_raises_segdeep_error(logits, target, kwargs, match):
    with pytest.raises(SegDeepError, match=match):
        SoftDiceLoss()(logits, target, **kwargs)


def test_wrong_number_of_class_weights():
    with pytest.raises(SegDeepError, match="class weights"):
        CrossEntropyLoss(weight=[1.0, 2.0])(
            torch.randn(1, 3, 4), torch.zeros(1, 4, dtype=torch.long)
        )


def test_target_with_channel_axis_is_accepted():
    logits, target, _, _ = random_case(13, partial=False)
    loss = SoftDiceLoss()
    assert float(loss(logits, target.unsqueeze(1))) == float(loss(logits, target))


def test_reference_is_consistent_with_numpy_softmax():
    # guard on the reference itself: probabilities sum to one and merged mass is kept
    logits = np.random.default_rng(0).normal(size=(2, 3, 5))
    p = ref.softmax_probs(logits, np.array([[1, 1, 1], [1, 0, 1]], bool))
    assert np.allclose(p[0].sum(0), 1) and np.allclose(p[1, [0, 2]].sum(0), 1)
