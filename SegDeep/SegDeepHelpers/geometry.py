"""Volumes <-> files handed to the subprocess, with exact geometry.

Slicer keeps voxels as a KJI numpy array plus a 4x4 IJK-to-RAS matrix; files (NRRD, via SimpleITK)
use LPS. The only conversion is a sign flip of the first two rows (RAS <-> LPS). Everything here is
plain numpy + SimpleITK so it is tested outside Slicer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
PathLike = Union[str, Path]


def imageFromArray(arrayKJI: np.ndarray, ijkToRAS: np.ndarray):
    """A SimpleITK image holding ``arrayKJI`` (slice, row, column) at ``ijkToRAS``."""
    import SimpleITK as sitk

    matrix = np.asarray(ijkToRAS, dtype=float)
    if matrix.shape != (4, 4) or arrayKJI.ndim != 3:
        raise ValueError("a 3D KJI array and a 4x4 IJK-to-RAS matrix are needed")
    ijkToLPS = RAS_TO_LPS @ matrix
    spacing = np.linalg.norm(ijkToLPS[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise ValueError("IJK-to-RAS matrix has a zero-length axis")
    direction = ijkToLPS[:3, :3] / spacing
    image = sitk.GetImageFromArray(np.ascontiguousarray(arrayKJI))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(d) for d in direction.ravel()])
    image.SetOrigin([float(o) for o in ijkToLPS[:3, 3]])
    return image


def ijkToRASFromImage(image) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix of a SimpleITK image (inverse of :func:`imageFromArray`)."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    ijkToLPS = np.eye(4)
    ijkToLPS[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=float)
    ijkToLPS[:3, 3] = image.GetOrigin()
    return RAS_TO_LPS @ ijkToLPS


def writeVolumeFile(arrayKJI: np.ndarray, ijkToRAS: np.ndarray, path: PathLike) -> Path:
    """Write an uncompressed NRRD (fast to write and read) with the volume's geometry."""
    import SimpleITK as sitk

    path = Path(path)
    sitk.WriteImage(imageFromArray(arrayKJI, ijkToRAS), str(path), False)
    return path


def sameGrid(shapeA: tuple, ijkToRASA: np.ndarray, shapeB: tuple, ijkToRASB: np.ndarray,
             tolerance: float = 1e-4) -> bool:
    """True when two KJI shapes + IJK-to-RAS matrices describe the same voxel grid."""
    if tuple(shapeA) != tuple(shapeB):
        return False
    return bool(np.allclose(ijkToRASA, ijkToRASB, atol=tolerance, rtol=0))
