"""A PNG montage of a segmentation: axial, coronal and sagittal overlays with a legend.

Uses matplotlib when installed; otherwise a plain numpy + zlib PNG writer (colour swatches for the
legend, no text). Views are taken in the canonical layout (patient L-P-S axes), so the image looks
the same whatever the file's orientation: axial seen from the feet, anterior up.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SegDeepLib.io.labels import LabelTable
from SegDeepLib.io.layout import to_canonical


def _window(array: np.ndarray, lo: float = -160.0, hi: float = 240.0) -> np.ndarray:
    return np.clip((array - lo) / (hi - lo), 0.0, 1.0)


def _centre(labels: np.ndarray) -> tuple[int, int, int]:
    """The label centroid (or the volume centre when empty), in canonical (Z, Y, X) voxels."""
    points = np.argwhere(labels > 0)
    if len(points) == 0:
        return tuple(s // 2 for s in labels.shape)
    return tuple(round(c) for c in points.mean(axis=0))


def views(
    image: sitk.Image, labelmap: sitk.Image
) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """(name, grey 2D, labels 2D, pixel aspect) for the axial, coronal and sagittal planes."""
    grey, layout = to_canonical(image)
    labels, _ = to_canonical(labelmap, dtype=None)
    z, y, x = _centre(labels)
    sz, sy, sx = layout.spacing_zyx
    return [
        ("axial", grey[z], labels[z], sy / sx),
        ("coronal", grey[::-1, y, :], labels[::-1, y, :], sz / sx),
        ("sagittal", grey[::-1, :, x], labels[::-1, :, x], sz / sy),
    ]


def overlay(
    grey: np.ndarray, labels: np.ndarray, table: LabelTable, alpha: float = 0.45
) -> np.ndarray:
    """RGB float image: windowed grey with the label colours blended in."""
    rgb = np.repeat(_window(grey)[..., None], 3, axis=2)
    for lab in table.labels:
        mask = labels == lab.value
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(lab.color) / 255.0
    return rgb


def write_montage(
    image: sitk.Image, labelmap: sitk.Image, table: LabelTable, path: str | Path, title: str = ""
) -> Path:
    """Write the three-view montage PNG with a legend; returns the path."""
    path = Path(path)
    panels = [
        (name, overlay(g, lab, table), aspect) for name, g, lab, aspect in views(image, labelmap)
    ]
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        return _write_plain(panels, table, path)
    return _write_matplotlib(panels, table, path, title)


def _write_matplotlib(panels, table: LabelTable, path: Path, title: str) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, 3, figsize=(13, 5))
    for ax, (name, rgb, aspect) in zip(axes, panels):
        ax.imshow(rgb, aspect=aspect, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    handles = [Patch(color=np.asarray(lab.color) / 255.0, label=lab.name) for lab in table.labels]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _resize_rows(rgb: np.ndarray, aspect: float) -> np.ndarray:
    rows = max(1, round(rgb.shape[0] * aspect))
    index = np.minimum((np.arange(rows) / aspect).astype(int), rgb.shape[0] - 1)
    return rgb[index]


def _write_plain(panels, table: LabelTable, path: Path) -> Path:
    images = [_resize_rows(rgb, aspect) for _, rgb, aspect in panels]
    height = max(im.shape[0] for im in images)
    row = np.concatenate(
        [np.pad(im, ((0, height - im.shape[0]), (0, 4), (0, 0))) for im in images], axis=1
    )
    swatches = np.zeros((16, row.shape[1], 3))
    for i, lab in enumerate(table.labels):
        swatches[2:14, 4 + 20 * i : 16 + 20 * i] = np.asarray(lab.color) / 255.0
    write_png(np.concatenate([row, swatches]), path)
    return path


def write_png(rgb: np.ndarray, path: str | Path) -> None:
    """Minimal RGB PNG writer (``rgb`` float in [0, 1], shape (H, W, 3))."""
    data = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    raw = b"".join(b"\x00" + data[r].tobytes() for r in range(data.shape[0]))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", data.shape[1], data.shape[0], 8, 2, 0, 0, 0)
    Path(path).write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
