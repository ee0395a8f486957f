"""Disk cache: built once, reused, rebuilt when the spec changes; arrays match a direct preprocess."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from SegDeepLib.data.cache import CaseCache, class_coordinates
from SegDeepLib.data.datasets import load_dataset
from SegDeepLib.data.label_map import build_mapping
from SegDeepLib.preprocessing import preprocess, preprocess_label
from Testing.SegDeepLib.training.helpers import make_msd_dataset

SPEC = {"spacing": [8.0, 12.0, 12.0], "intensity": {"kind": "window", "window": [-200, 300]}, "crop": "body"}


def test_cache_matches_direct_preprocessing_and_is_reused(tmp_path):
    ds = load_dataset(make_msd_dataset(tmp_path / "ds", cases=1))
    mapping = build_mapping(ds, ["spleen", "liver"])
    cache = CaseCache(tmp_path / "cache", ds, SPEC, mapping)
    got = cache.get("case0")
    image = sitk.ReadImage(str(ds.cases[0].images[0]))
    pre = preprocess(image, SPEC)
    labels = preprocess_label(sitk.ReadImage(str(ds.cases[0].label)), pre)
    assert np.array_equal(np.asarray(got.image), pre.array)
    expected = np.where(labels == 2, 1, np.where(labels == 1, 2, 0))
    assert np.array_equal(got.label, expected)
    assert np.array_equal(got.region, pre.region) and got.spacing_zyx == tuple(pre.spacing_zyx)
    entry = cache.entry(ds.cases[0])
    stamp = (entry / "image.npy").stat().st_mtime_ns
    cache.get("case0")
    assert (entry / "image.npy").stat().st_mtime_ns == stamp
    other = CaseCache(tmp_path / "cache", ds, {**SPEC, "spacing": [6.0, 9.0, 9.0]}, mapping)
    assert other.entry(ds.cases[0]) != entry
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_class_coordinates_subsample_only_the_class():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:9, 2:9, 2:9] = 1
    labels[0, 0, 0] = 2
    coords = class_coordinates(labels, 3, np.random.default_rng(0), limit=50)
    assert len(coords[1]) == 50 and np.all(labels[tuple(coords[1].T)] == 1)
    assert coords[2].tolist() == [[0, 0, 0]]
