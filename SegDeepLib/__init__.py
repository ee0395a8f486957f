"""SegDeepLib: deep-learning organ segmentation for CT and MRI.

Pure Python (no ``slicer``/``qt``/``ctk``/``vtk`` imports). The one image type used everywhere in
the library is :class:`SimpleITK.Image` (geometry: origin, spacing, direction travel with the voxels;
see :mod:`SegDeepLib.io.layout` for the array/tensor layout used by the networks).

Pipeline stages, one package each: ``io`` -> ``preprocessing`` -> ``data`` -> ``models`` ->
``losses`` -> ``crf`` -> ``training`` -> ``inference`` -> ``metrics`` -> ``cli``.
"""

__version__ = "0.1.0"

from SegDeepLib.errors import SegDeepError  # noqa: E402


def train(config, **overrides):
    """Train a model from a config (path, dict or TrainConfig). See :mod:`SegDeepLib.training`."""
    from SegDeepLib.training import train as _train

    return _train(config, **overrides)


__all__ = ["SegDeepError", "__version__", "train"]
