"""``cnn_crf``: a 3D CNN followed by a trainable CRF-RNN, trained end to end (bladder stage 2).

    build_model({"name": "cnn_crf", "in_channels": 2, "num_classes": 2,
                 "cnn": {"name": "vnet", "batch_norm": true, "width": 16},
                 "crf": {"theta_alpha": 4, "theta_beta": 15, "theta_gamma": 2, "num_iterations": 3},
                 "spacing": [z, y, x], "feature_channels": [0]})

The CRF's appearance features are the given input channels (the bladder paper: the CT channel),
positions use ``spacing`` (the network grid's, mm). Stage-1 weights load into ``cnn.*`` (see
:func:`SegDeepLib.training.setup.load_initial_weights`, which matches keys by suffix).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from SegDeepLib.models.registry import build_model, register_model


@register_model("cnn_crf")
class CNNCRF(nn.Module):
    spatial_dims = 3

    def __init__(self, in_channels: int = 1, num_classes: int = 2, cnn: dict[str, Any] | None = None,
                 crf: dict[str, Any] | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                 feature_channels: Sequence[int] | None = None) -> None:
        super().__init__()
        from SegDeepLib.crf import CRFRNN

        cnn = dict(cnn or {"name": "vnet"})
        self.cnn = build_model({**cnn, "in_channels": in_channels, "num_classes": num_classes})
        self.crf = CRFRNN(num_classes, **(crf or {}))
        self.spacing = [float(s) for s in spacing]
        self.feature_channels = list(feature_channels) if feature_channels is not None else list(range(in_channels))

    def output_size(self, size: Sequence[int]) -> tuple[int, ...]:
        return tuple(self.cnn.output_size(size)) if hasattr(self.cnn, "output_size") else tuple(size)

    def valid_input_size(self, size: Sequence[int]) -> tuple[int, ...]:
        return tuple(self.cnn.valid_input_size(size)) if hasattr(self.cnn, "valid_input_size") else tuple(size)

    def forward(self, x: torch.Tensor, return_all: bool = False):
        unaries = self.cnn(x)
        refined = self.crf(unaries.float(), x[:, self.feature_channels].float(), self.spacing)
        return (refined, [unaries]) if return_all else refined
