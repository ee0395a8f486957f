"""Everything checked and prepared before the first step: dataset, labels, splits, cache, model.

Problems (missing dataset, unknown label names, bad model parameters, channel/class mismatch) are
raised as one :class:`SegDeepError` here, before any long work starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from SegDeepLib.data.augment import AugmentSettings
from SegDeepLib.data.cache import CaseCache
from SegDeepLib.data.datasets import Dataset, load_dataset
from SegDeepLib.data.label_map import LabelMapping, build_mapping
from SegDeepLib.data.sampling import SamplingSettings
from SegDeepLib.data.splits import fold_cases, load_or_create_splits
from SegDeepLib.errors import SegDeepError
from SegDeepLib.training.config import TrainConfig


@dataclass
class DataSetup:
    dataset: Dataset
    mapping: LabelMapping
    spec: dict[str, Any]
    train_ids: list[str]
    val_ids: list[str]
    cache: CaseCache


def prepare_data(c: TrainConfig) -> DataSetup:
    """Read the dataset, map the labels, split the cases and set up the cache (nothing computed yet)."""
    from SegDeepLib.core.preprocessing_spec import validate_spec

    dataset = load_dataset(c.data.root, c.data.format)
    if c.data.cases is not None:
        unknown = sorted(set(c.data.cases) - set(dataset.case_ids))
        if unknown:
            raise SegDeepError(f"data.cases: {unknown} not in {dataset.root}; available: {dataset.case_ids}")
        dataset.cases = [case for case in dataset.cases if case.id in set(c.data.cases)]
    missing = [case.id for case in dataset.cases if case.label is None]
    if missing:
        raise SegDeepError(f"{dataset.root}: cases without labels {missing[:5]}; training needs a label per case")
    mapping = build_mapping(dataset, c.data.labels)
    split_file = Path(c.data.split_file) if c.data.split_file else c.out / "splits.json"
    splits = load_or_create_splits(split_file, dataset.case_ids, c.data.folds, c.seed)
    train_ids, val_ids = fold_cases(splits, c.data.fold, dataset.case_ids)
    spec = validate_spec(c.data.preprocessing or None)
    region_provider, tag = None, ""
    if c.data.region_from:
        from SegDeepLib.training.cascade import StageRegions

        region_provider = StageRegions(c.data.region_from, c.data.region_dilation_mm)
        tag = region_provider.tag
        if spec["crop"] != "mask":
            raise SegDeepError("data.region_from needs data.preprocessing.crop: mask (stage 2 crops to C2)")
    cache_dir = Path(c.data.cache_dir) if c.data.cache_dir else c.out / "cache"
    cache = CaseCache(cache_dir, dataset, spec, mapping, region_provider, tag)
    return DataSetup(dataset, mapping, spec, train_ids, val_ids, cache)


def input_channels(c: TrainConfig, setup: DataSetup) -> int:
    """Channels the network sees: preprocessing channels x modalities (x adjacent slices in 2D)."""
    from SegDeepLib.core.preprocessing_spec import num_channels

    per_slice = num_channels(setup.spec) * len(setup.dataset.channels)
    return per_slice if c.sampling.mode == "patch3d" else per_slice * c.sampling.context_slices


def model_config(c: TrainConfig, setup: DataSetup) -> dict[str, Any]:
    """The model section with ``in_channels`` / ``num_classes`` filled in (or checked)."""
    config = dict(c.model)
    expected = {"in_channels": input_channels(c, setup), "num_classes": setup.mapping.num_classes}
    for key, value in expected.items():
        if key in config and int(config[key]) != value:
            raise SegDeepError(
                f"config key 'model.{key}': {config[key]} but the data gives {value} "
                f"({'labels ' + str(list(setup.mapping.names)) if key == 'num_classes' else 'input channels'}); "
                f"remove it or fix it"
            )
        config[key] = value
    return config


def build_network(config: dict[str, Any], mode: str) -> torch.nn.Module:
    from SegDeepLib.models import build_model

    model = build_model(config)
    dims = getattr(model, "spatial_dims", None)
    want = 3 if mode == "patch3d" else 2
    if dims is not None and dims != want:
        raise SegDeepError(f"model {config.get('name')!r} is {dims}D but sampling.mode {mode!r} needs a {want}D network")
    return model


def load_initial_weights(model: torch.nn.Module, source: str, strict: bool) -> list[str]:
    """Fine-tuning / stage 2: copy weights from a model folder or checkpoint; returns skipped keys."""
    from SegDeepLib.io.model_folder import load_weights, read_spec

    path = Path(source)
    if path.is_dir():
        spec = read_spec(path)
        weights = load_weights(path, spec)
        state = weights.get("main") or next(iter(weights.values()))
    else:
        from SegDeepLib.training.checkpoint import load_checkpoint

        state = load_checkpoint(path)["model"]
    own = model.state_dict()
    state = _match_prefix(state, own)
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(usable))
    if strict and (skipped or set(state) - set(own)):
        raise SegDeepError(f"training.init_from {source}: weights do not match the network ({skipped[:5]}...); "
                           "set training.init_strict: false to skip them")
    model.load_state_dict(usable, strict=False)
    return skipped


def _match_prefix(state: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """Stage 1 -> stage 2: weights of a plain CNN go into a composite's ``cnn.`` sub-module."""
    if set(state) & set(own):
        return state
    for prefix in sorted({k.split(".", 1)[0] + "." for k in own if "." in k}):
        moved = {prefix + k: v for k, v in state.items()}
        if len(set(moved) & set(own)) >= len(state) // 2:
            return moved
    return state


def sampling_settings(c: TrainConfig) -> SamplingSettings:
    return SamplingSettings(**asdict(c.sampling))


def augment_settings(c: TrainConfig, names: Sequence[str]) -> AugmentSettings | None:
    """The sampler's settings; ``names[k-1]`` is class k (``class_shift`` is keyed by label name)."""
    if not c.augmentation.enabled:
        return None
    values = asdict(c.augmentation)
    values.pop("enabled")
    unknown = sorted(set(c.augmentation.class_shift) - set(names))
    if unknown:
        raise SegDeepError(f"augmentation.class_shift: {unknown} not among the classes {list(names)}")
    values["class_shift"] = {names.index(n) + 1: float(v) for n, v in c.augmentation.class_shift.items()}
    return AugmentSettings(**values)
