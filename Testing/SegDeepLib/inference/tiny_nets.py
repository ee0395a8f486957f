"""Tiny networks with known outputs for inference tests (registered under ``test_*`` names).

``centres`` nets give class ``k`` the logit ``-scale * (x - c_k)^2`` voxel by voxel, so the argmax is
the nearest centre: an independent numpy computation on the input voxels predicts the label map
exactly. ``margin`` crops the output like a valid-convolution network (output = input - 2 margin);
``spatial_dims=2`` takes slice stacks and reads channel ``channel`` (the middle slice by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from SegDeepLib.io.labels import LabelTable
from SegDeepLib.io.model_folder import save_model_folder
from SegDeepLib.models import register_model


@register_model("test_centres")
class CentreNet(nn.Module):
    def __init__(
        self,
        centres: Sequence[float] = (0.0, 1.0),
        spatial_dims: int = 3,
        margin: int = 0,
        channel: int = -1,
        scale: float = 1.0,
        multiple: int = 1,
    ) -> None:
        super().__init__()
        self.centres = nn.Parameter(torch.tensor(list(centres), dtype=torch.float32))
        self.spatial_dims, self.margin, self.channel, self.scale = (
            spatial_dims,
            margin,
            channel,
            scale,
        )
        self.multiple = multiple
        self.calls: list[tuple[int, ...]] = []

    def output_size(self, size: Sequence[int]) -> tuple[int, ...]:
        return tuple(int(s) - 2 * self.margin for s in size)

    def valid_input_size(self, size: Sequence[int]) -> tuple[int, ...]:
        m = self.multiple
        return tuple(-(-int(s) // m) * m for s in size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        if any(s % self.multiple for s in x.shape[2:]):
            raise ValueError(f"input {tuple(x.shape)} not a multiple of {self.multiple}")
        channel = x.shape[1] // 2 if self.channel < 0 else self.channel
        value = x[:, channel : channel + 1]
        logits = -self.scale * (value - self.centres.view(1, -1, *[1] * self.spatial_dims)) ** 2
        if self.margin:
            crop = (slice(None), slice(None)) + (
                slice(self.margin, -self.margin),
            ) * self.spatial_dims
            logits = logits[crop]
        return logits


def nearest_centre(values: np.ndarray, centres: Sequence[float]) -> np.ndarray:
    """Independent reference: index of the nearest centre per voxel (ties to the lower index)."""
    distances = np.stack([np.abs(values.astype(np.float64) - c) for c in centres])
    return np.argmin(distances, axis=0)


def make_model_folder(
    folder: Path,
    networks: dict[str, dict[str, Any]],
    organs: Sequence[str],
    preprocessing: dict[str, Any] | None = None,
    inference: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write a model folder for ``test_centres`` networks (weights = their centres)."""
    from SegDeepLib.models import build_model

    spec = {
        "id": folder.name,
        "version": "0.1",
        "title": f"test model {folder.name}",
        "method": "test",
        "modality": "CT",
        "networks": networks,
        "preprocessing": preprocessing or {"spacing": None, "intensity": {"kind": "none"}},
        "labels": LabelTable.from_names(organs, name=folder.name).to_dict(),
        "inference": inference or {"mode": "3d", "tile_size": [8, 8, 8]},
        "training": {"data": "none (hand-set weights)", "cases": 0, "licence": "CC0"},
        "licence": "CC0",
        **extra,
    }
    states = {key: build_model(config).state_dict() for key, config in networks.items()}
    return save_model_folder(folder, spec, states)
