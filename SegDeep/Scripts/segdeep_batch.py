"""Segment every volume of a folder with SegDeep inside 3D Slicer, without the main window.

    Slicer --no-splash --no-main-window --python-script SegDeep/Scripts/segdeep_batch.py \
        --model abdomen-cascade --input-folder /data/ct --output-folder /data/seg --device cpu

Every readable volume (``.nrrd``, ``.nii``, ``.nii.gz``, ``.mha``...) gives ``<name>.seg.nrrd`` in
the output folder (segments named and coloured from the model's label table, on the input grid).
Exits with 0 when every volume succeeded, 1 otherwise (failures are listed).
"""

import argparse
import sys
from pathlib import Path

import slicer

VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")


def volumeFiles(folder: Path) -> list:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES)
                  and not p.name.lower().endswith(".seg.nrrd"))


def stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def segmentFolder(inputFolder: Path, outputFolder: Path, modelId: str, **options) -> list:
    """Segment each volume; returns ``[(input, output or None, error or "")]``."""
    import SegDeep

    outputFolder.mkdir(parents=True, exist_ok=True)
    logic = SegDeep.SegDeepLogic()
    report = []
    for path in volumeFiles(inputFolder):
        output = outputFolder / f"{stem(path)}.seg.nrrd"
        try:
            volume = slicer.util.loadVolume(str(path))
            result = logic.segment(volume, modelId, waitForCompletion=True, **options)
            slicer.util.saveNode(result.segmentationNode, str(output))
            report.append((path, output, ""))
            print(f"{path.name}: {len(result.segmentIds)} segments in {result.elapsed:.1f} s -> {output}")
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop a batch
            report.append((path, None, str(exc)))
            print(f"{path.name}: FAILED: {exc}")
        slicer.mrmlScene.Clear()
    return report


def parseArguments(argv: list) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="catalogue model id")
    parser.add_argument("--input-folder", required=True, type=Path)
    parser.add_argument("--output-folder", required=True, type=Path)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--organs", default="", help="comma-separated subset of the model's organs")
    parser.add_argument("--fast", action="store_true", help="low-resolution variant")
    return parser.parse_args(argv)


def main(argv: list) -> int:
    args = parseArguments(argv)
    organs = [o for o in args.organs.split(",") if o]
    report = segmentFolder(args.input_folder, args.output_folder, args.model,
                           device=args.device, organs=organs, fast=args.fast)
    failed = [r for r in report if r[2]]
    print(f"SegDeep batch: {len(report) - len(failed)} of {len(report)} volumes segmented")
    return 1 if failed or not report else 0


if __name__ == "__main__":
    slicer.util.exit(main(sys.argv[1:]))
