"""``segdeep train CONFIG.yaml [key.sub=value ...] [--resume] [--progress json]``.

Also ``--check`` (validate the config and the dataset, then stop) and ``--fingerprint`` (print the
dataset fingerprint and the proposed spacing / patch size / batch size). Works under ``torchrun``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from SegDeepLib.progress import JsonLinesReporter, ProgressEvent, TextReporter


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train or fine-tune a model from a YAML config",
                            description="Train a model from a YAML config; overrides as key.sub=value.")
    parser.add_argument("config", help="YAML config (see configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. optimizer.lr=1e-3 training.epochs=5")
    parser.add_argument("--resume", action="store_true", help="continue from output_dir/checkpoints/last.pt")
    parser.add_argument("--check", action="store_true", help="validate config and data, then stop")
    parser.add_argument("--fingerprint", action="store_true",
                        help="print the dataset fingerprint and proposed plan (JSON), then stop")
    parser.add_argument("--memory-gb", type=float, default=None, help="memory budget for --fingerprint")
    parser.add_argument("--memory-limit", type=float, default=None, metavar="GB",
                        help="memory budget per case for --check (default: $SEGDEEP_MEMORY_LIMIT_GB or 80%% of the free RAM)")
    parser.add_argument("--progress", choices=["text", "json"], default="text",
                        help="progress output: text (stderr) or json (JSON lines on stdout)")
    parser.set_defaults(func=run)


def _header(path: Path) -> Any:
    """Size/spacing/direction of an image file from its header (no voxels), after the
    completeness check; a folder (DICOM series) is read fully with its slice checks."""
    import SimpleITK as sitk

    from SegDeepLib.errors import SegDeepError
    from SegDeepLib.io import read_image
    from SegDeepLib.io.image import _first_line
    from SegDeepLib.io.integrity import check_complete

    if path.is_dir() or path.name.lower().endswith(".seg.nrrd"):
        return read_image(path)
    if not path.exists():
        raise SegDeepError(f"{path}: no such file")
    check_complete(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise SegDeepError(f"{path}: not a readable image ({_first_line(exc)})") from None
    return reader


def check_case_files(setup: Any, memory_limit: float | None = None) -> None:
    """Read every header of every case: complete files, 3D, label on the image grid, and a
    network grid within the memory budget (what ``segment`` checks before it starts)."""
    import numpy as np

    from SegDeepLib.errors import SegDeepError
    from SegDeepLib.preprocessing.guard import ENV_LIMIT, GB, estimate_memory, memory_budget

    budget = memory_budget(memory_limit)
    classes = len(setup.mapping.names) + 1
    for case in setup.dataset.cases:
        files = [Path(p) for p in case.images] + ([Path(case.label)] if case.label else [])
        headers = [(path, _header(path)) for path in files]
        for path, info in headers:
            if info.GetDimension() != 3 and not (info.GetDimension() == 4 and info.GetSize()[3] == 1):
                raise SegDeepError(f"{path}: a 3D volume is needed, this image is {info.GetDimension()}D "
                                   f"with size {tuple(info.GetSize())}")
        first_path, first = headers[0]
        for path, info in headers[1:]:
            if path.name.lower().endswith(".seg.nrrd"):
                continue  # placed on the image grid by name when read
            same = (tuple(info.GetSize())[:3] == tuple(first.GetSize())[:3]
                    and np.allclose(info.GetSpacing()[:3], first.GetSpacing()[:3], atol=1e-4)
                    and np.allclose(info.GetOrigin()[:3], first.GetOrigin()[:3], atol=1e-3))
            if not same:
                raise SegDeepError(f"{path}: not on the grid of {first_path.name} (size {tuple(info.GetSize())} vs "
                                   f"{tuple(first.GetSize())}, spacing or origin differ)")
        size, spacing = tuple(first.GetSize())[:3], tuple(first.GetSpacing())[:3]
        direction = tuple(np.array(first.GetDirection()).reshape(first.GetDimension(), -1)[:3, :3].ravel())
        needed = estimate_memory(size, spacing, direction, [setup.spec], classes).bytes
        if needed > budget:
            raise SegDeepError(f"{first_path}: preprocessing needs about {needed / GB:.3g} GB, over the budget of "
                               f"{budget / GB:.3g} GB (size {size} at {spacing} mm); check the spacing in the "
                               f"header, or raise --memory-limit / {ENV_LIMIT}")


def run(args: argparse.Namespace) -> int:
    from SegDeepLib.training.config import load_config

    config = load_config(args.config, args.overrides)
    if args.check:
        from SegDeepLib.training.setup import build_network, model_config, prepare_data

        setup = prepare_data(config)
        build_network(model_config(config, setup), config.sampling.mode)
        check_case_files(setup, args.memory_limit)
        print(f"config OK: {len(setup.train_ids)} training / {len(setup.val_ids)} validation cases, "
              f"classes {list(setup.mapping.names)}")
        return 0
    if args.fingerprint:
        from SegDeepLib.data.datasets import load_dataset
        from SegDeepLib.data.fingerprint import compute_fingerprint, propose_plan

        fingerprint = compute_fingerprint(load_dataset(config.data.root, config.data.format))
        plan = propose_plan(fingerprint, memory_gb=args.memory_gb)
        print(json.dumps({"fingerprint": fingerprint, "plan": plan}, indent=2))
        return 0
    from SegDeepLib.training import train

    reporter = JsonLinesReporter() if args.progress == "json" else TextReporter()
    folder = train(config, resume=args.resume, progress=reporter)
    if args.progress == "json":
        reporter(ProgressEvent(event="done", message="training finished", data={"outputs": {"model": str(folder)}}))
    else:
        print(f"model folder: {folder}")
    return 0
