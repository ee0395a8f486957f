"""A stand-in for ``python -m SegDeepLib`` used by the widget/logic tests (fast, deterministic).

Run as ``fake_cli.py [.../childguard.py] -m SegDeepLib segment IN -o OUT --model ID ... --progress
json`` (with the module's child guard first, it starts the same parent watch). It reads the input
NRRD, labels voxels by intensity thresholds (so the expected segmentation is known voxel by voxel),
writes a .seg.nrrd with SegDeepLib's writer and prints JSON-lines progress in three stages
(preprocess, tiles, write), as the real CLI does. Environment: ``FAKE_SLEEP`` seconds per tile (for
cancel tests), ``FAKE_FAIL`` = error message to fail with (exit 2), ``FAKE_BUILD`` = emit the first-use
"crf-build" stage first (as SegDeepLib's docs/ARCHITECTURE.md shows it), ``FAKE_PID_FILE`` where to write its pid, ``FAKE_ARGS_FILE`` where
to dump argv (without the guard).
"""

from __future__ import annotations

import json
import os
import sys
import time

THRESHOLDS = {"liver": (100, 200), "spleen": (200, 10_000)}


def emit(**event) -> None:
    print(json.dumps(event), flush=True)


def segment(argv: list[str]) -> int:
    import numpy as np
    import SimpleITK as sitk

    from SegDeepLib.io import write_segmentation
    from SegDeepLib.io.labels import LabelTable

    source, output = argv[0], argv[argv.index("-o") + 1]
    organs = list(THRESHOLDS)
    if "--organs" in argv:
        organs = argv[argv.index("--organs") + 1].split(",")
    emit(event="log", level="info", message="device: cpu (fake)")
    if os.environ.get("FAKE_BUILD"):
        emit(event="progress", stage="crf-build", fraction=0.0, eta_s=60.0, data={"estimate_s": 60.0},
             message="building the CRF extension (cpu), first use: ~1 min")
        emit(event="progress", stage="crf-build", fraction=1.0, message="CRF extension ready in 63 s")
    emit(event="progress", stage="preprocess", fraction=0.0, message="preprocess...")
    emit(event="progress", stage="preprocess", fraction=1.0, message="preprocess done")
    steps = 5
    for step in range(steps):
        time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
        emit(event="progress", stage="tiles", fraction=(step + 1) / steps,
             message=f"tile {step + 1}/{steps}", eta_s=0.1 * (steps - step - 1))
    if os.environ.get("FAKE_FAIL"):
        emit(event="error", message=os.environ["FAKE_FAIL"])
        print(f"segdeep: error: {os.environ['FAKE_FAIL']}", file=sys.stderr)
        return 2
    emit(event="progress", stage="write", fraction=0.0, message=f"writing {output}")
    image = sitk.ReadImage(source)
    voxels = sitk.GetArrayFromImage(image)
    labels = np.zeros(voxels.shape, np.uint8)
    table = LabelTable.from_names(list(THRESHOLDS), name="fake")
    for label in table.labels:
        low, high = THRESHOLDS[label.name]
        if label.name in organs:
            labels[(voxels >= low) & (voxels < high)] = label.value
    result = sitk.GetImageFromArray(labels)
    result.CopyInformation(image)
    write_segmentation(result, output, table)
    emit(event="progress", stage="write", fraction=1.0, message="written")
    emit(event="done", message="segmented", data={"outputs": {"segmentation": output}})
    return 0


def _guarded(argv: list[str]) -> list[str]:
    """With the module's child guard in front: start its parent watch, as the real child does."""
    if argv and argv[0].endswith("childguard.py"):
        import importlib.util

        spec = importlib.util.spec_from_file_location("childguard", argv[0])
        guard = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(guard)
        guard.startWatching()
        return argv[1:]
    return argv


def main() -> int:
    argv = _guarded(sys.argv[1:])
    if os.environ.get("FAKE_PID_FILE"):
        with open(os.environ["FAKE_PID_FILE"], "w") as handle:
            handle.write(str(os.getpid()))
    if os.environ.get("FAKE_ARGS_FILE"):
        with open(os.environ["FAKE_ARGS_FILE"], "w") as handle:
            json.dump(argv, handle)
    assert argv[:2] == ["-m", "SegDeepLib"], argv
    command, rest = argv[2], argv[3:]
    if command == "segment":
        return segment(rest)
    if command == "train":
        emit(event="progress", stage="epoch", fraction=1.0, message="epoch 1/1")
        emit(event="done", message="trained", data={"outputs": {"model": "/tmp/model"}})
        return 0
    print(f"fake_cli: unknown command {command}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
