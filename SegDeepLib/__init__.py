"""SegDeepLib: deep-learning organ segmentation for CT and MRI.

Pure Python (no ``slicer``/``qt``/``ctk``/``vtk`` imports). The one image type used everywhere in
the library is :class:`SimpleITK.Image` (geometry: origin, spacing, direction travel with the voxels;
see :mod:`SegDeepLib.io.layout` for the array/tensor layout used by the networks).

Packages in layers, each importing only from those before it (checked by
``Testing/SegDeepLib/test_import_circles.py``): ``errors``, ``version``, ``progress``, ``registry`` ->
``core`` (torch-free, shared with Slicer) -> ``io`` -> ``preprocessing`` -> ``data`` -> ``metrics`` ->
``crf`` -> ``models`` -> ``losses`` -> ``inference`` -> ``training`` -> ``cli``.
"""

from SegDeepLib.errors import SegDeepError  # noqa: E402
from SegDeepLib.version import __version__  # noqa: E402


def train(config, **overrides):
    """Train a model from a config (path, dict or TrainConfig). See :mod:`SegDeepLib.training`."""
    from SegDeepLib.training import train as _train

    return _train(config, **overrides)


__all__ = ["SegDeepError", "__version__", "train"]
