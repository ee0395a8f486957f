"""Build MSD-layout datasets from ../shared/data for training and evaluating the default models.

Outputs go to a folder outside git (default ``runs/data``); the real data is never copied into the
repository. Label maps are remapped to the model label tables in ``SegDeepLib/resources/labels``.

    python scripts/prepare_datasets.py [--shared ../shared/data] [--out runs/data]

Datasets written:
- ``ts_abdomen``: the two TotalSegmentator CTs (Apache-2.0 / CC BY 4.0: may train shipped models),
  labels = ``abdomen`` table (liver, spleen, kidneys, pancreas, urinary bladder).
- ``ircad_abdomen``: the two 3D-IRCADb CTs (CC BY-NC-ND: evaluation only, never shipped weights),
  same table, with ``labels_present`` per case (IRCAD labels only some organs per patient).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SegDeepLib.io import load_label_table, read_image, write_image

# TotalSegmentator v2 "total" class ids
TS_IDS = {"liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3, "pancreas": 7, "urinary_bladder": 21}
# 3D-IRCADb label map of shared/data/ircadb01 (full liver = liver + tumours + cysts)
IRCAD_IDS = {"liver": (1, 2, 3), "spleen": (7,), "kidney_right": (8,), "kidney_left": (9,)}

TS_CASES = {
    "ts_s0009": ("totalsegmentator-v2-dataset/imagesTr/totalseg_s0009.nii.gz",
                 "totalsegmentator-v2-dataset/labelsTr/totalseg_s0009.nii.gz"),
    "ts_example_ct": ("totalsegmentator-testfiles/ct_abdomen_pelvis_3mm/example_ct.nii.gz",
                      "totalsegmentator-testfiles/ct_abdomen_pelvis_3mm/example_seg_fast_force_split.nii.gz"),
}
IRCAD_CASES = ("ircadb01_01", "ircadb01_17")


def remap(label: sitk.Image, mapping: dict[str, tuple[int, ...]], names: list[str]) -> tuple[sitk.Image, list[str]]:
    source = sitk.GetArrayViewFromImage(label)
    out = np.zeros(source.shape, np.uint8)
    present = []
    for value, name in enumerate(names, start=1):
        ids = mapping.get(name, ())
        mask = np.isin(source, ids)
        if mask.any():
            present.append(name)
        out[mask] = value
    image = sitk.GetImageFromArray(out)
    image.CopyInformation(label)
    return image, present


def write_dataset(folder: Path, name: str, cases: dict, mapping: dict, shared: Path, licence: str) -> None:
    table = load_label_table("abdomen")
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for case, (image_rel, label_rel) in cases.items():
        image = read_image(shared / image_rel)
        label, present = remap(read_image(shared / label_rel), mapping, table.names)
        image_path = folder / "imagesTr" / f"{case}.nii.gz"
        label_path = folder / "labelsTr" / f"{case}.nii.gz"
        write_image(image, image_path, overwrite=True)
        write_image(label, label_path, overwrite=True)
        training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz",
                         "labels_present": present})
        print(f"{name}/{case}: size {image.GetSize()} spacing {image.GetSpacing()} present {present}")
    spec = {
        "name": name,
        "licence": licence,
        "modality": {"0": "CT"},
        "labels": {"0": "background", **{str(lab.value): lab.name for lab in table.labels}},
        "numTraining": len(training),
        "training": training,
    }
    (folder / "dataset.json").write_text(json.dumps(spec, indent=2))


def main() -> None:
    repo = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=repo.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=repo / "runs" / "data")
    args = parser.parse_args()
    ts_mapping = {name: (value,) for name, value in TS_IDS.items()}
    write_dataset(args.out / "ts_abdomen", "ts_abdomen", TS_CASES, ts_mapping, args.shared,
                  "TotalSegmentator (Apache-2.0 test files; CC BY 4.0 dataset)")
    ircad = {case: (f"ircadb01/imagesTr/{case}.nii.gz", f"ircadb01/labelsTr/{case}.nii.gz") for case in IRCAD_CASES}
    write_dataset(args.out / "ircad_abdomen", "ircad_abdomen", ircad, IRCAD_IDS, args.shared,
                  "CC BY-NC-ND 4.0: evaluation only")


if __name__ == "__main__":
    main()
