"""``segdeep segment INPUT -o OUTPUT``: segment a volume (file or DICOM folder) with a catalogue model."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from SegDeepLib.cli.checks import check_input
from SegDeepLib.core.crf_params import BY_NAME as CRF_BY_NAME
from SegDeepLib.core.crf_params import PARAMETERS as CRF_TABLE
from SegDeepLib.errors import SegDeepError
from SegDeepLib.io.suffixes import DICOM_SEG_SUFFIX, PROBABILITY_SUFFIXES
from SegDeepLib.io.suffixes import LABEL_MAP_SUFFIXES as SEG_SUFFIXES
from SegDeepLib.progress import JsonLinesReporter, ProgressCallback, ProgressEvent, TextReporter

# CRF parameters a user may override (``--crf-param NAME=VALUE``): name -> (type, smallest value,
# smallest value allowed itself); read from the one table (``resources/crf/parameters.json``).
CRF_PARAMS: dict[str, tuple[type, float, bool]] = {
    p.name: (p.kind, p.minimum, p.inclusive) for p in CRF_TABLE
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "segment",
        help="segment organs in a CT/MR volume",
        description="Segment INPUT (a volume file or a DICOM folder) and write OUTPUT (.seg.nrrd with "
        "names, colours and terminology, a label-map .nii.gz/.nrrd, or for a DICOM folder a DICOM SEG "
        ".dcm that references the series) on the input's grid.",
    )
    parser.add_argument("input", help="volume file (.nii.gz, .nrrd, .mha...) or DICOM folder")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="output .seg.nrrd, .nii.gz or .dcm (DICOM SEG; needs a DICOM folder INPUT)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="catalogue id or model folder (default: the catalogue's default)",
    )
    parser.add_argument(
        "--organs", nargs="+", default=None, help="organs to keep (names; spaces or commas)"
    )
    parser.add_argument("--device", default="auto", help="auto (GPU when usable), cpu or cuda")
    parser.add_argument(
        "--crf",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="CRF post-processing (default: the model's recommendation)",
    )
    parser.add_argument(
        "--crf-param",
        action="append",
        default=None,
        metavar="NAME=VALUE",
        help="override one of the model's CRF parameters (repeatable): "
        f"{', '.join(CRF_PARAMS)}; used when the CRF runs",
    )
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="flip test-time augmentation (default: the model's recommendation)",
    )
    parser.add_argument(
        "--fast", action="store_true", help="faster, lower-resolution settings of the model"
    )
    parser.add_argument(
        "--progress",
        choices=("text", "json", "none"),
        default="text",
        help="progress on stderr (text), JSON lines on stdout (json) or none",
    )
    parser.add_argument(
        "--probabilities",
        default=None,
        metavar="FILE",
        help="also write class probabilities: .npy (K, k, j, i) or a vector image (.nii.gz, .nrrd)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument(
        "--series-uid", default=None, help="DICOM series to read when INPUT holds several"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's)"
    )
    parser.add_argument(
        "--allow-gaps",
        action="store_true",
        help="read a DICOM series with unreadable or missing slices anyway (warning): a missing "
        "slice is interpolated from its neighbours, an unreadable end slice is left out",
    )
    parser.add_argument(
        "--memory-limit",
        type=float,
        default=None,
        metavar="GB",
        help="memory budget checked before any work "
        "(default: $SEGDEEP_MEMORY_LIMIT_GB or 80%% of the available RAM)",
    )
    parser.set_defaults(func=run)


def _organs(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def _crf_value(name: str, text: str) -> float | int:
    return CRF_BY_NAME[name].check(text, f"--crf-param {name}={text}")


def crf_params(values: list[str] | None) -> dict[str, float | int]:
    """``["theta_alpha=5", ...]`` -> ``{"theta_alpha": 5.0, ...}``, checked (clear errors)."""
    params: dict[str, float | int] = {}
    for item in values or []:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SegDeepError(f"--crf-param {item!r}: use NAME=VALUE, e.g. theta_alpha=5")
        if name not in CRF_PARAMS:
            raise SegDeepError(
                f"--crf-param {name}: unknown CRF parameter; use one of {', '.join(CRF_PARAMS)}"
            )
        params[name] = _crf_value(name, text.strip())
    return params


def _check_output(
    path: Path,
    overwrite: bool,
    what: str = "output",
    inputs: tuple[str, ...] = (),
    suffixes: tuple[str, ...] = SEG_SUFFIXES,
) -> None:
    from SegDeepLib.io.atomic import check_output_path
    from SegDeepLib.io.suffixes import require_suffix

    require_suffix(path, suffixes, what)
    check_output_path(path, overwrite, inputs)


def reporter(mode: str) -> ProgressCallback | None:
    if mode == "json":
        return JsonLinesReporter()
    if mode == "text":
        return TextReporter()
    return None


def write_labelmap(
    result: Any, output: Path, args: argparse.Namespace, spec: dict[str, Any]
) -> Path:
    """The label map as .seg.nrrd/label image, or as a DICOM SEG referencing the input series."""
    from SegDeepLib.io import write_segmentation
    from SegDeepLib.io.dicom_seg import (
        Algorithm,
        is_dicom_seg_path,
        read_series_headers,
        write_dicom_seg,
    )

    if not is_dicom_seg_path(output):
        return write_segmentation(result.labelmap, output, result.table, args.overwrite)
    algorithm = Algorithm(
        f"SegDeep {spec.get('id', 'model')}", str(spec.get("version", "")) or "unknown"
    )
    source = read_series_headers(args.input, args.series_uid)
    return write_dicom_seg(result.labelmap, output, result.table, source, algorithm, args.overwrite)


def segment_file(args: argparse.Namespace, progress: ProgressCallback | None) -> dict[str, str]:
    """Read, predict and write; returns the written paths."""
    from SegDeepLib.inference import Predictor
    from SegDeepLib.io import read_image, write_probabilities
    from SegDeepLib.io.dicom_seg import require_dicom_source

    output = Path(args.output)
    _check_output(
        output, args.overwrite, inputs=(args.input,), suffixes=SEG_SUFFIXES + (DICOM_SEG_SUFFIX,)
    )
    require_dicom_source(args.input, output)
    probs_path = Path(args.probabilities) if args.probabilities else None
    if probs_path is not None:
        _check_output(
            probs_path, args.overwrite, "probabilities", (args.input, args.output), PROBABILITY_SUFFIXES
        )
    params = crf_params(args.crf_param)
    if params and args.crf is False:
        raise SegDeepError("--crf-param has no effect with --no-crf; drop one of them")
    image = read_image(args.input, series_uid=args.series_uid, allow_gaps=args.allow_gaps)
    predictor = Predictor.load(args.model)
    image = check_input(image, predictor, args, progress)
    result = predictor.predict(
        image,
        organs=_organs(args.organs),
        device=args.device,
        crf=args.crf,
        tta=args.tta,
        fast=args.fast,
        probabilities=probs_path is not None,
        progress=progress,
        crf_params=params,
    )
    if progress is not None:
        progress(ProgressEvent(stage="write", fraction=0.0, message=f"writing {output}"))
    outputs = {"segmentation": str(write_labelmap(result, output, args, predictor.spec))}
    if probs_path is not None:
        outputs["probabilities"] = str(
            write_probabilities(result.probabilities, result.labelmap, probs_path, args.overwrite)
        )
    if progress is not None:
        progress(ProgressEvent(stage="write", fraction=1.0, message="written"))
    outputs["device"] = result.device
    return outputs


def run(args: argparse.Namespace) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(max(1, args.threads))
    progress = reporter(args.progress)
    start = time.perf_counter()
    try:
        outputs = segment_file(args, progress)
    except SegDeepError as exc:
        if args.progress == "json":
            progress(ProgressEvent(event="error", message=str(exc)))
        raise
    seconds = time.perf_counter() - start
    device = outputs.pop("device")
    message = f"wrote {outputs['segmentation']} in {seconds:.1f} s on {device}"
    if args.progress == "json":
        progress(
            ProgressEvent(
                event="done", message=message, data={"outputs": outputs, "seconds": seconds}
            )
        )
    else:
        print(message)
    return 0
