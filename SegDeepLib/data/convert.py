"""Convert a stack of 2D images + masks (PNG/TIFF slices, e.g. ISBI 2012 EM) to an MSD dataset.

    python -m SegDeepLib.data.convert IMAGE_DIR LABEL_DIR OUT [--slices-per-case 10] [--label-name membrane]

Slices are sorted numerically and grouped into cases of ``--slices-per-case`` consecutive slices
(volumes ``(Z, Y, X)``, spacing 1). A mask pixel is foreground (label 1) where it is below 128 when
``--dark-foreground`` (ISBI: membranes are black), else where it is >= 128.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SegDeepLib.errors import SegDeepError

SLICE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".bmp")


def _slices(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.suffix.lower() in SLICE_SUFFIXES]
    if not files:
        raise SegDeepError(f"{folder}: no 2D image slices (.png/.tif) found")
    return sorted(files, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.stem)])


def _read(paths: list[Path]) -> np.ndarray:
    arrays = [sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in paths]
    arrays = [a if a.ndim == 2 else a[..., 0] for a in arrays]
    return np.stack(arrays)


def stack_to_msd(image_dir: str | Path, label_dir: str | Path, out: str | Path, slices_per_case: int = 10,
                 label_name: str = "foreground", dark_foreground: bool = False) -> Path:
    """Write ``out/dataset.json``, ``imagesTr/`` and ``labelsTr/``; returns ``out``."""
    images, labels = _slices(Path(image_dir)), _slices(Path(label_dir))
    if len(images) != len(labels):
        raise SegDeepError(f"{image_dir} has {len(images)} slices but {label_dir} has {len(labels)}")
    out = Path(out)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for n, start in enumerate(range(0, len(images), slices_per_case)):
        image = _read(images[start:start + slices_per_case]).astype(np.float32)
        mask = _read(labels[start:start + slices_per_case])
        label = (mask < 128) if dark_foreground else (mask >= 128)
        name = f"case{n:03d}.nii.gz"
        sitk.WriteImage(sitk.GetImageFromArray(image), str(out / "imagesTr" / name))
        sitk.WriteImage(sitk.GetImageFromArray(label.astype(np.uint8)), str(out / "labelsTr" / name))
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": out.name, "modality": {"0": "image"}, "labels": {"0": "background", "1": label_name},
            "numTraining": len(training), "training": training}
    (out / "dataset.json").write_text(json.dumps(meta, indent=2))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image_dir")
    parser.add_argument("label_dir")
    parser.add_argument("out")
    parser.add_argument("--slices-per-case", type=int, default=10)
    parser.add_argument("--label-name", default="foreground")
    parser.add_argument("--dark-foreground", action="store_true")
    args = parser.parse_args(argv)
    print(stack_to_msd(args.image_dir, args.label_dir, args.out, args.slices_per_case, args.label_name,
                       args.dark_foreground))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
