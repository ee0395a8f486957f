"""Grid search of theta_alpha, theta_beta and w1 on validation cases (the paper's procedure)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from SegDeepLib.crf.crfrnn import crf_refine
from SegDeepLib.crf.memory import release_memory
from SegDeepLib.errors import SegDeepError


@dataclass
class ValidationCase:
    """One case: probabilities (L, *sp), features (C, *sp), spacing (mm) and reference labels."""

    probabilities: np.ndarray | torch.Tensor
    features: np.ndarray | torch.Tensor
    spacing: Sequence[float]
    labels: np.ndarray | torch.Tensor


@dataclass
class GridSearchResult:
    """Best parameters, their score and every (params, score) tried (best first)."""

    best: dict
    best_score: float
    baseline_score: float
    table: list[tuple[dict, float]] = field(default_factory=list)


def mean_foreground_dice(pred: np.ndarray, ref: np.ndarray, num_classes: int) -> float:
    """Mean Dice over classes 1..L-1 (a class absent from both counts as 1)."""
    scores = []
    for label in range(1, num_classes):
        a, b = pred == label, ref == label
        total = a.sum() + b.sum()
        scores.append(1.0 if total == 0 else 2.0 * np.logical_and(a, b).sum() / total)
    return float(np.mean(scores))


def _score(cases: Sequence[ValidationCase], params: dict | None) -> float:
    scores = []
    for case in cases:
        probs = torch.as_tensor(case.probabilities)
        if params is not None:
            probs = crf_refine(probs, case.features, case.spacing, **params)
        pred = probs.argmax(0).cpu().numpy()
        scores.append(mean_foreground_dice(pred, np.asarray(case.labels), probs.shape[0]))
    return float(np.mean(scores))


def grid_search(
    cases: Sequence[ValidationCase],
    theta_alpha: Sequence[float] = (2.0, 4.0, 8.0),
    theta_beta: Sequence[float] = (5.0, 15.0, 30.0),
    w1: Sequence[float] = (1.0, 3.0, 5.0, 10.0),
    **fixed,
) -> GridSearchResult:
    """Try every (theta_alpha, theta_beta, w1) on ``cases``; ``fixed`` = other CRF arguments.

    The C++ backend reuses its buffers from run to run; each bandwidth pair has lattices of its
    own size, so the cache fills up (to its limit) during the search: it is emptied at the end.
    """
    if not cases:
        raise SegDeepError("CRF grid search: no validation cases given")
    table = []
    try:
        for ta, tb, w in itertools.product(theta_alpha, theta_beta, w1):
            params = dict(fixed, theta_alpha=float(ta), theta_beta=float(tb), w1=float(w))
            table.append((params, _score(cases, params)))
    finally:
        release_memory()
    table.sort(key=lambda row: -row[1])
    return GridSearchResult(table[0][0], table[0][1], _score(cases, None), table)
