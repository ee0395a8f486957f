"""``segdeep segment INPUT -o OUTPUT``: segment a volume (file or DICOM folder) with a catalogue model."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from SegDeepLib.errors import SegDeepError
from SegDeepLib.progress import JsonLinesReporter, ProgressCallback, ProgressEvent, TextReporter

SEG_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha")
DICOM_SEG_SUFFIX = ".dcm"  # DICOM SEG (SegDeepLib.io.dicom_seg): only for DICOM series inputs
# CRF parameters a user may override (``--crf-param NAME=VALUE``): name -> (type, smallest value,
# smallest value allowed itself); the same names as ``inference.crf.params`` and ``crf_refine``.
CRF_PARAMS: dict[str, tuple[type, float, bool]] = {
    "theta_alpha": (float, 0.0, False),
    "theta_beta": (float, 0.0, False),
    "theta_gamma": (float, 0.0, False),
    "w1": (float, 0.0, True),
    "w2": (float, 0.0, True),
    "num_iterations": (int, 0, True),
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
    parser.set_defaults(func=run)


def _organs(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def _crf_value(name: str, text: str) -> float | int:
    kind, low, inclusive = CRF_PARAMS[name]
    try:
        value = kind(text)
        ok = math.isfinite(value) and (value >= low if inclusive else value > low)
    except (ValueError, OverflowError):
        ok = False
    if not ok:
        need = f"{'an integer' if kind is int else 'a number'} {'>=' if inclusive else '>'} {low:g}"
        raise SegDeepError(f"--crf-param {name}={text}: {name} must be {need}")
    return value


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


def with_crf_params(spec: dict[str, Any], params: dict[str, float | int]) -> dict[str, Any]:
    """A copy of a model spec whose ``inference.crf.params`` carry ``params`` over the model's."""
    inference = dict(spec.get("inference") or {})
    crf = dict(inference.get("crf") or {})
    crf["params"] = {**(crf.get("params") or {}), **params}
    inference["crf"] = crf
    return {**spec, "inference": inference}


def _check_output(path: Path, overwrite: bool, what: str = "output") -> None:
    suffixes = SEG_SUFFIXES + ((DICOM_SEG_SUFFIX,) if what == "output" else ())
    if not path.name.lower().endswith(suffixes):
        raise SegDeepError(f"{path}: unsupported {what} format; use one of {', '.join(suffixes)}")
    if path.exists() and not overwrite:
        raise SegDeepError(f"{path}: already exists; pass --overwrite to replace it")
    if not path.parent.exists():
        raise SegDeepError(f"{path.parent}: output folder does not exist; create it first")


def reporter(mode: str) -> ProgressCallback | None:
    if mode == "json":
        return JsonLinesReporter()
    if mode == "text":
        return TextReporter()
    return None


def write_probabilities(probs: np.ndarray, reference: Any, path: Path, overwrite: bool) -> Path:
    """``(K, k, j, i)`` probabilities as ``.npy`` or as a vector image on the reference grid."""
    from SegDeepLib.io import write_image

    if path.suffix == ".npy":
        if path.exists() and not overwrite:
            raise SegDeepError(f"{path}: already exists; pass --overwrite to replace it")
        np.save(path, probs.astype(np.float32))
        return path
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(probs, 0, -1)), isVector=True)
    image.CopyInformation(reference)
    return write_image(image, path, overwrite=overwrite)


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
    from SegDeepLib.io import read_image
    from SegDeepLib.io.dicom_seg import require_dicom_source

    output = Path(args.output)
    _check_output(output, args.overwrite)
    require_dicom_source(args.input, output)
    probs_path = Path(args.probabilities) if args.probabilities else None
    if probs_path is not None and probs_path.suffix != ".npy":
        _check_output(probs_path, args.overwrite, "probabilities")
    params = crf_params(args.crf_param)
    if params and args.crf is False:
        raise SegDeepError("--crf-param has no effect with --no-crf; drop one of them")
    image = read_image(args.input, series_uid=args.series_uid)
    predictor = Predictor.load(args.model)
    if params:
        predictor.spec = with_crf_params(predictor.spec, params)
    result = predictor.predict(
        image,
        organs=_organs(args.organs),
        device=args.device,
        crf=args.crf,
        tta=args.tta,
        fast=args.fast,
        probabilities=probs_path is not None,
        progress=progress,
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
