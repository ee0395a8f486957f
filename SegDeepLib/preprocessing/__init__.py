"""Preprocessing: resampling, intensity normalisation, candidate regions, the network input.

The contract (docs/ARCHITECTURE.md): ``preprocess(image, spec) -> Preprocessed`` and
``preprocess_label(label_image, pre)``; the spec is validated by :func:`validate_spec`.
"""

from SegDeepLib.core.preprocessing_spec import num_channels, validate_spec
from SegDeepLib.preprocessing.intensity import (
    apply_intensity,
    ct_fingerprint,
    ct_nnunet_normalize,
    density_map,
    dual_channel,
    window_rescale,
    zscore,
)
from SegDeepLib.preprocessing.phantom import make_phantom
from SegDeepLib.preprocessing.pipeline import Preprocessed, preprocess, preprocess_label
from SegDeepLib.preprocessing.regions import (
    CropBox,
    body_mask,
    body_mask_array,
    crop,
    crop_image,
    dilate_foreground,
    largest_component,
    margin_voxels,
    paste,
    paste_image,
    region_box,
)
from SegDeepLib.preprocessing.resample import (
    centred_grid,
    resample_labels_onehot,
    resample_to_reference,
    resample_to_spacing,
)

__all__ = [
    "CropBox",
    "Preprocessed",
    "apply_intensity",
    "body_mask",
    "body_mask_array",
    "centred_grid",
    "crop",
    "crop_image",
    "ct_fingerprint",
    "ct_nnunet_normalize",
    "density_map",
    "dilate_foreground",
    "dual_channel",
    "largest_component",
    "make_phantom",
    "margin_voxels",
    "num_channels",
    "paste",
    "paste_image",
    "preprocess",
    "preprocess_label",
    "region_box",
    "resample_labels_onehot",
    "resample_to_reference",
    "resample_to_spacing",
    "validate_spec",
    "window_rescale",
    "zscore",
]
