"""Training data: datasets (MSD, nnU-Net raw, .seg.nrrd folders), splits, fingerprint, cache,
patch/slice sampling and augmentation."""

from SegDeepLib.data.datasets import Case, Dataset, load_dataset
from SegDeepLib.data.label_map import LabelMapping, build_mapping
from SegDeepLib.data.splits import fold_cases, load_or_create_splits, make_splits

__all__ = ["Case", "Dataset", "LabelMapping", "build_mapping", "fold_cases", "load_dataset",
           "load_or_create_splits", "make_splits"]
