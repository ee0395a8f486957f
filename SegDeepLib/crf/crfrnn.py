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
backward pass. Without autograd the mean field runs in buffers allocated once per call; with the
C++ backend they (and the result) come from its block cache (:mod:`SegDeepLib.crf.memory`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Union

import numpy as np
import torch
from torch import nn

from SegDeepLib.core.crf_params import DEFAULTS as CRF_DEFAULTS
from SegDeepLib.crf import backends, filters
from SegDeepLib.errors import SegDeepError

Theta = Union[float, Sequence[float]]
PROB_EPS = 1e-8


class CRFRNN(nn.Module):
    """Trainable dense CRF (mean field unrolled ``num_iterations`` times)."""

    def __init__(
        self,
        num_classes: int,
        theta_alpha: float = CRF_DEFAULTS["theta_alpha"],
        theta_beta: Theta = CRF_DEFAULTS["theta_beta"],
        theta_gamma: float = CRF_DEFAULTS["theta_gamma"],
        w1: float = CRF_DEFAULTS["w1"],
        w2: float = CRF_DEFAULTS["w2"],
        num_iterations: int = int(CRF_DEFAULTS["num_iterations"]),
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
        appearance = partial(
            backends.image_appearance_filter,
            backend,
            spacing=spacing,
            theta_alpha=self.theta_alpha,
            theta_beta=self.theta_beta,
            dtype=dtype,
        )
        if torch.is_grad_enabled():
            outputs = [
                self._mean_field(
                    logits[item].to(dtype), appearance(features[item].detach()), smooth
                )
                for item in range(logits.shape[0])
            ]
            return torch.stack(outputs, 0)
        empty = partial(backends.empty, backend, dtype=dtype, device=logits.device)
        result = empty(logits.shape)
        for item in range(logits.shape[0]):
            filt = appearance(features[item].detach())
            self._mean_field(logits[item].to(dtype), filt, smooth, result[item], empty)
        return result

    def _mean_field(
        self,
        unary: torch.Tensor,
        appearance: filters.MessageFilter,
        smooth: filters.MessageFilter,
        out: torch.Tensor | None = None,
        empty: Callable[[Sequence[int]], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Mean field for one image: ``unary`` (L, *sp) -> refined logits (L, *sp).

        Without autograd the result is written into ``out`` (L, *sp, contiguous) and the work
        buffers come from ``empty(shape)``.
        """
        shape = unary.shape
        u = unary.reshape(shape[0], -1)
        mu = self.compatibility.to(u.dtype)
        w1, w2 = self.w1.to(u.dtype), self.w2.to(u.dtype)
        # Row-normalised messages of a distribution sum to one, so only the first L-1 channels
        # are filtered: with M = [m; total - 1^T m] (total = w1 + w2, m = w1 Mb + w2 Ms of q[:-1]),
        # mu @ M = (mu[:, :-1] - mu[:, -1:]) @ m + total * mu[:, -1:]. On the probability simplex
        # (where softmax outputs live) this is the full message, and so is its gradient there.
        coupling = mu[:, :-1] - mu[:, -1:]
        bias = -(w1 + w2) * mu[:, -1:]
        terms = ((appearance, w1), (smooth, w2))
        if not torch.is_grad_enabled():
            flat = out.view(shape[0], -1)
            _mean_field_inplace(u, bias, coupling, terms, self.num_iterations, flat, empty)
            return out
        out = u
        q = _leading_probabilities(u)
        for _ in range(self.num_iterations):
            out = u + bias
            for filt, weight in terms:
                out = _add_coupled(out, -weight * coupling, filters.apply_filter(filt, q))
            q = _leading_probabilities(out)
        return out.reshape(shape)


def _mean_field_inplace(u, bias, coupling, terms, iterations: int, out, empty) -> torch.Tensor:
    """The mean-field loop of :meth:`CRFRNN._mean_field` without autograd, in reused buffers.

    On large volumes a fresh tensor costs about as much in page faults as the arithmetic done in
    it, so the logits (``out``, (L, N)), probabilities and messages each live in one buffer for
    all iterations, taken from ``empty(shape)`` (uninitialised: each is fully written before it
    is read).
    """
    if iterations == 0:
        return out.copy_(u)
    q = empty((u.shape[0] - 1, u.shape[1]))
    msgs = [empty(q.shape) for _ in terms]
    probs = empty(u.shape) if u.shape[0] > 2 else None
    _leading_probabilities_into(u, q, probs)
    for _ in range(iterations):
        torch.add(u, bias, out=out)
        for (filt, weight), buf in zip(terms, msgs):
            msg = filt.forward_into(q, buf)
            coeff = -weight * coupling
            if coeff.shape[1] == 1:
                out.addcmul_(coeff, msg)
            else:
                out.addmm_(coeff, msg)
        _leading_probabilities_into(out, q, probs)
    return out


def _leading_probabilities_into(
    logits: torch.Tensor, q: torch.Tensor, probs: torch.Tensor | None = None
) -> None:
    """``q[:] = softmax(logits, 0)[:-1]``: a sigmoid for two labels, else the softmax written
    into ``probs`` (shaped like ``logits``; the same kernel as ``torch.softmax``) when given."""
    if logits.shape[0] == 2:
        torch.sub(logits[:1], logits[1:], out=q).sigmoid_()
    elif probs is not None:
        q.copy_(torch._softmax(logits, 0, False, out=probs)[:-1])
    else:
        q.copy_(torch.softmax(logits, 0)[:-1])


def _leading_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """``softmax(logits, 0)[:-1]`` (L-1, N); for two labels a sigmoid of the difference."""
    if logits.shape[0] == 2:
        return torch.sigmoid(logits[:1] - logits[1:])
    return torch.softmax(logits, 0)[:-1]


def _add_coupled(out: torch.Tensor, coeff: torch.Tensor, msg: torch.Tensor) -> torch.Tensor:
    """``out + coeff @ msg`` for coeff (L, L-1) and msg (L-1, N), in one pass over the voxels."""
    if coeff.shape[1] == 1:
        return torch.addcmul(out, coeff, msg)
    return torch.addmm(out, coeff, msg)


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
    if not (_all_finite(logits) and _all_finite(features)):
        raise SegDeepError("CRF input: logits or features contain NaN/Inf; clean the input first")
    return spacing


def _all_finite(x: torch.Tensor) -> bool:
    """True when ``x`` has no NaN/Inf (one min/max pass, no temporary of the tensor's size)."""
    if not x.is_floating_point():
        return True
    lo, hi = torch.aminmax(x.detach())
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


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
