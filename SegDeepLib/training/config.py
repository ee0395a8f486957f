"""The one declarative training config: typed dataclasses <-> YAML, with ``key.sub=value`` overrides.

A config is data only (no expressions). ``load_config(path_or_dict, overrides)`` validates types and
keys; :func:`check_config` checks values (ranges, choices) before any long work starts.
Model and loss sections are passed to ``build_model`` / ``build_loss`` unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from SegDeepLib.errors import SegDeepError
from SegDeepLib.training.schema import apply_overrides, fix_yaml_floats, from_dict, to_dict


@dataclass
class DataConfig:
    """Where the cases are and how they become network arrays."""

    root: str = ""
    format: Literal["auto", "msd", "nnunet", "segnrrd"] = "auto"
    labels: list[str] = field(default_factory=list)  # names to train (classes 1..K-1); [] = all
    cases: list[str] | None = None  # subset of case ids (None = all)
    split_file: str | None = None  # default <output_dir>/splits.json (editable)
    folds: int = 5
    fold: int = 0  # -1 = train on every case, validate on none
    cache_dir: str | None = None  # default <output_dir>/cache
    preprocessing: dict[str, Any] = field(default_factory=dict)  # SegDeepLib.preprocessing spec
    region_from: str | None = None  # model folder of a previous stage -> C2 region per case
    region_dilation_mm: float = 10.0
    num_workers: int = 0


@dataclass
class SamplingConfig:
    """How training samples are drawn from the cached cases."""

    mode: Literal["patch3d", "slices2d", "sequence2d"] = "patch3d"
    patch_size: list[int] = field(default_factory=lambda: [64, 64, 64])  # (Z, Y, X); 2D: (Y, X)
    foreground_fraction: float = 0.33  # share of samples centred on a (class-balanced) label voxel
    in_region: bool = True  # centres inside the candidate region (C1/C2) when the case has one
    context_slices: int = 3  # slices2d: adjacent slices stacked as channels
    sequence_length: int = 8  # sequence2d: consecutive slices per sample


@dataclass
class AugmentConfig:
    """Random spatial and intensity transforms (see :mod:`SegDeepLib.data.augment`)."""

    enabled: bool = True
    elastic_probability: float = 0.0
    elastic_grid_spacing: int = 32  # control-point spacing (voxels)
    elastic_max_displacement: float = 4.0  # voxels
    in_plane_only: bool = False  # spatial transforms in the (Y, X) plane only
    rotation_deg: float = 0.0
    scale_range: list[float] = field(default_factory=lambda: [1.0, 1.0])
    translation_vox: float = 0.0
    affine_probability: float = 0.0
    flip_axes: list[int] = field(default_factory=list)  # array axes (0=Z, 1=Y, 2=X) to flip at p=0.5
    noise_std: float = 0.0
    blur_sigma: list[float] = field(default_factory=lambda: [0.0, 0.0])
    gamma_range: list[float] = field(default_factory=lambda: [1.0, 1.0])
    brightness: float = 0.0  # additive shift range +-
    contrast_range: list[float] = field(default_factory=lambda: [1.0, 1.0])
    intensity_probability: float = 0.0
    # contrast-enhancement simulation: label name -> largest shift in network-input units (window
    # [-200, 300] HU -> [0, 1]: 0.3 = 150 HU), all scaled by one U(0, 1) draw, with this probability
    class_shift: dict[str, float] = field(default_factory=dict)
    class_shift_probability: float = 0.0
    class_shift_cap: float | None = None  # shifted values stop there (1.0 for a window -> [0, 1])


@dataclass
class OptimizerConfig:
    name: Literal["sgd", "adam", "adamw", "rmsprop"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False


@dataclass
class ScheduleConfig:
    name: Literal["fixed", "poly", "cosine"] = "fixed"
    power: float = 0.9  # poly
    min_lr: float = 0.0  # cosine


@dataclass
class GrowthConfig:
    """Layer-wise training: raise ``model.<attribute>`` when the training loss plateaus."""

    attribute: str = ""  # e.g. "active_modules"; "" disables growth
    maximum: int = 0
    patience_epochs: int = 2
    min_delta: float = 1e-3


@dataclass
class TrainingConfig:
    epochs: int = 10
    steps_per_epoch: int = 50
    batch_size: int = 2  # global batch (split across DDP processes)
    grad_clip: float | None = None
    precision: Literal["fp32", "amp", "bf16"] = "fp32"  # amp: CUDA autocast fp16; bf16: autocast
    compile: bool = False
    device: str = "auto"
    num_threads: int | None = None  # CPU threads for torch (1 is fastest on an oversubscribed machine)
    deterministic: bool = True
    checkpoint_every_steps: int = 50
    init_from: str | None = None  # model folder or checkpoint (fine-tuning / stage 2)
    init_strict: bool = False  # False: skip weights whose shapes differ (new label set)
    early_stopping_patience: int | None = None  # validations without improvement
    growth: GrowthConfig = field(default_factory=GrowthConfig)
    progress_bar: bool = True


@dataclass
class ValidationConfig:
    every_epochs: int = 1
    max_cases: int | None = None
    tile_size: list[int] | None = None  # default: sampling.patch_size
    overlap: float = 0.25
    pad_mode: Literal["constant", "replicate"] = "constant"  # voxels beyond the volume (also exported)


@dataclass
class ExportConfig:
    folder: str | None = None  # default <output_dir>/model
    id: str = ""
    title: str = ""
    method: str = ""
    modality: str = "CT"
    half: bool = False
    inference: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """The whole training config (one YAML file)."""

    name: str = "segdeep"
    output_dir: str = "runs/segdeep"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    model: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=lambda: {"name": "dice_ce"})
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    @property
    def out(self) -> Path:
        return Path(self.output_dir)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


ConfigSource = Union[str, os.PathLike, dict, TrainConfig]


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping with a clear error for missing files and syntax errors."""
    path = Path(path)
    if not path.is_file():
        raise SegDeepError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SegDeepError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise SegDeepError(f"{path}: the config must be a mapping of sections")
    return fix_yaml_floats(data)


def load_config(source: ConfigSource, overrides: list[str] | None = None) -> TrainConfig:
    """YAML path / dict / TrainConfig + overrides -> a checked :class:`TrainConfig`."""
    if isinstance(source, TrainConfig):
        data = source.to_dict()
    elif isinstance(source, dict):
        data = fix_yaml_floats(source)
    else:
        data = read_yaml(source)
    data = apply_overrides(data, list(overrides or []))
    config = from_dict(TrainConfig, data)
    check_config(config)
    return config


def save_config(config: TrainConfig, path: str | os.PathLike) -> None:
    from SegDeepLib.io.atomic import atomic_write

    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _require(condition: bool, key: str, problem: str) -> None:
    if not condition:
        raise SegDeepError(f"config key '{key}': {problem}")


def check_config(c: TrainConfig) -> None:
    """Value checks that need no data (ranges, sizes, names)."""
    _require(bool(c.data.root), "data.root", "missing; set the dataset folder")
    _require(c.data.folds >= 2, "data.folds", "needs at least 2 folds")
    _require(-1 <= c.data.fold < c.data.folds, "data.fold", f"must be in -1..{c.data.folds - 1}")
    _require(c.data.num_workers >= 0, "data.num_workers", "must be >= 0")
    from SegDeepLib.core.preprocessing_spec import validate_spec

    validate_spec(c.data.preprocessing or None)
    _require(bool(c.model.get("name")), "model.name", "missing; e.g. vnet, unet3d, pnet_msa")
    _require(bool(c.loss.get("name")), "loss.name", "missing; e.g. dice, dice_ce, jaccard")
    dims = 3 if c.sampling.mode == "patch3d" else 2
    size = c.sampling.patch_size
    _require(len(size) == dims and all(s > 0 for s in size), "sampling.patch_size",
             f"needs {dims} positive sizes for mode {c.sampling.mode}")
    _require(0 <= c.sampling.foreground_fraction <= 1, "sampling.foreground_fraction", "must be in [0, 1]")
    _require(c.sampling.context_slices % 2 == 1, "sampling.context_slices", "must be odd (e.g. 3)")
    _require(c.optimizer.lr > 0, "optimizer.lr", "must be > 0")
    a = c.augmentation
    _require(0 <= a.class_shift_probability <= 1, "augmentation.class_shift_probability", "must be in [0, 1]")
    unknown = sorted(set(a.class_shift) - set(c.data.labels)) if c.data.labels else []
    _require(not unknown, "augmentation.class_shift", f"{unknown} not in data.labels {c.data.labels}")
    t = c.training
    for key, value in (("epochs", t.epochs), ("steps_per_epoch", t.steps_per_epoch),
                       ("batch_size", t.batch_size), ("checkpoint_every_steps", t.checkpoint_every_steps)):
        _require(value > 0, f"training.{key}", "must be > 0")
    _require(c.validation.every_epochs > 0, "validation.every_epochs", "must be > 0")
    _require(0 <= c.validation.overlap < 1, "validation.overlap", "must be in [0, 1)")
    a = c.augmentation
    for key in ("scale_range", "blur_sigma", "gamma_range", "contrast_range"):
        pair = getattr(a, key)
        _require(len(pair) == 2 and pair[0] <= pair[1], f"augmentation.{key}", "needs [lo, hi] with lo <= hi")
    _require(all(ax in (0, 1, 2) for ax in a.flip_axes), "augmentation.flip_axes", "axes are 0, 1, 2")
    _require(a.elastic_grid_spacing > 0, "augmentation.elastic_grid_spacing", "must be > 0")
