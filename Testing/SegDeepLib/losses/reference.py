"""Independent brute-force references for the loss tests (plain numpy, voxel by voxel loops).

Written from the papers' formulas, sharing no code with SegDeepLib.losses.
"""

from __future__ import annotations

import math

import numpy as np

IGNORE = 255


def softmax_probs(logits: np.ndarray, present: np.ndarray | None) -> np.ndarray:
    """(N, K, V) probabilities, unannotated classes' mass added to background per case."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    if present is not None:
        p = p.copy()
        for n in range(p.shape[0]):
            for k in range(1, p.shape[1]):
                if not present[n, k]:
                    p[n, 0] += p[n, k]
    return p


def valid_voxels(target: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    valid = target != IGNORE
    return valid if mask is None else valid & mask


def ce(logits, target, mask=None, present=None, weight=None) -> float:
    p = softmax_probs(logits, present)
    valid = valid_voxels(target, mask)
    num = den = 0.0
    for n in range(target.shape[0]):
        for v in range(target.shape[1]):
            if valid[n, v]:
                w = 1.0 if weight is None else weight[target[n, v]]
                num += -w * math.log(p[n, target[n, v], v])
                den += w
    return num / den


def weighted_ce(logits, target, mask=None, present=None) -> float:
    """Roth 2018 eqs. 3-4, weights over the whole batch."""
    p = softmax_probs(logits, present)
    valid = valid_voxels(target, mask)
    k_count = logits.shape[1]
    n_c = int(valid.sum())
    lam = [(1 - int((valid & (target == k)).sum()) / n_c) / (k_count - 1) for k in range(k_count)]
    total = 0.0
    for n, v in zip(*np.nonzero(valid)):
        total += lam[target[n, v]] * math.log(p[n, target[n, v], v])
    return -total / n_c


def cbce(logits, target, mask=None, present=None) -> float:
    """HED class-balanced CE per case (weights 1 - N_k/N), mean over voxels then cases."""
    p = softmax_probs(logits, present)
    valid = valid_voxels(target, mask)
    losses = []
    for n in range(target.shape[0]):
        idx = np.nonzero(valid[n])[0]
        if len(idx) == 0:
            continue
        counts = np.bincount(target[n, idx], minlength=logits.shape[1])
        w = 1 - counts / len(idx)
        losses.append(
            -sum(w[target[n, v]] * math.log(p[n, target[n, v], v]) for v in idx) / len(idx)
        )
    return float(np.mean(losses))


def overlap(
    logits, target, mask=None, present=None, kind="dice", background=True, batch=False, smooth=0.0
) -> float:
    """Mean over scored (case, class) of 1 - Dice (or 1 - Jaccard via eq. 12 for each class)."""
    p = softmax_probs(logits, present)
    valid = valid_voxels(target, mask)
    n_cases, k_count = logits.shape[:2]
    scored = np.ones((n_cases, k_count), bool) if present is None else present.copy()
    scored[:, 0] = background
    scored &= valid.any(axis=1)[:, None]

    def score(cases, k):
        inter = pred = truth = 0.0
        fg_sum, bg_sum = 0.0, 0.0
        for n in cases:
            for v in range(target.shape[1]):
                if not valid[n, v]:
                    continue
                r = 1.0 if target[n, v] == k else 0.0
                inter += p[n, k, v] * r
                pred += p[n, k, v]
                truth += r
                if r:
                    fg_sum += p[n, k, v]
                else:
                    bg_sum += p[n, k, v]
        if kind == "dice":
            return (2 * inter + smooth) / (pred + truth + smooth)
        return (fg_sum + smooth) / (truth + bg_sum + smooth)  # pancreas paper eq. 12

    if batch:
        terms = [
            1 - score([n for n in range(n_cases) if scored[n, k]], k)
            for k in range(k_count)
            if scored[:, k].any()
        ]
        return float(np.mean(terms))
    per_case = []
    for n in range(n_cases):
        terms = [1 - score([n], k) for k in range(k_count) if scored[n, k]]
        if terms:
            per_case.append(np.mean(terms))
    return float(np.mean(per_case))
