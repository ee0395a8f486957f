"""CRF-RNN: fully connected CRF mean-field inference as a differentiable PyTorch module.

Zheng et al. (ICCV 2015), in 3D as in Xu, Zhou & Liu (IJCARS 2018). With unaries = logits ``U``:

    Q = softmax(U)
    repeat T times:
        Mb = appearance message of Q   (Gaussian over position/theta_alpha and intensity/theta_beta)
        Ms = smoothness message of Q   (Gaussian over position/theta_gamma)
        P  = mu @ (w1 Mb + w2 Ms)      (mu: L x L compatibility, Potts 1 - I initially)
        Q  = softmax(U - P)

Kernels are row-normalised and include the voxel itself; positions are in millimetres (voxel
index times spacing), so anisotropic voxels are handled. The module returns ``U - P`` (logits of
the final Q). The filters of an image are built once and reused for every iteration and for the
backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
import torch
from torch import nn

from SegDeepLib.crf import backends, filters
from SegDeepLib.errors import SegDeepError

Theta = Union[float, Sequence[float]]
PROB_EPS = 1e-8


class CRFRNN(nn.Module):
    """Trainable dense CRF (mean field unrolled ``num_iterations`` times)."""

    def __init__(
        self,
        num_classes: int,
        theta_alpha: float = 4.0,
        theta_beta: Theta = 15.0,
        theta_gamma: float = 2.0,
        w1: float = 5.0,
        w2: float = 3.0,
        num_iterations: int = 5,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise SegDeepError(f"CRFRNN: num_classes={num_classes}; need at least 2")
        if num_iterations < 0:
            raise SegDeepError(f"CRFRNN: num_iterations={num_iterations}; must be >= 0")
        for name, value in (("theta_alpha", theta_alpha), ("theta_gamma", theta_gamma)):
            _check_positive(name, [value])
        self.theta_beta = [float(t) for t in np.atleast_1d(theta_beta)]
        _check_positive("theta_beta", self.theta_beta)
        if backend not in backends.BACKENDS + ("auto",):
            raise SegDeepError(
                f"CRFRNN: unknown backend '{backend}'; use auto, {', '.join(backends.BACKENDS)}"
            )
        self.num_classes = num_classes
        self.theta_alpha = float(theta_alpha)
        self.theta_gamma = float(theta_gamma)
        self.num_iterations = int(num_iterations)
        self.backend = backend
        self.w1 = nn.Parameter(torch.tensor(float(w1)))
        self.w2 = nn.Parameter(torch.tensor(float(w2)))
        self.compatibility = nn.Parameter(1.0 - torch.eye(num_classes))
        self.last_backend: str | None = None

    def forward(
        self, logits: torch.Tensor, features: torch.Tensor, spacing: Sequence[float]
    ) -> torch.Tensor:
        """Refined logits (N, L, *sp) from ``logits`` (N, L, *sp) and ``features`` (N, C, *sp)."""
        spacing = _check_inputs(logits, features, spacing, self.num_classes, len(self.theta_beta))
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        backend = backends.resolve_backend(self.backend, logits.device)
        self.last_backend = backend
        smooth = backends.smoothness_filter(
            backend, logits.shape[2:], spacing, self.theta_gamma, logits.device, dtype
        )
        outputs = []
        for item in range(logits.shape[0]):
            feats = backends.bilateral_features(
                features[item].detach(), spacing, self.theta_alpha, self.theta_beta
            )
            appearance = backends.appearance_filter(backend, feats, dtype)
            outputs.append(self._mean_field(logits[item].to(dtype), appearance, smooth))
        return torch.stack(outputs, 0)

    def _mean_field(
        self,
        unary: torch.Tensor,
        appearance: filters.MessageFilter,
        smooth: filters.MessageFilter,
    ) -> torch.Tensor:
        """Mean field for one image: ``unary`` (L, *sp) -> refined logits (L, *sp)."""
        shape = unary.shape
        u = unary.reshape(shape[0], -1)
        mu = self.compatibility.to(u.dtype)
        w1, w2 = self.w1.to(u.dtype), self.w2.to(u.dtype)
        out = u
        q = torch.softmax(u, 0)
        for _ in range(self.num_iterations):
            msg = filters.weighted_messages(((appearance, w1), (smooth, w2)), q)
            out = u - mu @ msg
            q = torch.softmax(out, 0)
        return out.reshape(shape)


def _check_positive(name: str, values: Sequence[float]) -> None:
    for value in values:
        if not np.isfinite(value) or value <= 0:
            raise SegDeepError(f"CRF: {name}={value}; must be a positive finite number")


def _check_inputs(
    logits: torch.Tensor,
    features: torch.Tensor,
    spacing: Sequence[float],
    num_classes: int,
    num_betas: int,
) -> list[float]:
    """Validate shapes, spacing and finiteness; return the spacing as floats."""
    if logits.ndim not in (4, 5):
        raise SegDeepError(
            f"CRF logits: shape {tuple(logits.shape)}; expected (N, L, H, W) or (N, L, Z, Y, X)"
        )
    if logits.shape[1] != num_classes:
        raise SegDeepError(
            f"CRF logits: {logits.shape[1]} classes; the CRF was built for {num_classes}"
        )
    if features.ndim != logits.ndim or features.shape[0] != logits.shape[0]:
        raise SegDeepError(
            f"CRF features: shape {tuple(features.shape)} does not match logits {tuple(logits.shape)}"
        )
    if features.shape[2:] != logits.shape[2:]:
        raise SegDeepError(
            f"CRF features: grid {tuple(features.shape[2:])} != logits grid {tuple(logits.shape[2:])}"
        )
    if num_betas not in (1, features.shape[1]):
        raise SegDeepError(
            f"CRF theta_beta: {num_betas} values for {features.shape[1]} feature channels"
        )
    spacing = [float(s) for s in spacing]
    if len(spacing) != logits.ndim - 2:
        raise SegDeepError(
            f"CRF spacing: {spacing}; need one value per spatial axis ({logits.ndim - 2})"
        )
    _check_positive("spacing", spacing)
    if logits.numel() == 0:
        raise SegDeepError("CRF logits: empty tensor")
    if not torch.isfinite(logits).all() or not torch.isfinite(features).all():
        raise SegDeepError("CRF input: logits or features contain NaN/Inf; clean the input first")
    return spacing


def crf_refine(
    probabilities: torch.Tensor | np.ndarray,
    features: torch.Tensor | np.ndarray,
    spacing: Sequence[float],
    **params,
) -> torch.Tensor:
    """Post-process probabilities (L, *sp) or (N, L, *sp) with a dense CRF; returns probabilities.

    ``features``: (C, *sp) or (N, C, *sp) (e.g. the CT in HU). ``params``: the :class:`CRFRNN`
    arguments (theta_alpha, theta_beta, theta_gamma, w1, w2, num_iterations, backend).
    """
    probs = torch.as_tensor(probabilities)
    feats = torch.as_tensor(features)
    batched = probs.ndim == len(spacing) + 2
    if not batched:
        probs, feats = probs[None], feats[None]
    probs = probs.to(torch.float64 if probs.dtype == torch.float64 else torch.float32)
    if not torch.isfinite(probs).all() or (probs < 0).any():
        raise SegDeepError("CRF probabilities: must be finite and non-negative")
    probs = probs / probs.sum(1, keepdim=True).clamp_min(PROB_EPS)
    logits = torch.log(probs.clamp_min(PROB_EPS))
    crf = CRFRNN(probs.shape[1], **params).to(probs.device)
    with torch.no_grad():
        out = torch.softmax(crf(logits, feats.to(probs.device, probs.dtype), spacing), 1)
    return out if batched else out[0]
