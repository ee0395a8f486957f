"""Checks that an image file holds all the data its header promises, before anything trusts it.

ITK reads a truncated NIfTI (plain or gzipped) without complaint and fills the missing voxels with
zeros, and its DICOM series reader drops unreadable slices with a warning only. These checks are
independent of ITK:

- :func:`check_complete`: a gzip stream must end with its end-of-stream marker (and checksum); a
  NIfTI-1/-2 file must hold ``vox_offset + voxels * bitpix / 8`` bytes (the header's own numbers)
  and no NaN/Inf (which ITK reads as 0); a one-file MetaImage must hold its ``DimSize`` voxels.
- :func:`check_dicom_series`: every slice file in the folder belongs to a series, and the slices of
  the chosen series are evenly spaced along the slice normal (no missing, duplicate or extra slice).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from SegDeepLib.errors import SegDeepError

CHUNK = 1 << 20
# relative tolerance on the slice spacing of a DICOM series (scanners round positions to ~0.01 mm)
SPACING_TOLERANCE = 0.05
_NOT_DICOM_SUFFIXES = {".txt", ".json", ".md", ".xml", ".csv", ".html", ".pdf", ".jpg", ".png", ".zip"}


def _gzip_size(path: Path) -> int:
    """Decoded size of a gzip file; raises if the stream is cut short or corrupt."""
    size = 0
    try:
        with gzip.open(path, "rb") as handle:
            while block := handle.read(CHUNK):
                size += len(block)
    except EOFError:
        raise SegDeepError(
            f"{path}: the gzip stream is truncated (the file was cut short, e.g. an interrupted "
            "download or copy); copy the file again"
        ) from None
    except (OSError, zlib.error) as exc:
        raise SegDeepError(f"{path}: corrupt gzip data ({exc}); copy the file again") from None
    return size


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _read_head(path: Path, gz: bool, count: int = 540) -> bytes:
    opener = gzip.open if gz else open
    try:
        with opener(path, "rb") as handle:
            return handle.read(count)
    except (EOFError, OSError, zlib.error):
        return b""


def nifti_layout(head: bytes) -> tuple[int, int, np.dtype | None] | None:
    """``(vox_offset, voxels, float dtype or None)`` from a NIfTI-1/-2 header, or ``None``."""
    for endian in ("<", ">"):
        if len(head) >= 348 and struct.unpack(f"{endian}i", head[:4])[0] == 348:
            datatype = struct.unpack(f"{endian}h", head[70:72])[0]
            dims = struct.unpack(f"{endian}8h", head[40:56])
            bitpix = struct.unpack(f"{endian}h", head[72:74])[0]
            offset = int(struct.unpack(f"{endian}f", head[108:112])[0])
            offset = max(offset, 352)
            break
        if len(head) >= 540 and struct.unpack(f"{endian}i", head[:4])[0] == 540:
            datatype = struct.unpack(f"{endian}h", head[12:14])[0]
            bitpix = struct.unpack(f"{endian}h", head[14:16])[0]
            dims = struct.unpack(f"{endian}8q", head[16:80])
            offset = max(int(struct.unpack(f"{endian}q", head[168:176])[0]), 544)
            break
    else:
        return None
    ndim = int(dims[0])
    if not 1 <= ndim <= 7 or bitpix <= 0:
        return None
    voxels = int(np.prod([max(int(d), 0) for d in dims[1 : ndim + 1]], dtype=np.int64))
    floats = {16: "f4", 64: "f8"}
    dtype = np.dtype(endian + floats[datatype]) if datatype in floats else None
    if dtype is None and bitpix % 8:
        return None
    return offset, voxels * int(bitpix) // 8, dtype


def _count_nonfinite(path: Path, gz: bool, offset: int, dtype: np.dtype) -> int:
    """NaN/Inf voxels in a float NIfTI's data (ITK reads them as 0 without a word)."""
    opener = gzip.open if gz else open
    bad = 0
    step = (CHUNK // dtype.itemsize) * dtype.itemsize
    with opener(path, "rb") as handle:
        handle.read(offset)
        while block := handle.read(step):
            usable = len(block) - len(block) % dtype.itemsize
            bad += int(np.count_nonzero(~np.isfinite(np.frombuffer(block[:usable], dtype=dtype))))
    return bad


def _metaimage_expected(path: Path) -> tuple[int, int, bool] | None:
    """``(header bytes, data bytes, compressed)`` of a one-file MetaImage (.mha), else ``None``."""
    sizes = {"MET_UCHAR": 1, "MET_CHAR": 1, "MET_USHORT": 2, "MET_SHORT": 2, "MET_UINT": 4, "MET_INT": 4,
             "MET_FLOAT": 4, "MET_DOUBLE": 8, "MET_ULONG_LONG": 8, "MET_LONG_LONG": 8}
    fields: dict[str, str] = {}
    with open(path, "rb") as handle:
        for _ in range(64):
            line = handle.readline(4096)
            if not line or b"=" not in line:
                return None
            key, _, value = line.decode("latin-1").partition("=")
            fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile":
                header = handle.tell()
                break
        else:
            return None
    if fields.get("ElementDataFile") != "LOCAL" or fields.get("ElementType") not in sizes:
        return None
    try:
        voxels = int(np.prod([int(v) for v in fields["DimSize"].split()], dtype=np.int64))
        channels = int(fields.get("ElementNumberOfChannels", "1"))
    except (KeyError, ValueError):
        return None
    compressed = fields.get("CompressedData", "False").lower() == "true"
    return header, voxels * channels * sizes[fields["ElementType"]], compressed


def _check_metaimage(path: Path) -> None:
    layout = _metaimage_expected(path)
    if layout is None:
        return
    header, expected, compressed = layout
    if compressed:
        inflater = zlib.decompressobj()
        size = 0
        with open(path, "rb") as handle:
            handle.seek(header)
            try:
                while block := handle.read(CHUNK):
                    size += len(inflater.decompress(block))
            except zlib.error as exc:
                raise SegDeepError(f"{path}: corrupt compressed MetaImage data ({exc}); copy the file again") from None
        if not inflater.eof or size < expected:
            raise SegDeepError(f"{path}: truncated MetaImage: the compressed data stream is cut short; copy the file again")
        return
    size = path.stat().st_size - header
    if size < expected:
        raise SegDeepError(
            f"{path}: truncated MetaImage: the header promises {expected} bytes of image data and the "
            f"file holds {size} ({100 * size / expected:.0f}%); copy the file again"
        )


def check_complete(path: str | os.PathLike) -> None:
    """Raise :class:`SegDeepError` when ``path`` is cut short (gzip stream or NIfTI voxel data)."""
    path = Path(path)
    if not path.is_file():
        return
    gz = _is_gzip(path)
    size = _gzip_size(path) if gz else path.stat().st_size
    name = path.name.lower()
    if name.endswith(".mha"):
        _check_metaimage(path)
        return
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return
    layout = nifti_layout(_read_head(path, gz))
    if layout is None:
        return
    offset, data, dtype = layout
    if size < offset + data:
        raise SegDeepError(
            f"{path}: truncated NIfTI: the header promises {offset + data} bytes and the file "
            f"holds {size} ({100 * size / (offset + data):.0f}%); copy the file again"
        )
    if data == 0:
        raise SegDeepError(f"{path}: the header gives the image no voxels (a zero dimension)")
    if dtype is not None:
        bad = _count_nonfinite(path, gz, offset, dtype)
        if bad:
            raise SegDeepError(
                f"{path}: {bad} voxels are NaN or infinite (ITK would read them as 0); fix or mask "
                "them before using the image"
            )


def _slice_geometry(path: str) -> tuple[np.ndarray, np.ndarray] | None:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
        position = [float(v) for v in reader.GetMetaData("0020|0032").split("\\")]
        cosines = [float(v) for v in reader.GetMetaData("0020|0037").split("\\")]
    except (RuntimeError, ValueError):
        return None
    if len(position) != 3 or len(cosines) != 6:
        return None
    return np.array(position), np.cross(cosines[:3], cosines[3:])


def _candidate_slice_files(folder: Path) -> list[Path]:
    """Regular, non-hidden files that could be DICOM slices (not notes, images or archives)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and p.name.upper() != "DICOMDIR"
        and p.suffix.lower() not in _NOT_DICOM_SUFFIXES
    )


def check_dicom_series(folder: Path, files: Sequence[str], series_files: Sequence[str]) -> None:
    """Refuse unreadable slice files and unevenly spaced (missing/duplicate) slices.

    ``files``: the chosen series sorted along the normal; ``series_files``: every file of every
    series GDCM found in ``folder`` (the others are unreadable or not DICOM).
    """
    known = {os.path.realpath(f) for f in series_files}
    for path in _candidate_slice_files(folder):
        if os.path.realpath(path) not in known:
            raise SegDeepError(
                f"{path}: unreadable DICOM slice (corrupt or truncated) in the series folder; "
                "replace it, remove it and pass --allow-gaps, or copy the series again"
            )
    geometry = [_slice_geometry(f) for f in files]
    if len(files) < 3 or any(g is None for g in geometry):
        return
    normal = geometry[0][1]
    positions = np.array([float(np.dot(g[0], normal)) for g in geometry])
    steps = np.diff(positions)
    typical = float(np.median(np.abs(steps)))
    if typical <= 0:
        raise SegDeepError(f"{folder}: several slices share one position ({files[0]}); remove the duplicates")
    bad = np.flatnonzero(np.abs(np.abs(steps) - typical) > SPACING_TOLERANCE * typical)
    if bad.size:
        i = int(bad[0])
        gap = abs(float(steps[i]))
        what = "missing slice(s)" if gap > typical else "extra or duplicate slice"
        raise SegDeepError(
            f"{files[i + 1]}: {what} between {Path(files[i]).name} and {Path(files[i + 1]).name}: "
            f"{gap:.3f} mm apart where the series has {typical:.3f} mm steps; complete the series, "
            "or pass --allow-gaps to read it anyway"
        )


def read_series_with_gaps(files: Sequence[str]) -> tuple[object, list[str]]:
    """Read the readable slices of a series onto an evenly spaced grid (``--allow-gaps``).

    The slice step is the series' most common step; a slice position with no file is linearly
    interpolated from its two neighbours, so every slice that exists keeps its true position and
    voxels. Returns the image and the notes (skipped files, interpolated positions).
    """
    import SimpleITK as sitk

    notes: list[str] = []
    slices = []
    for path in files:
        geometry = _slice_geometry(path)
        try:
            image = sitk.ReadImage(path) if geometry is not None else None
        except RuntimeError:
            image = None
        if image is None:
            notes.append(f"{Path(path).name} unreadable, skipped")
            continue
        slices.append((float(np.dot(geometry[0], geometry[1])), image, path))
    if len(slices) < 2:
        raise SegDeepError(f"{Path(files[0]).parent}: fewer than 2 readable slices; cannot read the series")
    slices.sort(key=lambda item: item[0])
    positions = np.array([p for p, _, _ in slices])
    typical = float(np.median(np.diff(positions)))
    if typical <= 0:
        raise SegDeepError(f"{slices[0][2]}: several slices share one position; remove the duplicates")
    count = int(round((positions[-1] - positions[0]) / typical)) + 1
    arrays = [sitk.GetArrayFromImage(image).reshape(image.GetSize()[1], image.GetSize()[0]) for _, image, _ in slices]
    volume = np.empty((count, *arrays[0].shape), dtype=arrays[0].dtype)
    for k in range(count):
        target = positions[0] + k * typical
        i = int(np.clip(np.searchsorted(positions, target + 1e-3 * typical) - 1, 0, len(slices) - 2))
        weight = float(np.clip((target - positions[i]) / (positions[i + 1] - positions[i]), 0.0, 1.0))
        if weight < 1e-3 or weight > 1 - 1e-3:
            volume[k] = arrays[i] if weight < 0.5 else arrays[i + 1]
            continue
        mixed = (1 - weight) * arrays[i].astype(np.float64) + weight * arrays[i + 1].astype(np.float64)
        volume[k] = np.round(mixed) if np.issubdtype(volume.dtype, np.integer) else mixed
        notes.append(f"slice at {target:.2f} mm interpolated between {Path(slices[i][2]).name} and "
                     f"{Path(slices[i + 1][2]).name}")
    first = slices[0][1]
    out = sitk.GetImageFromArray(volume)
    out.SetSpacing((first.GetSpacing()[0], first.GetSpacing()[1], typical))
    out.SetOrigin(first.GetOrigin()[:3])
    out.SetDirection(first.GetDirection())
    return out, notes
