"""Preprocessed cases cached on disk (``.npy`` files, memory-mapped), so epochs never re-resample.

A cache entry is keyed by a hash of everything that changes the arrays: preprocessing spec, label
mapping, input files (path, size, mtime) and the candidate-region source. Entries are written to a
temporary folder and renamed into place (a killed run never leaves a half-written entry).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import SimpleITK as sitk

from SegDeepLib.data.datasets import Case, Dataset, read_case_image, read_case_label
from SegDeepLib.data.label_map import LabelMapping
from SegDeepLib.errors import SegDeepError
from SegDeepLib.io.atomic import follow_umask

MAX_COORDS_PER_CLASS = 10000

RegionProvider = Callable[[Case, sitk.Image], Optional[sitk.Image]]


@dataclass
class CachedCase:
    """A case on the network grid: image ``(C, Z, Y, X)``, classes ``(Z, Y, X)``, region, spacing."""

    id: str
    image: np.ndarray
    label: np.ndarray
    region: np.ndarray | None
    spacing_zyx: tuple[float, float, float]
    class_present: list[bool]
    class_coords: dict[int, np.ndarray]  # class -> (n, 3) voxel coordinates (a random subset)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.label.shape)


def preprocess_case(dataset: Dataset, case: Case, spec: dict[str, Any], mapping: LabelMapping,
                    region: sitk.Image | None = None, seed: int = 0) -> CachedCase:
    """Read, preprocess (every channel with the same spec) and map labels to classes."""
    from SegDeepLib.preprocessing import preprocess, preprocess_label

    images = read_case_image(case)
    pres = [preprocess(img, spec, region=region) for img in images]
    shapes = {p.shape_zyx for p in pres}
    if len(shapes) != 1:
        raise SegDeepError(f"case {case.id}: channels give different network grids {sorted(shapes)}")
    label = read_case_label(dataset, case, images[0])
    classes = mapping.apply(preprocess_label(label, pres[0], interpolation="nearest"))
    image = np.concatenate([p.array for p in pres], axis=0).astype(np.float32)
    coords = class_coordinates(classes, mapping.num_classes, np.random.default_rng(seed))
    return CachedCase(case.id, image, classes.astype(np.uint8), pres[0].region, tuple(pres[0].spacing_zyx),
                      mapping.class_present(case), coords)


def class_coordinates(classes: np.ndarray, num_classes: int, rng: np.random.Generator,
                      limit: int = MAX_COORDS_PER_CLASS) -> dict[int, np.ndarray]:
    """Up to ``limit`` random voxel coordinates per foreground class (for oversampling)."""
    out = {}
    for k in range(1, num_classes):
        where = np.argwhere(classes == k).astype(np.int32)
        if len(where) > limit:
            where = where[np.sort(rng.choice(len(where), limit, replace=False))]
        out[k] = where
    return out


def _file_stamp(path: Path) -> list[Any]:
    stat = path.stat()
    return [str(path), stat.st_size, int(stat.st_mtime)]


def cache_key(case: Case, spec: dict[str, Any], mapping: LabelMapping, region_tag: str) -> str:
    files = [_file_stamp(p) for p in case.images] + ([_file_stamp(case.label)] if case.label else [])
    blob = json.dumps({"spec": spec, "names": mapping.names, "values": mapping.values, "files": files,
                       "region": region_tag, "present": case.labels_present, "v": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class CaseCache:
    """Load-or-build cached cases in ``folder``."""

    def __init__(self, folder: str | Path, dataset: Dataset, spec: dict[str, Any], mapping: LabelMapping,
                 region_provider: RegionProvider | None = None, region_tag: str = "") -> None:
        self.folder = Path(folder)
        self.dataset, self.spec, self.mapping = dataset, spec, mapping
        self.region_provider, self.region_tag = region_provider, region_tag

    def entry(self, case: Case) -> Path:
        return self.folder / f"{case.id}_{cache_key(case, self.spec, self.mapping, self.region_tag)}"

    def get(self, case_id: str) -> CachedCase:
        case = self.dataset.case(case_id)
        path = self.entry(case)
        if not (path / "meta.json").exists():
            self._build(case, path)
        return _load(path)

    def _build(self, case: Case, path: Path) -> None:
        region = None
        if self.region_provider is not None:
            region = self.region_provider(case, read_case_image(case)[0])
        cached = preprocess_case(self.dataset, case, self.spec, self.mapping, region)
        _save(cached, path)


def _save(cached: CachedCase, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    follow_umask(tmp, folder=True)
    try:
        np.save(tmp / "image.npy", cached.image)
        np.save(tmp / "label.npy", cached.label)
        if cached.region is not None:
            np.save(tmp / "region.npy", cached.region.astype(np.uint8))
        np.savez(tmp / "coords.npz", **{str(k): v for k, v in cached.class_coords.items()})
        meta = {"id": cached.id, "spacing_zyx": list(cached.spacing_zyx), "class_present": cached.class_present}
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            os.replace(tmp, path)
        except OSError:  # another worker/process won the race: keep theirs
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load(path: Path) -> CachedCase:
    meta = json.loads((path / "meta.json").read_text())
    region = np.load(path / "region.npy").astype(bool) if (path / "region.npy").exists() else None
    with np.load(path / "coords.npz") as data:
        coords = {int(k): data[k] for k in data.files}
    return CachedCase(meta["id"], np.load(path / "image.npy", mmap_mode="r"), np.load(path / "label.npy"),
                      region, tuple(meta["spacing_zyx"]), list(meta["class_present"]), coords)
