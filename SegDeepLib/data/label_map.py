"""From a dataset's label values to the network's classes (0 = background, 1..K-1 = chosen organs)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from SegDeepLib.data.datasets import Case, Dataset, normalise_name
from SegDeepLib.errors import SegDeepError


@dataclass(frozen=True)
class LabelMapping:
    """``names[k-1]`` is class k; ``values[k-1]`` the dataset value it comes from."""

    names: tuple[str, ...]
    values: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return len(self.names) + 1

    def lookup_table(self) -> np.ndarray:
        """uint8 table: dataset value -> class (unlisted values -> 0)."""
        size = max(self.values, default=0) + 1
        table = np.zeros(max(size, 256), np.uint8)
        for k, value in enumerate(self.values, start=1):
            table[value] = k
        return table

    def apply(self, labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.size and (labels.min() < 0):
            raise SegDeepError("label map: negative label values")
        table = self.lookup_table()
        if labels.size and labels.max() >= table.size:
            table = np.concatenate([table, np.zeros(int(labels.max()) + 1 - table.size, np.uint8)])
        return table[labels.astype(np.int64)]

    def class_present(self, case: Case) -> list[bool]:
        """Which classes the case annotates (background always; all when the case lists nothing)."""
        if case.labels_present is None:
            return [True] * self.num_classes
        present = set(case.labels_present)
        return [True] + [v in present for v in self.values]


def build_mapping(dataset: Dataset, names: list[str]) -> LabelMapping:
    """Map the requested label names onto the dataset's values; unknown names raise one clear error."""
    available = {normalise_name(n): (v, n) for v, n in dataset.labels.items() if v != 0}
    if not names:
        ordered = sorted((v, n) for v, n in dataset.labels.items() if v != 0)
        return LabelMapping(tuple(n for _, n in ordered), tuple(v for v, _ in ordered))
    missing = [n for n in names if normalise_name(n) not in available]
    if missing:
        raise SegDeepError(
            f"data.labels: {missing} not in {dataset.root}/ labels; available: "
            f"{', '.join(n for _, n in sorted(available.values()))}"
        )
    if len({normalise_name(n) for n in names}) != len(names):
        raise SegDeepError(f"data.labels: duplicate names in {names}")
    values = tuple(available[normalise_name(n)][0] for n in names)
    return LabelMapping(tuple(names), values)
