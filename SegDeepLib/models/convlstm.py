"""Bidirectional convolutional LSTM over a slice sequence (pancreas paper, eqs 5-10; Shi 2015).

One ConvLSTM layer per direction reads the sequence of per-slice probability maps Y_tau
(top-down: tau = 1..S, bottom-up: tau = S..1), each with its own weights:

    I_tau = sigma(W_yi * Y_tau + W_hi * H_(tau-1) + W_ci . C_(tau-1) + b_i)     (5)
    F_tau = sigma(W_yf * Y_tau + W_hf * H_(tau-1) + W_cf . C_(tau-1) + b_f)     (6)
    C_tau = F_tau . C_(tau-1) + I_tau . tanh(W_yc * Y_tau + W_hc * H_(tau-1) + b_c)   (7)
    O_tau = sigma(W_yo * Y_tau + W_ho * H_(tau-1) + W_co . C_tau + b_o)         (8)
    H_tau = O_tau . tanh(C_tau)                                                  (9)

with ``*`` a (same-padded) convolution, ``.`` the Hadamard product and H_0 = C_0 = 0. The eight
convolutions W_y*, W_h* are stored as one convolution over the concatenation [Y_tau, H_(tau-1)]
(mathematically identical; one bias per gate). Peephole weights W_c* are per hidden channel
(broadcast over the image) by default so that the layer accepts any image size; pass
``peephole_size=(H, W)`` for Shi's full per-pixel Hadamard weights (then only that size works).

Combination (eq. 10): the paper writes ``Ybar_tau = sum_i lambda^i O^i_tau`` over the two
directions; we combine each direction's layer output H^i_tau (= O^i_tau . tanh(C^i_tau), the
quantity a ConvLSTM layer emits) with learned weights and a bias, per hidden channel. The paper
feeds Ybar to its loss as a probability; here Ybar is read as the **foreground logit** of each
class (background logit 0), so the returned logits are ``[0, Ybar_1, ..., Ybar_(K-1)]`` and
``softmax`` gives sigmoid(Ybar) for K = 2, always in (0, 1) whatever the learned weights.

Inputs are probability maps (N = S slices of one volume as the batch, C = K - 1 foreground
probabilities); for any 2D model use ``softmax(model(x), dim=1)[:, 1:]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from SegDeepLib.errors import SegDeepError
from SegDeepLib.models.pnet_msa import PNetMSA
from SegDeepLib.models.registry import register_model


class ConvLSTMCell(nn.Module):
    """One step of eqs 5-9 (gate order in the stacked convolution: i, f, c, o)."""

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int = 1,
        kernel_size: int = 3,
        peephole_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise SegDeepError(f"convlstm: kernel_size={kernel_size}; use an odd size")
        self.in_channels, self.hidden_channels = in_channels, hidden_channels
        self.conv = nn.Conv2d(
            in_channels + hidden_channels,
            4 * hidden_channels,
            kernel_size,
            padding=kernel_size // 2,
        )
        shape = (hidden_channels, *(tuple(peephole_size) if peephole_size else (1, 1)))
        self.w_ci = nn.Parameter(torch.empty(shape).uniform_(-0.1, 0.1))
        self.w_cf = nn.Parameter(torch.empty(shape).uniform_(-0.1, 0.1))
        self.w_co = nn.Parameter(torch.empty(shape).uniform_(-0.1, 0.1))

    def forward(
        self, y: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(Y_tau, (H_(tau-1), C_(tau-1))) -> (H_tau, C_tau)."""
        h_prev, c_prev = state
        z_i, z_f, z_c, z_o = self.conv(torch.cat([y, h_prev], dim=1)).chunk(4, dim=1)
        i = torch.sigmoid(z_i + self.w_ci * c_prev)
        f = torch.sigmoid(z_f + self.w_cf * c_prev)
        c = f * c_prev + i * torch.tanh(z_c)
        o = torch.sigmoid(z_o + self.w_co * c)
        return o * torch.tanh(c), c

    def initial_state(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """H_0 = C_0 = 0 shaped like one step's hidden state for input ``y`` (B, C, H, W)."""
        zeros = y.new_zeros((y.shape[0], self.hidden_channels, *y.shape[2:]))
        return zeros, zeros


class ConvLSTM(nn.Module):
    """One ConvLSTM layer run over a sequence (B, S, C, H, W) -> hidden states (B, S, h, H, W)."""

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int = 1,
        kernel_size: int = 3,
        peephole_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.cell = ConvLSTMCell(in_channels, hidden_channels, kernel_size, peephole_size)

    def forward(self, sequence: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """Run tau = 1..S (or S..1 with ``reverse``); output aligned with the input order."""
        order = range(sequence.shape[1] - 1, -1, -1) if reverse else range(sequence.shape[1])
        state = self.cell.initial_state(sequence[:, 0])
        outputs: list[torch.Tensor | None] = [None] * sequence.shape[1]
        for tau in order:
            state = self.cell(sequence[:, tau], state)
            outputs[tau] = state[0]
        return torch.stack(outputs, dim=1)


@register_model("biconvlstm")
class BiConvLSTM(nn.Module):
    """Bidirectional ConvLSTM refinement of per-slice probability maps (paper eq. 10).

    ``forward(x)`` takes the S slices of one volume as the batch, x (S, C, H, W) with C =
    ``in_channels`` probability maps, and returns logits (S, K, H, W). ``forward_sequences``
    takes a batch of sequences (B, S, C, H, W) and returns (B, S, K, H, W).

    Args:
        num_classes: K >= 2; the layers have K - 1 hidden channels (1 at paper settings).
        in_channels: probability maps per slice (default K - 1, the foreground probabilities).
        kernel_size: ConvLSTM convolution size (3 at paper settings).
        peephole_size: (H, W) for per-pixel peephole weights; default per-channel (any size).
        passthrough_init: start close to passing the input through (see :func:`_passthrough_init`)
            so that end-to-end training begins from the CNN's own segmentation.
    """

    spatial_dims = 2

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int | None = None,
        kernel_size: int = 3,
        peephole_size: Sequence[int] | None = None,
        passthrough_init: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise SegDeepError(f"biconvlstm: num_classes={num_classes}; use at least 2")
        hidden = num_classes - 1
        self.num_classes = num_classes
        self.in_channels = hidden if in_channels is None else int(in_channels)
        self.top_down = ConvLSTM(self.in_channels, hidden, kernel_size, peephole_size)
        self.bottom_up = ConvLSTM(self.in_channels, hidden, kernel_size, peephole_size)
        self.direction_weights = nn.Parameter(torch.ones(2, hidden, 1, 1))
        self.bias = nn.Parameter(torch.zeros(hidden, 1, 1))
        if passthrough_init and self.in_channels == hidden:
            _passthrough_init(self.top_down.cell)
            _passthrough_init(self.bottom_up.cell)

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        return tuple(int(s) for s in input_size)

    def valid_input_size(self, size: Sequence[int]) -> tuple[int, ...]:
        return tuple(int(s) for s in size)

    def forward(self, x: torch.Tensor, return_all: bool = False):
        """Slices of one volume as the batch: (S, C, H, W) -> logits (S, K, H, W)."""
        if x.ndim != 4:
            raise SegDeepError(
                f"biconvlstm: input of shape {tuple(x.shape)}; expected (S, C, H, W)"
            )
        logits = self.forward_sequences(x.unsqueeze(0))[0]
        return (logits, []) if return_all else logits

    def forward_sequences(self, sequences: torch.Tensor) -> torch.Tensor:
        """(B, S, C, H, W) probability maps -> (B, S, K, H, W) logits."""
        if sequences.ndim != 5 or sequences.shape[2] != self.in_channels:
            raise SegDeepError(
                f"biconvlstm: input of shape {tuple(sequences.shape)}; "
                f"expected (B, S, {self.in_channels}, H, W)"
            )
        h_down = self.top_down(sequences)
        h_up = self.bottom_up(sequences, reverse=True)
        foreground = self.direction_weights[0] * h_down + self.direction_weights[1] * h_up
        foreground = foreground + self.bias
        background = torch.zeros_like(foreground[:, :, :1])
        return torch.cat([background, foreground], dim=2)


def _passthrough_init(cell: ConvLSTMCell, gain: float = 4.0) -> None:
    """Bias a fresh cell towards H_tau ~ +-(tanh(gain (Y_tau - 0.5))): candidate-memory kernel
    centre tap ``gain`` from input channel j to hidden channel j, candidate bias -gain/2, forget
    bias +1 (the usual LSTM choice). Then sign(Ybar) = sign(Y - 0.5) at the start, i.e. the BiRNN
    initially reproduces the CNN's segmentation and training only has to learn the refinement.
    All weights stay trainable; this is an initialisation, not a constraint."""
    hidden, centre = cell.hidden_channels, cell.conv.kernel_size[0] // 2
    with torch.no_grad():
        for j in range(hidden):
            cell.conv.weight[2 * hidden + j, j, centre, centre] += gain
        cell.conv.bias[2 * hidden : 3 * hidden] = -gain / 2
        cell.conv.bias[hidden : 2 * hidden] = 1.0


@register_model("pnet_msa_birnn")
class PNetMSABiRNN(nn.Module):
    """PNet-MSA followed by the bidirectional ConvLSTM, trained end to end on slice sequences.

    ``forward(x)`` takes one volume's slices as the batch, x (S, in_channels, H, W) in slice order
    (3 adjacent slices as channels, see :func:`stack_adjacent_slices`), and returns the BiRNN
    logits (S, K, H, W). The BiRNN reads PNet-MSA's fused probability map Y (foreground classes).
    With ``return_all`` the auxiliary outputs are [PNet-MSA fused logits log(Y), s_1, .., s_k],
    for the paper's sum of losses. Keyword arguments are those of :class:`PNetMSA` plus
    ``kernel_size`` and ``peephole_size`` of :class:`BiConvLSTM`.
    """

    spatial_dims = 2
    inference_chunk = 16  # slices per PNet-MSA pass at inference (eval mode, no autograd)

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        num_modules: int = 5,
        width: int = 64,
        depth: int = 4,
        num_active_modules: int | None = None,
        kernel_size: int = 3,
        peephole_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.cnn = PNetMSA(in_channels, num_classes, num_modules, width, depth, num_active_modules)
        self.rnn = BiConvLSTM(num_classes, None, kernel_size, peephole_size)

    def grow(self) -> int:
        """Activate the next PNet-MSA unit module (see :meth:`PNetMSA.grow`)."""
        return self.cnn.grow()

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        return self.cnn.output_size(input_size)

    def valid_input_size(self, size: Sequence[int]) -> tuple[int, ...]:
        return self.cnn.valid_input_size(size)

    def forward(self, x: torch.Tensor, return_all: bool = False):
        """(S, C, H, W) slice sequence -> logits (S, K, H, W) (and the auxiliary outputs)."""
        if return_all or self.training or torch.is_grad_enabled():
            fused, scores = self.cnn(x, return_all=True)
        else:  # inference: the 2D network is per slice, so chunks bound its memory exactly
            fused, scores = torch.cat([self.cnn(part) for part in x.split(self.inference_chunk)]), []
        logits = self.rnn(fused.exp()[:, 1:])
        return (logits, [fused, *scores]) if return_all else logits
