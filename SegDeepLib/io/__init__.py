"""Image and segmentation I/O with exact geometry. The image type is ``SimpleITK.Image``."""

from SegDeepLib.io.formats import (
    read_image,
    read_label_map,
    read_probabilities,
    write_probabilities,
)
from SegDeepLib.io.image import (
    check_finite,
    check_volume,
    intensity_warning,
    list_dicom_series,
    read_volume,
    require_3d,
    write_image,
)
from SegDeepLib.io.labels import LabelTable, load_label_table
from SegDeepLib.io.layout import CanonicalLayout, from_canonical, same_grid, to_canonical
from SegDeepLib.io.segmentation import read_segmentation, write_segmentation

__all__ = [
    "CanonicalLayout",
    "LabelTable",
    "check_finite",
    "check_volume",
    "intensity_warning",
    "from_canonical",
    "list_dicom_series",
    "load_label_table",
    "read_image",
    "read_label_map",
    "read_probabilities",
    "read_volume",
    "read_segmentation",
    "require_3d",
    "same_grid",
    "to_canonical",
    "write_image",
    "write_probabilities",
    "write_segmentation",
]
