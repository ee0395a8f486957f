"""Shared test helpers: a tiny phantom dataset in the MSD layout and a tiny registered network."""

from __future__ import annotations

import json
from pathlib import Path

import SimpleITK as sitk
import torch
from torch import nn

from SegDeepLib.models import register_model
from SegDeepLib.preprocessing import make_phantom


@register_model("test_tiny3d")
class TinyNet3D(nn.Module):
    """Two convolutions, no batch norm (so DDP equals a single process exactly)."""

    spatial_dims = 3

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(in_channels, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv3d(width, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def output_size(self, size):
        return tuple(size)

    def valid_input_size(self, size):
        return tuple(size)


@register_model("test_tiny2d")
class TinyNet2D(nn.Module):
    spatial_dims = 2

    def __init__(self, in_channels: int = 3, num_classes: int = 2, width: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


PHANTOM_LABELS = {"0": "background", "1": "liver", "2": "spleen", "3": "kidney_right", "4": "kidney_left",
                  "5": "pancreas", "6": "urinary_bladder"}


def make_msd_dataset(root: Path, cases: int = 3, shape=(20, 32, 32), spacing=(6.0, 9.0, 9.0),
                     labels_present: dict | None = None) -> Path:
    """Phantom cases written as an MSD dataset (dataset.json + imagesTr/labelsTr)."""
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for i in range(cases):
        ct, lab = make_phantom(shape, spacing, seed=i)
        sitk.WriteImage(ct, str(root / "imagesTr" / f"case{i}.nii.gz"))
        sitk.WriteImage(lab, str(root / "labelsTr" / f"case{i}.nii.gz"))
        training.append({"image": f"./imagesTr/case{i}.nii.gz", "label": f"./labelsTr/case{i}.nii.gz"})
    meta = {"name": "phantom", "modality": {"0": "CT"}, "labels": PHANTOM_LABELS, "training": training}
    if labels_present:
        meta["labels_present"] = labels_present
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def tiny_config(root: Path, out: Path, **sections) -> dict:
    """A config dict training the tiny 3D net on the phantom dataset for a few steps."""
    config = {
        "name": "tiny",
        "output_dir": str(out),
        "seed": 3,
        "data": {"root": str(root), "labels": ["liver", "spleen"], "folds": 3, "fold": 0,
                 "preprocessing": {"intensity": {"kind": "window", "window": [-200, 300]}}},
        "sampling": {"patch_size": [8, 16, 16], "foreground_fraction": 0.5},
        "augmentation": {"enabled": False},
        "model": {"name": "test_tiny3d", "width": 4},
        "loss": {"name": "dice_ce"},
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": 2, "steps_per_epoch": 4, "batch_size": 2, "checkpoint_every_steps": 2,
                     "progress_bar": False},
        "validation": {"tile_size": [8, 16, 16], "overlap": 0.0},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config
